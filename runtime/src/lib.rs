//! Typed remote objects for Rust.
//!
//! Put [`#[farcall::remote]`](remote) on a trait, implement the trait on the serving
//! side, connect two endpoints over any [transport], and call the generated client as
//! if the object were local.
//!
//! ```
//! use farcall::{CallError, Connection, RpcError};
//!
//! #[farcall::remote]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: u64, b: u64) -> u64;
//!     /// Divides, refusing zero with an application error.
//!     async fn div(&self, a: u64, b: u64) -> Result<u64, String>;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: u64, b: u64) -> u64 {
//!         a + b
//!     }
//!     async fn div(&self, a: u64, b: u64) -> Result<u64, String> {
//!         a.checked_div(b).ok_or_else(|| "division by zero".to_string())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), RpcError> {
//! let (a, b) = farcall::transport::memory();
//! let _server = Connection::builder().root(CalculatorServer::new(Calc)).connect(a);
//! let calc: CalculatorClient = Connection::builder().connect(b).root().await?;
//!
//! assert_eq!(calc.add(2, 3).await?, 5);
//! assert_eq!(calc.div(7, 0).await, Err(CallError::App("division by zero".into())));
//! # Ok(())
//! # }
//! ```
//!
//! # What the macro generates
//!
//! For `trait Calculator`, `#[farcall::remote]` keeps the trait (each `async fn`
//! becomes a `fn` returning `impl Future + Send`, which you implement with
//! `async fn` as usual, and the trait gains `Send + Sync + 'static` as supertraits)
//! and adds:
//! - `CalculatorClient`: a cheap-to-clone typed reference to a remote `Calculator`. Each
//!   method sends its call at once and returns a [`Promise<T>`] to `.await` for
//!   `Result<T, RpcError>`, or a [`TryPromise<T, E>`] giving `Result<T, CallError<E>>`
//!   when the method returns `Result<T, E>` (any return type written `Result<T, E>`
//!   with two arguments is treated as an application result). When `T` is a client
//!   type the promise derefs to it, so calls on the result are pipelined. Doc comments
//!   carry over. `CalculatorClient::from_local(imp)` wraps a local implementation.
//! - `CalculatorServer<T>`: wraps any `T: Calculator` into a root you pass to
//!   [`Builder::root`].
//!
//! A method marked `#[farcall(oneway)]` must return nothing; its client method sends
//! the call without waiting and returns `Result<(), RpcError>` at once (the error only
//! if it could not be sent). One-way calls are delivered in order with the other calls
//! on the same reference. A method marked `#[farcall(no_cancel)]` runs to completion
//! even when its caller gives up.
//!
//! # Beyond plain calls
//!
//! - [`Callback`] closures and generated clients travel by reference anywhere inside
//!   arguments and results; they are released when the last handle is dropped, keep
//!   their identity, and come home as the original object. [`Listeners`] keeps a set
//!   of callbacks to notify.
//! - [`Stream`]s of typed items and [`ByteStream`]s travel the same way, in either
//!   direction (both at once too), each with its own flow-control window: a slow
//!   consumer slows its producer and bounds memory without holding up other calls.
//!   Byte streams bridge to `AsyncRead` and `AsyncWrite`.
//! - Calls on a [`Promise`] of a client are pipelined: a chain of dependent calls
//!   costs one round trip.
//! - [`Config`] bounds every resource a peer can make us hold, and sets time limits;
//!   [`Connection::stats`] shows the tables.
//! - JavaScript clients of Cap'n Web (npm `capnweb`) reach any trait over WebSocket
//!   and HTTP batch (feature `capnweb`; see the `capnweb` module), with TypeScript
//!   declarations of the traits (feature `typescript`).
//! - Transports: in-memory, TCP, Unix sockets, WebSocket, worker processes
//!   ([`process`]), or any sink and stream of frames ([`transport`]); [`Server`]
//!   serves many peers.
//!
//! # Guarantees
//!
//! - Every call ends exactly once: its value, an application error, or an
//!   [`RpcError`]. When the transport closes every pending call fails with
//!   [`RpcError::Disconnected`] carrying the reason.
//! - Calls on one reference start in the order they were made; handlers then run
//!   concurrently, so a slow call does not hold up others.
//! - A panicking handler fails its caller with [`RpcError::RemotePanic`]; the
//!   connection keeps serving.
//! - A connection's opening exchange (protocol version, codec, frame limit) must
//!   complete within [`Config::handshake_timeout`], and a graceful close waits for
//!   running calls at most [`Config::drain_timeout`]: no peer and no handler can
//!   keep a connection, or a server's shutdown, waiting forever.
//!
//! # Layout
//!
//! ```text
//!   server, process, listeners, callback   serving many peers, worker processes,
//!        |                                 typed closures
//!   capnweb (+ translate, transport, ...)  Cap'n Web peers: a translating transport
//!        |                                 under an ordinary connection
//!   stream (+ source, sink, window, ...)   typed and byte streams with credit, built
//!        |                                 on capabilities and one-way calls
//!   client (+ call.rs)                     typed clients, the calls a Client makes,
//!        |                                 the root, the Call/Promise future
//!   shape                                  reply shapes for both sides: encoding a
//!        |                                 handler's value, decoding a reply
//!   cap (+ client.rs, serve.rs)  <->  connection (+ config, command, question,
//!        |                            context, actor/)
//!        |    references, local objects,      the handle, its settings, the actor
//!        |    Dispatch/Incoming/Reply         owning the transport and the tables
//!   transport, wire, codec, error, interface
//!                                         frames, messages and ids, encodings,
//!                                         errors, static trait descriptions
//! ```
//!
//! `capnweb`'s translator and transport name only `wire`, `codec` and `interface`
//! (frames, the Cap'n Web payload codec, method names); its serving functions use
//! `connection`'s `Builder`, and `Server::serve_capnweb` calls it. Each module names
//! only modules below it, except the one real cycle between
//! `cap` and `connection`: an imported capability holds the connection it came on,
//! and the connection's tables and commands hold capabilities (and a local
//! capability is a `Dispatch` object whose calls and replies carry capabilities, so
//! the serving interface lives with them, in `cap`). Code that needs a higher
//! layer's concept is written in that layer: `Connection::root`, typed by
//! `RemoteClient`, is implemented in `client`; `Incoming::handle`, typed by the reply
//! shapes, in `shape`. Inside the actor, the tables are types of their own
//! (`Questions`, `Answers`, `Exports`, `Outbound`) with their own tests, and a
//! `Phase` says where the connection is in its life.

// Lets the crate's own tests use `#[farcall::remote]`, whose expansion names
// `::farcall`.
#[cfg(test)]
extern crate self as farcall;

mod callback;
mod cap;
#[cfg(feature = "capnweb")]
pub mod capnweb;
mod client;
pub mod codec;
mod connection;
mod error;
mod interface;
mod listeners;
pub mod process;
mod server;
mod shape;
mod stream;
pub mod transport;
mod wire;

pub use callback::Callback;
pub use cap::Client;
pub use client::{Call, Promise, RemoteClient, TryPromise};
pub use codec::AnyCodec;
pub use connection::{Builder, CallContext, Config, Connection, Stats};
pub use error::{CallError, CloseReason, RpcError};
pub use farcall_macros::remote;
pub use interface::Interface;
pub use listeners::Listeners;
pub use server::{Listener, Server};
pub use stream::{ByteStream, ByteWriter, Stream, StreamClosed, StreamSender};
pub use wire::MAX_FRAME_CEILING;

/// What a generated client's TypeScript declarations expand to without the
/// `typescript` feature: nothing (see `capnweb::typescript` for the feature's).
#[cfg(not(feature = "typescript"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __typescript_client {
    ($($tokens:tt)*) => {};
}

/// The README's code blocks, compiled and run as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// What generated code uses. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::cap::{Client, Dispatch, Handler, Incoming, Reply};
    pub use crate::client::{Call, Promise, RemoteClient, TryPromise};
    pub use crate::error::{CallError, RpcError};
    pub use crate::interface::{Interface, Method};
    pub use crate::shape::{Cancel, Fallible, Plain, Shape};
    pub use core::clone::Clone;
    pub use core::cmp::{Eq, PartialEq};
    pub use core::fmt;
    pub use core::future::Future;
    pub use core::hash::{Hash, Hasher};
    pub use core::marker::{Send, Sync};
    pub use core::result::Result;
    pub use serde;
    pub use std::sync::Arc;

    /// A type that can be an argument or a result of a remote method. The generated
    /// code asserts it for each such type with [`assert_travels`], at the type's span,
    /// so a missing derive is reported on the user's type in these words instead of
    /// on the attribute in terms of argument tuples and runtime functions.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel in a farcall call: it must implement `serde::Serialize` and `serde::Deserialize`",
        label = "sent over the connection",
        note = "add `#[derive(Serialize, Deserialize)]` to its definition and to every type inside it; for a type from another crate, enable that crate's `serde` feature"
    )]
    pub trait Travels: serde::Serialize + serde::de::DeserializeOwned {}

    impl<T: serde::Serialize + serde::de::DeserializeOwned> Travels for T {}

    /// Compiles only when `T` can travel: generated code calls it in a `const` item,
    /// once for each argument and result type of a remote trait.
    pub const fn assert_travels<T: Travels>() {}

    /// An application error, to be described in words for the reasons of calls
    /// pipelined on its call (`PromiseFailed`). Generated code calls
    /// `(&&&ErrorText(e)).error_text()` with the three traits below in scope: method
    /// resolution picks `Display` when the type has it, else `Debug`, else its type
    /// name, without requiring either of the user's error type.
    pub struct ErrorText<'a, T>(pub &'a T);

    /// Describes with `Display` (see [`ErrorText`]).
    pub trait ViaDisplay {
        /// The error in words.
        fn error_text(&self) -> String;
    }

    impl<T: fmt::Display> ViaDisplay for &&ErrorText<'_, T> {
        fn error_text(&self) -> String {
            self.0.to_string()
        }
    }

    /// Describes with `Debug` (see [`ErrorText`]).
    pub trait ViaDebug {
        /// The error in words.
        fn error_text(&self) -> String;
    }

    impl<T: fmt::Debug> ViaDebug for &ErrorText<'_, T> {
        fn error_text(&self) -> String {
            format!("{:?}", self.0)
        }
    }

    /// Describes by type name (see [`ErrorText`]).
    pub trait ViaTypeName {
        /// The error in words.
        fn error_text(&self) -> String;
    }

    impl<T> ViaTypeName for ErrorText<'_, T> {
        fn error_text(&self) -> String {
            format!("a `{}`", std::any::type_name::<T>())
        }
    }

    /// The text of a plain method's value: none.
    pub fn no_error_text<V>(_: &V) -> Option<String> {
        None
    }

    /// Serializes a client as a capability of the message being encoded.
    pub fn serialize_client<S: serde::Serializer>(
        client: &Client,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        client.serialize(serializer)
    }

    /// Deserializes a capability of the message being decoded.
    pub fn deserialize_client<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Client, D::Error> {
        Client::deserialize(deserializer)
    }

    /// What the `fuzz/` crate's targets use: the wire types (deriving
    /// `arbitrary::Arbitrary`) and frame helpers. Built only with `--cfg fuzzing`,
    /// which cargo-fuzz passes; not for any other use.
    #[cfg(fuzzing)]
    pub use crate::wire::fuzz;
}
