//! A transport wrapper that delays every frame it sends: a simulated slow link, for
//! tests and demonstrations of latency (deterministic under `tokio::time::pause`).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::time::{Instant, Sleep};

/// A [`Transport`](super::Transport) that holds each outgoing frame for a fixed delay
/// before passing it on; see [`delayed`].
#[derive(Debug)]
pub struct Delayed<T> {
    inner: T,
    delay: Duration,
    queue: VecDeque<(Instant, Bytes)>,
    /// Made on first use, inside the runtime.
    sleep: Option<Pin<Box<Sleep>>>,
}

/// Wraps `inner` so that every frame it sends arrives `delay` later (frames keep
/// their order and are not serialised behind each other: ten frames sent at once all
/// arrive `delay` later). Wrap both ends for a symmetric link.
///
/// ```
/// # use std::time::Duration;
/// let (a, b) = farcall::transport::memory();
/// let a = farcall::transport::delayed(a, Duration::from_millis(5));
/// let b = farcall::transport::delayed(b, Duration::from_millis(5));
/// # drop((a, b));
/// ```
pub fn delayed<T>(inner: T, delay: Duration) -> Delayed<T> {
    Delayed {
        inner,
        delay,
        queue: VecDeque::new(),
        sleep: None,
    }
}

impl<T: Stream + Unpin> Stream for Delayed<T> {
    type Item = T::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T: Sink<Bytes, Error = io::Error> + Unpin> Sink<Bytes> for Delayed<T> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        let due = Instant::now() + self.delay;
        self.queue.push_back((due, frame));
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while let Some(&(due, _)) = this.queue.front() {
            if due > Instant::now() {
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                sleep.as_mut().reset(due);
                ready!(sleep.as_mut().poll(cx));
            }
            ready!(Pin::new(&mut this.inner).poll_ready(cx))?;
            let (_, frame) = this.queue.pop_front().expect("front exists");
            Pin::new(&mut this.inner).start_send(frame)?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
