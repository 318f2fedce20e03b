//! A transport wrapper that delays every frame it sends: a simulated slow link (its
//! latency, optionally its bandwidth), for tests and demonstrations (deterministic
//! under `tokio::time::pause`).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::time::{Instant, Sleep};

/// The send buffer of a link with a bandwidth, unless set (a typical socket's).
const DEFAULT_BUFFER: usize = 64 * 1024;

/// How long a frame travels once sent.
type Latency = Box<dyn FnMut(&Bytes) -> Duration + Send>;

/// A [`Transport`](super::Transport) that holds each outgoing frame for a while
/// before passing it on; see [`delayed`] and [`delayed_by`].
pub struct Delayed<T> {
    inner: T,
    latency: Latency,
    /// Bytes per second the link carries, if limited.
    bandwidth: Option<f64>,
    /// When the link has finished sending what it was given (with a bandwidth).
    busy_until: Option<Instant>,
    /// Bytes the link takes before it has sent them (its send buffer), with a
    /// bandwidth: beyond it, `poll_ready` waits, as a socket's does.
    buffer: usize,
    /// The wait for room in the buffer.
    room: Option<Pin<Box<Sleep>>>,
    queue: VecDeque<(Instant, Bytes)>,
    /// Made on first use, inside the runtime.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<T: fmt::Debug> fmt::Debug for Delayed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delayed")
            .field("inner", &self.inner)
            .field("bandwidth", &self.bandwidth)
            .field("queued", &self.queue.len())
            .finish()
    }
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
    delayed_by(inner, move |_| delay)
}

/// Like [`delayed`], with each frame's latency chosen by `latency` (for jitter).
/// Frames still arrive in the order they were sent.
pub fn delayed_by<T>(
    inner: T,
    latency: impl FnMut(&Bytes) -> Duration + Send + 'static,
) -> Delayed<T> {
    Delayed {
        inner,
        latency: Box::new(latency),
        bandwidth: None,
        busy_until: None,
        buffer: DEFAULT_BUFFER,
        room: None,
        queue: VecDeque::new(),
        sleep: None,
    }
}

impl<T> Delayed<T> {
    /// Limits the link to `bytes_per_second`: each frame first waits for the ones
    /// before it to be sent, then takes its own size divided by the bandwidth.
    ///
    /// Like a socket, the link then pushes back: it takes new frames only while
    /// less than its [`buffer`](Self::buffer) (64 KiB unless set) waits to be sent,
    /// so a sender faster than the link sees `poll_ready` wait instead of queueing
    /// without bound.
    pub fn bandwidth(mut self, bytes_per_second: f64) -> Self {
        self.bandwidth = Some(bytes_per_second);
        self
    }

    /// Sets how many bytes a link with a bandwidth takes before it has sent them
    /// (its send buffer; at least one byte, and one frame is always taken).
    pub fn buffer(mut self, bytes: usize) -> Self {
        self.buffer = bytes.max(1);
        self
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
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

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let (Some(rate), Some(busy)) = (this.bandwidth, this.busy_until) else {
            return Poll::Ready(Ok(()));
        };
        // What is still to send drains at `rate`: there is room once less than
        // `buffer` bytes of it are left.
        let room_at = busy
            .checked_sub(Duration::from_secs_f64(this.buffer as f64 / rate))
            .unwrap_or(busy);
        if room_at <= Instant::now() {
            this.room = None;
            return Poll::Ready(Ok(()));
        }
        let room = this
            .room
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(room_at)));
        room.as_mut().reset(room_at);
        ready!(room.as_mut().poll(cx));
        this.room = None;
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        let this = &mut *self;
        let now = Instant::now();
        let sent = match this.bandwidth {
            Some(rate) => {
                let start = this.busy_until.map_or(now, |busy| busy.max(now));
                let done = start + Duration::from_secs_f64(frame.len() as f64 / rate);
                this.busy_until = Some(done);
                done
            }
            None => now,
        };
        // Never ahead of an earlier frame: a link keeps order.
        let due = (sent + (this.latency)(&frame)).max(this.queue.back().map_or(now, |(at, _)| *at));
        this.queue.push_back((due, frame));
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
