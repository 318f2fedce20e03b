//! Transports: anything that carries whole frames both ways.
//!
//! A [`Transport`] is a [`Stream`] of received frames plus a [`Sink`] of frames to
//! send. farcall ships these:
//! - [`memory()`]: an in-process pair, for tasks of one program and for tests;
//! - [`framed`]: length-delimited frames over any `AsyncRead + AsyncWrite` byte stream
//!   (TCP, Unix sockets, a child's stdio), with the frame limit checked before a frame
//!   is allocated;
//! - [`from_parts`]: a send half and a receive half of your own (a channel pair, a
//!   message port), like ioRPC's `pair({send, on})`;
//! - [`delayed`]: any of these with a fixed latency added, to see what pipelining
//!   saves (tests and demos);
//! - `websocket`: one frame per binary WebSocket message (feature `websocket`, on
//!   by default; see also `Builder::connect_websocket` and
//!   `Server::serve_websocket`).

use std::io;

use bytes::Bytes;
use futures_util::{Sink, Stream};

mod delay;
mod memory;
mod parts;
mod stream;
#[cfg(feature = "websocket")]
pub(crate) mod websocket;

pub use delay::{delayed, delayed_by, Delayed};
pub use memory::{memory, MemoryTransport};
pub use parts::{from_parts, Parts};
pub use stream::{framed, Framed};
/// The WebSocket library the `websocket` transport is built on, re-exported so your
/// version matches farcall's.
#[cfg(feature = "websocket")]
pub use tokio_tungstenite;
#[cfg(feature = "websocket")]
pub use websocket::{websocket, websocket_config, WebSocket};

/// A bidirectional carrier of frames; implemented for every type with the right
/// `Stream` and `Sink` impls.
///
/// The stream ends (`None`) when the peer closes; an `Err` from either half ends the
/// connection with that error as its reason.
pub trait Transport:
    Stream<Item = io::Result<Bytes>> + Sink<Bytes, Error = io::Error> + Send + Unpin + 'static
{
}

impl<T> Transport for T where
    T: Stream<Item = io::Result<Bytes>> + Sink<Bytes, Error = io::Error> + Send + Unpin + 'static
{
}
