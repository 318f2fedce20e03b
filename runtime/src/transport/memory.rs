//! An in-process transport: two tokio channels, no copying, no framing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;

/// One end of an in-memory transport made by [`memory()`].
///
/// Frames move through unbounded channels: the connection's own outbound queue limit
/// is what bounds memory, and both ends live in one trusted process.
#[derive(Debug)]
pub struct MemoryTransport {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    rx: mpsc::UnboundedReceiver<Bytes>,
}

/// Makes two connected in-memory transports.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (a, b) = farcall::transport::memory();
/// let server = farcall::Connection::builder().connect(a);
/// let client = farcall::Connection::builder().connect(b);
/// # drop((server, client));
/// # }
/// ```
pub fn memory() -> (MemoryTransport, MemoryTransport) {
    let (tx_a, rx_b) = mpsc::unbounded_channel();
    let (tx_b, rx_a) = mpsc::unbounded_channel();
    (
        MemoryTransport {
            tx: Some(tx_a),
            rx: rx_a,
        },
        MemoryTransport {
            tx: Some(tx_b),
            rx: rx_b,
        },
    )
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "in-memory peer is gone")
}

impl Stream for MemoryTransport {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

impl Sink<Bytes> for MemoryTransport {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx.send(frame).map_err(|_| closed()),
            None => Err(closed()),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Dropping the sender is what the peer sees as end of stream.
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}
