//! A transport made of a user's send half and receive half.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};

/// A [`Transport`](super::Transport) built by [`from_parts`].
#[derive(Debug)]
pub struct Parts<Si, St> {
    sink: Si,
    stream: St,
}

/// Joins a sink of outgoing frames and a stream of incoming frames into a transport,
/// for carriers farcall does not know (message ports, a custom socket, a test harness).
///
/// The stream ending means the peer closed; a sink error ends the connection.
///
/// ```
/// use futures_util::SinkExt;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (to_b, from_a) = futures_channel_like();
/// let (to_a, from_b) = futures_channel_like();
/// let a = farcall::transport::from_parts(to_b, from_b);
/// let b = farcall::transport::from_parts(to_a, from_a);
/// let _a = farcall::Connection::builder().connect(a);
/// let _b = farcall::Connection::builder().connect(b);
/// # }
/// # fn futures_channel_like() -> (
/// #     impl futures_util::Sink<bytes::Bytes, Error = std::io::Error> + Send + Unpin + 'static,
/// #     impl futures_util::Stream<Item = bytes::Bytes> + Send + Unpin + 'static,
/// # ) {
/// #     let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
/// #     let sink = futures_util::sink::unfold(tx, |tx, f: bytes::Bytes| async move {
/// #         tx.send(f).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
/// #         Ok::<_, std::io::Error>(tx)
/// #     });
/// #     let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
/// #     (Box::pin(sink), Box::pin(stream))
/// # }
/// ```
pub fn from_parts<Si, St>(sink: Si, stream: St) -> Parts<Si, St>
where
    Si: Sink<Bytes> + Send + Unpin + 'static,
    Si::Error: Into<io::Error>,
    St: Stream<Item = Bytes> + Send + Unpin + 'static,
{
    Parts { sink, stream }
}

impl<Si: Unpin, St: Stream<Item = Bytes> + Unpin> Stream for Parts<Si, St> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx).map(|f| f.map(Ok))
    }
}

impl<Si, St> Sink<Bytes> for Parts<Si, St>
where
    Si: Sink<Bytes> + Unpin,
    Si::Error: Into<io::Error>,
    St: Unpin,
{
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sink).poll_ready(cx).map_err(Into::into)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        Pin::new(&mut self.sink)
            .start_send(frame)
            .map_err(Into::into)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sink).poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sink).poll_close(cx).map_err(Into::into)
    }
}
