//! Streams: typed items ([`Stream`]) and bytes ([`ByteStream`]) as arguments and
//! results, with flow control per stream.
//!
//! A stream travels as a capability, built on the same machinery as
//! [`Callback`](crate::Callback). The side that makes a `Stream` from its items
//! wraps them in a local *source* object; what is sent is a reference to it. The
//! side that receives it, when first polled, makes a local *sink* object and calls
//! `start(sink, window)` on the source (one-way). The source then runs a pump task
//! that reads the items and sends them to the sink in batches (one-way calls on one
//! reference, so they arrive in order), never beyond the credit the consumer granted;
//! the consumer grants more (`credit(n)`, one-way) as it takes items, and the pump
//! ends with a final `end` message. See `window.rs` for how credit is counted and
//! how the window grows.
//!
//! Ends: dropping the consumer releases the source, which stops the pump and drops
//! the producer's items (a [`StreamSender`] then sees the stream closed); a sink that
//! is dropped before `end` arrived (its connection ended, or the producer vanished)
//! ends the stream with [`RpcError::Disconnected`].

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use std::collections::VecDeque;
use std::future::Future;

use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::{mpsc, Notify};

use crate::cap::{decode_message, Client, Dispatch, Handler, Incoming, Reply};
use crate::codec::{STREAM_NEWTYPE, WRITER_NEWTYPE};
use crate::connection::{Connection, Refusals, Shared};
use crate::error::{CloseReason, RpcError};
use crate::interface::{Interface, Method};

mod bytes;
pub(crate) mod cost;
mod sink;
mod source;
mod window;
mod writer;

pub use self::bytes::{ByteStream, ByteWriter};
use cost::cost_in;
use sink::SinkObject;
use source::{SourceObject, SourceState};
use window::Window;

/// The stream protocol's methods have ids of their own, which neither a
/// callback's call (1) nor a generated method (a hash with the low bits set) has,
/// nor a stream sender's `attach` (3): an object mistaken for a stream's source or
/// sink refuses these calls rather than running one of its own methods.
static SOURCE_METHODS: [Method; 2] = [
    Method {
        interface: "StreamSource",
        name: "start",
        id: 5,
    },
    Method {
        interface: "StreamSource",
        name: "credit",
        id: 6,
    },
];

static SOURCE: Interface = Interface {
    name: "StreamSource",
    fingerprint: 0,
    methods: &SOURCE_METHODS,
};

static SINK_METHODS: [Method; 2] = [
    Method {
        interface: "StreamSink",
        name: "items",
        id: 7,
    },
    Method {
        interface: "StreamSink",
        name: "end",
        id: 8,
    },
];

static SINK: Interface = Interface {
    name: "StreamSink",
    fingerprint: 0,
    methods: &SINK_METHODS,
};

/// Whether `method` is one of the stream protocol's own (a source's, a sink's or
/// a writer target's): never a method a peer's object is called by, by name.
#[cfg(feature = "capnweb")]
pub(crate) fn is_protocol_method(method: &'static Method) -> bool {
    [
        &SOURCE_METHODS[..],
        &SINK_METHODS[..],
        &writer::WRITER_METHODS[..],
    ]
    .iter()
    .any(|methods| methods.iter().any(|m| std::ptr::eq(m, method)))
}

const START: &Method = &SOURCE_METHODS[0];
const CREDIT: &Method = &SOURCE_METHODS[1];
const ITEMS: &Method = &SINK_METHODS[0];
const END: &Method = &SINK_METHODS[1];

/// The most a batch of items costs (it is split further if it would not fit the
/// connection's frames). An item that would take a batch over it waits for the
/// next.
const MAX_BATCH: u64 = 256 * 1024;

/// The window of a stream whose source is local (no connection to configure it).
const LOCAL_WINDOW: (usize, usize) = (64 * 1024, 4 << 20);

/// What the producer's items are, once adapted: an error ends the stream with its
/// text.
type Items<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, String>> + Send>>;

/// How a stream ended, as the producer's last message says.
#[derive(Debug, Serialize, Deserialize)]
enum End {
    /// Every item was sent.
    Done,
    /// The producer failed; the consumer gets [`RpcError::StreamFailed`].
    Failed(String),
    /// The producer's side refused to start it; the consumer gets
    /// [`RpcError::Overloaded`].
    Refused(String),
}

/// A stream of `T`s that can be passed to, or returned from, a remote method.
///
/// The receiving side reads it as a [`futures_util::Stream`] of
/// `Result<T, RpcError>`; the sending side makes one from any stream of `T`
/// ([`new`](Self::new)), of `Result<T, E>` ([`try_new`](Self::try_new)), from an
/// iterator ([`iter`](Self::iter)) or as a channel to push into
/// ([`channel`](Self::channel)).
///
/// Like a capability it may sit anywhere inside arguments and results (struct fields,
/// `Vec`, `Option`, maps) and can be passed on unread to a third party, which then
/// reads it from the original producer (through this side). It can be read once, and
/// sent only before it is first polled.
///
/// **Flow control.** Each stream has its own window of credit in bytes (the size of
/// its items in a fixed-width layout, whatever the codec): the producer sends only
/// what the consumer granted, and the consumer grants more as it takes items. A slow
/// consumer therefore slows its producer, and at most a window plus one item is held
/// for it, while the other calls and streams on the connection go on. The window
/// starts at [`Config::stream_window`](crate::Config::stream_window) and doubles, up
/// to [`Config::max_stream_window`](crate::Config::max_stream_window), whenever the
/// link rather than the consumer holds the stream back. (On a Cap'n Web session,
/// where the stream is a JavaScript `ReadableStream`, credit counts items: see
/// the `capnweb` module, feature `capnweb`.)
///
/// **Ends.** The stream ends (`None`) when the producer's items end. A producer error
/// (from [`try_new`](Self::try_new) or [`StreamSender::fail`]) ends it with
/// [`RpcError::StreamFailed`] carrying the error's text; for typed errors that do not
/// end the stream, make the items `Result<T, E>`. A consumer that drops the stream
/// stops the producer (its items are dropped). A connection that ends, or a producer
/// that can no longer be reached, ends it with [`RpcError::Disconnected`]. Starting
/// more than [`Config::max_open_streams`](crate::Config::max_open_streams) on one
/// connection fails with [`RpcError::Overloaded`].
///
/// ```
/// use farcall::{Connection, RpcError, Stream};
/// use futures_util::StreamExt;
///
/// #[farcall::remote]
/// pub trait Numbers {
///     /// The numbers from `from` to `to`.
///     async fn range(&self, from: u64, to: u64) -> Stream<u64>;
///     /// The sum of what the caller sends.
///     async fn sum(&self, numbers: Stream<u64>) -> Result<u64, String>;
/// }
/// struct N;
/// impl Numbers for N {
///     async fn range(&self, from: u64, to: u64) -> Stream<u64> {
///         Stream::iter(from..to)
///     }
///     async fn sum(&self, mut numbers: Stream<u64>) -> Result<u64, String> {
///         let mut sum = 0;
///         while let Some(n) = numbers.next().await {
///             sum += n.map_err(|e| e.to_string())?;
///         }
///         Ok(sum)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (a, b) = farcall::transport::memory();
/// # let _server = Connection::builder().root(NumbersServer::new(N)).connect(a);
/// # let numbers: NumbersClient = Connection::builder().connect(b).root().await?;
/// let got: Vec<u64> = numbers.range(1, 4).await?.map(Result::unwrap).collect().await;
/// assert_eq!(got, [1, 2, 3]);
///
/// let (tx, stream) = Stream::channel(16);
/// tokio::spawn(async move {
///     for n in 1..=10 {
///         tx.send(n).await.ok();
///     }
/// });
/// assert_eq!(numbers.sum(stream).await?, 55);
/// # Ok(()) }
/// ```
pub struct Stream<T> {
    /// The source, until the stream is started.
    source: Option<Client>,
    receiving: Option<Receiving<T>>,
    done: bool,
    _items: PhantomData<fn() -> T>,
}

/// A started stream's receiving half.
struct Receiving<T> {
    shared: Arc<SinkShared<T>>,
    /// Counts this stream among its connection's open streams while it runs.
    _open: Option<OpenStream>,
    /// Resolves when the source's connection ends. In a mutex only so the stream is
    /// `Sync`; it is reached through `get_mut`, without locking.
    closed: Option<Mutex<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

/// What the consumer and its sink object share.
struct SinkShared<T> {
    state: Mutex<SinkState<T>>,
    /// Where credit goes.
    source: Client,
}

struct SinkState<T> {
    items: VecDeque<(T, u64)>,
    end: Option<Result<(), RpcError>>,
    waker: Option<Waker>,
    window: Window,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T> Stream<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// A stream of `items`: read on this side by a task the consumer starts, as fast
    /// as the consumer's credit allows. A panic while producing ends the stream with
    /// [`RpcError::StreamFailed`].
    pub fn new<S>(items: S) -> Self
    where
        S: futures_util::Stream<Item = T> + Send + 'static,
    {
        Stream::from_items(Box::pin(items.map(Ok)))
    }

    /// A stream of the `Ok` values of `items`; the first `Err` ends it, and the
    /// consumer gets [`RpcError::StreamFailed`] with the error's `Display` text.
    pub fn try_new<S, E>(items: S) -> Self
    where
        S: futures_util::Stream<Item = Result<T, E>> + Send + 'static,
        E: fmt::Display,
    {
        Stream::from_items(Box::pin(items.map(|r| r.map_err(|e| e.to_string()))))
    }

    /// A stream of the items of an iterator.
    pub fn iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream::new(futures_util::stream::iter(items))
    }

    /// A stream fed through a channel holding up to `capacity` items (at least one):
    /// push items with [`StreamSender::send`], which waits while the channel is full
    /// (so the consumer's pace reaches the producer) and fails once the consumer is
    /// gone. The stream ends when every sender is dropped.
    pub fn channel(capacity: usize) -> (StreamSender<T>, Stream<T>) {
        let (tx, mut rx) = mpsc::channel(capacity.max(1));
        let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failed = panicked.clone();
        let items = futures_util::stream::poll_fn(move |cx| {
            Poll::Ready(match std::task::ready!(rx.poll_recv(cx)) {
                None if failed.swap(false, Ordering::AcqRel) => Some(Err(PANICKED.to_owned())),
                other => other,
            })
        });
        (
            StreamSender { tx, panicked },
            Stream::from_items(Box::pin(items)),
        )
    }

    fn from_items(items: Items<T>) -> Self {
        let items = std::panic::AssertUnwindSafe(items)
            .catch_unwind()
            .map(|item| item.unwrap_or_else(|panic| Err(panic_text(&*panic))));
        let source = SourceObject {
            state: Mutex::new(SourceState::Ready(Box::pin(items))),
        };
        Stream::from_client(Client::from_local(source))
    }

    /// Starts receiving: makes the sink and asks the source to start.
    fn start(&mut self) -> Result<(), RpcError> {
        let source = self
            .source
            .take()
            .ok_or_else(|| RpcError::StreamFailed("the stream was already started".into()))?;
        let conn = source.connection().cloned();
        let (initial, max) = conn.as_ref().map_or(LOCAL_WINDOW, |c| {
            (c.config().stream_window, c.config().max_stream_window)
        });
        let open = conn.as_ref().map(OpenStream::open).transpose()?;
        let window = Window::new(initial as u64, max as u64);
        let initial = window.initial();
        let shared = Arc::new(SinkShared {
            state: Mutex::new(SinkState {
                items: VecDeque::new(),
                end: None,
                waker: None,
                window,
            }),
            source: source.clone(),
        });
        let sink = Client::from_local(SinkObject {
            shared: Arc::downgrade(&shared),
        });
        source.send(START, &(CapArg(sink), initial))?;
        let closed = conn.map(|c| Mutex::new(Box::pin(c.closed()) as Pin<Box<_>>));
        self.receiving = Some(Receiving {
            shared,
            _open: open,
            closed,
        });
        Ok(())
    }
}

impl<T> Stream<T> {
    pub(crate) fn from_client(client: Client) -> Self {
        Stream {
            source: Some(client),
            receiving: None,
            done: false,
            _items: PhantomData,
        }
    }

    /// Whether the stream was started (polled) on this side; a started stream can no
    /// longer be sent.
    pub fn is_started(&self) -> bool {
        self.source.is_none()
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    match message {
        Some(m) => format!("the producer panicked: {m}"),
        None => "the producer panicked".into(),
    }
}

impl<T> futures_util::Stream for Stream<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.receiving.is_none() {
            if let Err(e) = this.start() {
                this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
        let receiving = this.receiving.as_mut().expect("started");
        let mut state = lock(&receiving.shared.state);
        if let Some((item, cost)) = state.items.pop_front() {
            let grant = state.window.consume(cost);
            drop(state);
            if let Some(grant) = grant {
                // Fails only when the source is gone, which ends the stream anyway.
                let _ = receiving.shared.source.send(CREDIT, &grant);
            }
            return Poll::Ready(Some(Ok(item)));
        }
        let taken = state.end.take();
        if taken.is_none() {
            state.waker = Some(cx.waker().clone());
        }
        drop(state);
        let end = match taken {
            Some(end) => end,
            None => {
                let closed = match receiving.closed.as_mut() {
                    Some(closed) => closed
                        .get_mut()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                        .poll(cx)
                        .is_ready(),
                    None => false,
                };
                if !closed {
                    return Poll::Pending;
                }
                Err(disconnected(&receiving.shared.source))
            }
        };
        // Ended: let go of the source and the sink at once.
        this.done = true;
        this.receiving = None;
        Poll::Ready(end.err().map(Err))
    }
}

/// Why a stream whose producer can no longer reach it ended.
fn disconnected(source: &Client) -> RpcError {
    let reason = source
        .connection()
        .and_then(Connection::close_reason)
        .unwrap_or_else(|| {
            CloseReason::Other("the stream's producer can no longer be reached".into())
        });
    RpcError::Disconnected(reason)
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("source", &self.source)
            .field("started", &self.is_started())
            .field("done", &self.done)
            .finish()
    }
}

impl<T> Serialize for Stream<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.source {
            Some(source) if needs_relay(source) => {
                // A stream between a Cap'n Web session and a connection in another
                // codec: its own calls could not be read on the far side, so this
                // side reads it and serves it again, typed.
                let items = Stream::<T>::from_client(source.clone()).map(|item| {
                    item.map_err(|e| match e {
                        RpcError::StreamFailed(why) => why,
                        other => other.to_string(),
                    })
                });
                let relayed = Stream::from_items(Box::pin(items));
                let relay = relayed.source.as_ref().expect("not started");
                serializer.serialize_newtype_struct(STREAM_NEWTYPE, &SourceRef(relay))
            }
            // Marked, so that a Cap'n Web session can tell a stream from an
            // object (every other codec sees the capability alone).
            Some(source) => serializer.serialize_newtype_struct(STREAM_NEWTYPE, &SourceRef(source)),
            None => Err(S::Error::custom(
                "a stream that was already polled cannot be sent",
            )),
        }
    }
}

impl<'de, T> Deserialize<'de> for Stream<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_newtype_struct(STREAM_NEWTYPE, SourceVisitor)
            .map(Stream::from_client)
    }
}

/// Whether a stream whose source is `source` must be served again from here to
/// be sent in the payload being encoded: when one of the two connections speaks
/// Cap'n Web and the other does not.
fn needs_relay(source: &Client) -> bool {
    match (source.connection(), crate::cap::encoding_codec()) {
        (Some(conn), Some(codec)) => conn.codec().is_capnweb() != codec.is_capnweb(),
        _ => false,
    }
}

/// A stream's source, written inside the [`STREAM_NEWTYPE`] newtype struct.
struct SourceRef<'a>(&'a Client);

impl Serialize for SourceRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Reads the source inside the [`STREAM_NEWTYPE`] newtype struct.
struct SourceVisitor;

impl<'de> serde::de::Visitor<'de> for SourceVisitor {
    type Value = Client;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stream")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Client, D::Error> {
        Client::deserialize(d)
    }
}

/// The sending half of [`Stream::channel`]. Cheap to clone; the stream ends when the
/// last sender is dropped. A sender dropped while its task panics fails the stream
/// instead ([`RpcError::StreamFailed`]), so a reader never takes a panicked
/// producer's items for the whole of them.
///
/// A sender can itself be passed to, or returned from, a remote method: the side
/// that receives it writes into the stream this side reads (a sink handed to a
/// producer, such as a subscriber's feed). Its `send` then waits while this side's
/// channel and the link's window are full, and fails once the reader is gone, as
/// here. The items cross as a [`Stream`] would, with its flow control; dropping
/// every remote clone ends the remote part, [`fail`](Self::fail) ends the reader's
/// stream with [`RpcError::StreamFailed`], and a link that breaks ends it with
/// `StreamFailed` saying so. (Over Cap'n Web it is a `WritableStream`: see the
/// `capnweb` module, feature `capnweb`.)
///
/// ```
/// use farcall::{Connection, Stream, StreamSender};
/// use futures_util::StreamExt;
///
/// #[farcall::remote]
/// pub trait Ticker {
///     /// Writes `n` ticks into `out`, then lets go of it.
///     async fn tick(&self, n: u32, out: StreamSender<u32>);
/// }
/// struct T;
/// impl Ticker for T {
///     async fn tick(&self, n: u32, out: StreamSender<u32>) {
///         for i in 0..n {
///             if out.send(i).await.is_err() {
///                 return; // the reader is gone
///             }
///         }
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (a, b) = farcall::transport::memory();
/// # let _server = Connection::builder().root(TickerServer::new(T)).connect(a);
/// # let ticker: TickerClient = Connection::builder().connect(b).root().await?;
/// let (tx, ticks) = Stream::channel(8);
/// ticker.tick(3, tx).await?;
/// let got: Vec<u32> = ticks.map(Result::unwrap).collect().await;
/// assert_eq!(got, [0, 1, 2]);
/// # Ok(()) }
/// ```
pub struct StreamSender<T> {
    tx: mpsc::Sender<Result<T, String>>,
    /// Set by a sender dropped while its thread panicked.
    panicked: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a stream whose producer panicked failed.
const PANICKED: &str = "the producer panicked";

/// A sender dropped while its thread panics (a producer's handler or task that
/// panicked) fails the stream, so its reader never takes what it got so far for
/// the whole of it.
impl<T> Drop for StreamSender<T> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // At once if there is room; else the reader learns of it after what it
        // has not read yet, when the channel ends.
        self.panicked.store(true, Ordering::Release);
        let _ = self.tx.try_send(Err(PANICKED.to_owned()));
    }
}

impl<T> Clone for StreamSender<T> {
    fn clone(&self) -> Self {
        StreamSender {
            tx: self.tx.clone(),
            panicked: self.panicked.clone(),
        }
    }
}

impl<T> fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// [`StreamSender::send`] failed: the stream's consumer is gone (dropped it, or its
/// connection ended). Holds the item that was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClosed<T>(pub T);

impl<T> fmt::Display for StreamClosed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the stream's consumer is gone")
    }
}

impl<T: fmt::Debug> std::error::Error for StreamClosed<T> {}

impl<T> StreamSender<T> {
    /// Sends an item, waiting while the channel is full; fails once the consumer is
    /// gone.
    pub async fn send(&self, item: T) -> Result<(), StreamClosed<T>> {
        self.tx.send(Ok(item)).await.map_err(|e| match e.0 {
            Ok(item) => StreamClosed(item),
            Err(_) => unreachable!("an item was sent"),
        })
    }

    /// Ends the stream with an error: the consumer gets [`RpcError::StreamFailed`]
    /// with `error`'s text after the items sent before it.
    pub async fn fail(self, error: impl fmt::Display) -> Result<(), StreamClosed<()>> {
        self.tx
            .send(Err(error.to_string()))
            .await
            .map_err(|_| StreamClosed(()))
    }

    /// Whether the consumer is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves once the consumer is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A capability as a plain argument (the runtime's own calls carry clients).
struct CapArg(Client);

impl Serialize for CapArg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CapArg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Client::deserialize(deserializer).map(CapArg)
    }
}

/// One stream counted among its connection's open streams while it lives.
struct OpenStream {
    shared: Arc<Shared>,
}

impl OpenStream {
    /// Counts a new stream on `conn`, refusing beyond `max_open_streams`.
    fn open(conn: &Connection) -> Result<Self, RpcError> {
        let limit = conn.config().max_open_streams;
        let count: &AtomicUsize = &conn.shared.streams;
        if count.fetch_add(1, Ordering::AcqRel) >= limit {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(RpcError::Overloaded(format!(
                "more than {limit} streams are open on the connection"
            )));
        }
        Ok(OpenStream {
            shared: conn.shared.clone(),
        })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.shared.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
