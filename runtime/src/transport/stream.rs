//! Length-delimited frames over a byte stream (TCP, Unix sockets, pipes).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{self, LengthDelimitedCodec, LengthDelimitedCodecError};

/// A [`Transport`](super::Transport) over a byte stream: each frame is a 4-byte
/// big-endian length followed by that many bytes.
#[derive(Debug)]
pub struct Framed<S> {
    inner: codec::Framed<S, LengthDelimitedCodec>,
    max_frame_size: usize,
}

/// Wraps a byte stream into a frame transport whose incoming frames may be at most
/// `max_frame_size` bytes. The length prefix is checked before any buffer is grown for
/// the frame, so a peer cannot make us allocate by announcing a huge frame.
pub fn framed<S>(io: S, max_frame_size: usize) -> Framed<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_size)
        .new_codec();
    Framed {
        inner: codec::Framed::new(io, codec),
        max_frame_size,
    }
}

impl<S> Framed<S> {
    /// The underlying byte stream.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

impl<S: AsyncRead + Unpin> Stream for Framed<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let limit = self.max_frame_size;
        Pin::new(&mut self.inner).poll_next(cx).map(|frame| {
            frame.map(|r| {
                r.map(|f| f.freeze()).map_err(|e| {
                    if e.get_ref()
                        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
                    {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("incoming frame exceeds max_frame_size ({limit} bytes)"),
                        )
                    } else {
                        e
                    }
                })
            })
        })
    }
}

impl<S: AsyncWrite + Unpin> Sink<Bytes> for Framed<S> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Bytes>::poll_ready(Pin::new(&mut self.inner), cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        Pin::new(&mut self.inner).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Bytes>::poll_flush(Pin::new(&mut self.inner), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Bytes>::poll_close(Pin::new(&mut self.inner), cx)
    }
}
