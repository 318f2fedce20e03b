//! Connections: the handle users hold, its builder and configuration.
//!
//! Each connection is served by one actor task (see `actor.rs`) that owns the
//! transport and the protocol tables. [`Connection`] handles and the clients made from
//! them talk to the actor over a channel, so a call costs no lock, only channel
//! operations; the caller's own task encodes arguments and decodes results.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cap::{LocalObject, Message};
use crate::client::{Client, RemoteClient};
use crate::codec::AnyCodec;
use crate::dispatch::decode_reply;
use crate::dispatch::{Dispatch, Method, Plain, Reply};
use crate::error::{CloseReason, RpcError};
use crate::transport::{self, Transport};
use crate::wire::{ExportId, QuestionId, Target};

mod actor;
mod outbound;
#[cfg(test)]
mod tests;

pub use crate::wire::MAX_FRAME_CEILING;

/// Settings of a connection. Build one through [`Connection::builder`]; every field
/// has the default documented on it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Wire codec; both ends must agree. Default: [`AnyCodec::default`] (bincode).
    pub codec: AnyCodec,
    /// Largest frame sent or accepted, in bytes. Incoming frames are checked before a
    /// buffer is allocated; an outgoing call over the limit fails locally with
    /// [`RpcError::FrameTooLarge`] and the connection stays up. Default: 16 MiB.
    pub max_frame_size: usize,
    /// Whether a handler's panic message is sent to the caller (`true`) or redacted to
    /// just "panicked" (`false`, for servers facing untrusted peers). Default: `true`.
    pub expose_panics: bool,
    /// Outbound bytes queued before the connection pushes back: the connection task
    /// stops reading frames and taking local calls until the transport drains, and
    /// new local calls fail with [`RpcError::Overloaded`] instead of queueing more. A
    /// peer that stops reading therefore costs bounded memory. The limit in effect is
    /// never below `max_frame_size`, so one frame of the largest size can always be
    /// queued. Default: 8 MiB.
    pub max_queued_bytes: usize,
    /// Time limit for every call made on this connection; `None` waits as long as the
    /// connection lives. [`Call::timeout`](crate::Call::timeout) overrides it per
    /// call. On timeout the caller gets [`RpcError::Timeout`] and the callee is told to
    /// stop. Default: `None`.
    pub call_timeout: Option<Duration>,
    /// Time limit for the opening exchange: the peer's opening message (its protocol
    /// version, codec and limits, sent first by every farcall peer) must arrive
    /// within it, on every transport, or the connection closes with a handshake
    /// timeout. A peer that connects and stays silent, or trickles bytes, therefore
    /// holds a server's connection slot for at most this long. Also limits
    /// [`Connection::root`] (the bootstrap call) and a WebSocket upgrade (feature
    /// `websocket`). Default: 10 s.
    pub handshake_timeout: Duration,
    /// How long a graceful close ([`Connection::close`], a server's shutdown) waits
    /// for the calls still running. When it passes, those calls are dropped, the
    /// peer is told why (its callers get [`RpcError::Disconnected`] saying the drain
    /// deadline passed) and the connection ends. Default: 5 s.
    pub drain_timeout: Duration,
    /// Send a keepalive frame after this long without sending anything, so a peer's
    /// [`idle_timeout`](Self::idle_timeout) does not fire on a quiet but healthy
    /// connection. Default: `None`.
    pub keepalive: Option<Duration>,
    /// Close the connection when nothing arrives for this long (a silent or vanished
    /// peer). Pair it with a `keepalive` shorter than the peer's idle timeout on both
    /// sides. Default: `None`.
    pub idle_timeout: Option<Duration>,
    /// Incoming calls that may run (or wait on a pipelined answer) at once; further
    /// calls are refused with [`RpcError::Overloaded`] while returns, releases and
    /// finishes keep flowing. Default: 1,024.
    pub max_inflight_calls: usize,
    /// Answers held for the peer at once: running calls plus finished ones kept for
    /// pipelining until the peer's `Finish`. Beyond it, calls are refused with
    /// [`RpcError::Overloaded`]. Default: 16,384.
    pub max_answers: usize,
    /// Objects and callbacks exported to the peer at once. A result or call that would
    /// export more fails with [`RpcError::Overloaded`]. Default: 65,536.
    pub max_exports: usize,
    /// Frames larger than this are sent in chunks of this size, and smaller frames
    /// that nothing orders after them (calls on other objects, returns) pass between
    /// the chunks: a large upload does not hold up a small call. Also keeps every
    /// transport message under this size, for carriers with a per-message limit
    /// (WebSocket peers often cap at 64 KiB). Both ends reassemble whatever they
    /// receive, up to `max_frame_size`. Default: 64 KiB.
    pub chunk_size: usize,
    /// The flow-control window a [`Stream`](crate::Stream) received on this
    /// connection starts with, in bytes of its items: what the producer may send
    /// before the consumer grants more. It doubles, up to `max_stream_window`, while
    /// the link rather than the consumer holds the stream back. Default: 64 KiB.
    pub stream_window: usize,
    /// The largest a stream's window grows: at most this much (plus one item) is held
    /// for a consumer that stops reading. It should cover the link's bandwidth times
    /// its round trip for a stream to fill the link. Default: 4 MiB.
    pub max_stream_window: usize,
    /// Streams open on this connection at once, in either direction; starting one
    /// more fails with [`RpcError::Overloaded`] (the peer's stream ends with it).
    /// Default: 1,024.
    pub max_open_streams: usize,
}

impl Config {
    /// The outbound limit in effect: `max_queued_bytes`, but never below one frame.
    pub(crate) fn queue_limit(&self) -> usize {
        self.max_queued_bytes.max(self.max_frame_size)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            codec: AnyCodec::default(),
            max_frame_size: 16 << 20,
            expose_panics: true,
            max_queued_bytes: 8 << 20,
            call_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            keepalive: None,
            idle_timeout: None,
            max_inflight_calls: 1024,
            max_answers: 16 * 1024,
            max_exports: 64 * 1024,
            chunk_size: 64 * 1024,
            stream_window: 64 * 1024,
            max_stream_window: 4 << 20,
            max_open_streams: 1024,
        }
    }
}

/// Builds connections: set the root object and options, then connect a transport.
/// One builder can connect any number of transports (a server uses one for all).
#[derive(Clone, Default)]
pub struct Builder {
    config: Config,
    root: Option<Arc<LocalObject>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field(
                "root",
                &self.root.as_ref().map(|r| r.dispatch.interface().name),
            )
            .finish()
    }
}

impl Builder {
    /// Offers `root` to the peer, which gets it with [`Connection::root`]. Pass a
    /// generated server, such as `CounterServer::new(my_counter)`.
    pub fn root(mut self, root: impl Dispatch) -> Self {
        self.root = Some(LocalObject::new(Arc::new(root)));
        self
    }

    /// Sets the wire codec (default bincode).
    pub fn codec(mut self, codec: impl Into<AnyCodec>) -> Self {
        self.config.codec = codec.into();
        self
    }

    /// Sets [`Config::max_frame_size`]; values above [`MAX_FRAME_CEILING`] are clamped.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.max_frame_size = bytes.clamp(64, MAX_FRAME_CEILING);
        self
    }

    /// Sets [`Config::expose_panics`].
    pub fn expose_panics(mut self, expose: bool) -> Self {
        self.config.expose_panics = expose;
        self
    }

    /// Sets [`Config::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.config.max_queued_bytes = bytes.max(1);
        self
    }

    /// Sets [`Config::call_timeout`].
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Sets [`Config::drain_timeout`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// Sets [`Config::keepalive`].
    pub fn keepalive(mut self, every: Option<Duration>) -> Self {
        self.config.keepalive = every;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Sets [`Config::max_inflight_calls`].
    pub fn max_inflight_calls(mut self, max: usize) -> Self {
        self.config.max_inflight_calls = max.max(1);
        self
    }

    /// Sets [`Config::max_answers`].
    pub fn max_answers(mut self, max: usize) -> Self {
        self.config.max_answers = max.max(1);
        self
    }

    /// Sets [`Config::chunk_size`] (at least 1 KiB).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.config.chunk_size = bytes.max(1024);
        self
    }

    /// Sets [`Config::max_exports`].
    pub fn max_exports(mut self, max: usize) -> Self {
        self.config.max_exports = max.max(1);
        self
    }

    /// Sets [`Config::stream_window`] (at least 1 byte).
    pub fn stream_window(mut self, bytes: usize) -> Self {
        self.config.stream_window = bytes.max(1);
        self
    }

    /// Sets [`Config::max_stream_window`].
    pub fn max_stream_window(mut self, bytes: usize) -> Self {
        self.config.max_stream_window = bytes.max(1);
        self
    }

    /// Sets [`Config::max_open_streams`].
    pub fn max_open_streams(mut self, max: usize) -> Self {
        self.config.max_open_streams = max;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.config.max_frame_size = self.config.max_frame_size.clamp(64, MAX_FRAME_CEILING);
        self
    }

    /// The configuration connections will get.
    pub fn current_config(&self) -> &Config {
        &self.config
    }

    /// Starts a connection over a frame transport, spawning its actor task on the
    /// current tokio runtime (so this must run inside one).
    ///
    /// The connection runs until the transport closes or fails, until
    /// [`Connection::close`] or [`Connection::abort`] is called, or until nothing uses
    /// it: a connection that offers no root and has exported nothing closes itself
    /// (gracefully) once every handle on this side is gone: the `Connection`s, the
    /// clients and callbacks received over it, pending calls and promises, and the
    /// running handlers of calls it received. A connection with a root keeps serving
    /// its peer whatever happens to the handles.
    pub fn connect<T: Transport>(&self, transport: T) -> Connection {
        let (tx, rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            id: next_connection_id(),
            commands: tx,
            next_question: AtomicU64::new(1),
            pending_bytes: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            config: self.config.clone(),
            reason: OnceLock::new(),
            closed,
        });
        let handle = Arc::new(Handle {
            commands: shared.commands.clone(),
        });
        let internal = Connection {
            shared: shared.clone(),
            _handle: None,
        };
        actor::spawn(
            internal,
            Arc::downgrade(&handle),
            rx,
            transport,
            self.root.clone(),
        );
        Connection {
            shared,
            _handle: Some(handle),
        }
    }

    /// Starts a connection over a byte stream with length-delimited frames (see
    /// [`transport::framed`]).
    pub fn connect_stream<S>(&self, io: S) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        self.connect(transport::framed(io, self.config.max_frame_size))
    }

    /// Connects to a TCP server (with `TCP_NODELAY` set, as small calls need).
    pub async fn connect_tcp(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> io::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(self.connect_stream(stream))
    }

    /// Connects to a Unix-socket server.
    #[cfg(unix)]
    pub async fn connect_unix(&self, path: impl AsRef<std::path::Path>) -> io::Result<Connection> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        Ok(self.connect_stream(stream))
    }

    /// Connects to a WebSocket server at `url` (`ws://host:port/path`; `wss://` is
    /// not supported, put a TLS-terminating proxy in front instead) and starts a
    /// connection over it, one frame per binary message (see
    /// [`transport::websocket()`]).
    ///
    /// Connecting and the upgrade handshake together must finish within
    /// [`Config::handshake_timeout`]. Incoming messages are limited to
    /// [`Config::max_frame_size`].
    ///
    /// Requires the `websocket` feature (on by default).
    #[cfg(feature = "websocket")]
    pub async fn connect_websocket(&self, url: &str) -> io::Result<Connection> {
        let config = &self.config;
        let ws =
            transport::websocket::connect(url, config.max_frame_size, config.handshake_timeout)
                .await?;
        Ok(self.connect(ws))
    }

    /// Accepts a WebSocket client on a freshly accepted byte stream: runs the
    /// server side of the upgrade handshake, then starts a connection over it.
    ///
    /// The handshake must finish within [`Config::handshake_timeout`], so a peer
    /// that connects and sends nothing is dropped. To serve many clients, use
    /// [`Server::serve_websocket`](crate::Server::serve_websocket).
    ///
    /// Requires the `websocket` feature (on by default).
    #[cfg(feature = "websocket")]
    pub async fn accept_websocket<S>(&self, io: S) -> io::Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let config = &self.config;
        let ws = transport::websocket::accept(io, config.max_frame_size, config.handshake_timeout)
            .await?;
        Ok(self.connect(ws))
    }
}

fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a question asks for.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Call `method` on `target`.
    Call { target: Target, method: u32 },
    /// Ask for the peer's root, expecting `interface`.
    Bootstrap { interface: String, fingerprint: u64 },
}

/// What the actor is asked to do by handles.
pub(crate) enum Command {
    /// Send a question and route its return to `reply`.
    Ask {
        question: QuestionId,
        outgoing: Outgoing,
        message: Message,
        reply: oneshot::Sender<Reply>,
    },
    /// Send a one-way call.
    Send {
        target: Target,
        method: u32,
        message: Message,
    },
    /// The caller no longer wants the answer to `question`. `answered`: its return
    /// was received (so the question entry is gone but the callee kept the answer).
    Finish {
        question: QuestionId,
        answered: bool,
    },
    /// The object with this identity (`CapRef::key`) was revoked by its owner: tell
    /// the peer, if it was exported to it.
    Revoked { key: usize },
    /// The last handle to an import was dropped, or it was released.
    ImportDropped { id: ExportId, generation: u64 },
    /// Report the table sizes.
    Stats { reply: oneshot::Sender<Stats> },
    /// Close gracefully; reply when done (if anyone waits).
    Close { done: Option<oneshot::Sender<()>> },
    /// The last handle keeping the connection in use was dropped (another may have
    /// been made since).
    HandlesGone,
    /// Close now, failing everything in flight; `reason` becomes the close reason.
    Abort { reason: CloseReason },
}

/// The sizes of a connection's tables, from [`Connection::stats`]. Neither side's
/// root is counted (not among the exports of the side offering it, not among the
/// imports of the side holding it), so once every other handle, callback and pending
/// call is dropped, all are zero: a number that keeps growing is a leak.
///
/// ```
/// # use farcall::Stats;
/// assert!(Stats::default().is_zero());
/// assert_eq!(Stats::new(0, 0, 1, 0).exports, 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls this side made that await a return (questions).
    pub questions: usize,
    /// Calls the peer made that this side still holds: running, waiting for an
    /// answer they depend on, or finished and kept for calls pipelined on them
    /// (answers).
    pub answers: usize,
    /// Objects and callbacks this side exported to the peer, not counting the root.
    pub exports: usize,
    /// Objects and callbacks the peer exported that this side still holds, not
    /// counting the peer's root.
    pub imports: usize,
    /// Streams open on the connection, in either direction: started and not yet
    /// ended ([`Stream`](crate::Stream), [`ByteStream`](crate::ByteStream)).
    pub streams: usize,
}

impl Stats {
    /// Table sizes to compare [`Connection::stats`] with in tests (no open streams).
    pub fn new(questions: usize, answers: usize, exports: usize, imports: usize) -> Self {
        Stats {
            questions,
            answers,
            exports,
            imports,
            streams: 0,
        }
    }

    /// Whether every table is empty.
    pub fn is_zero(&self) -> bool {
        *self == Stats::default()
    }
}

/// A question in flight: resolves to its reply, and tells the callee when the answer
/// is no longer wanted (`Finish`), unless pipelined handles on it still exist.
pub(crate) struct Question {
    conn: Connection,
    id: QuestionId,
    rx: oneshot::Receiver<Reply>,
    done: bool,
    /// Created when calls are pipelined on the answer; takes over sending `Finish`.
    answer: OnceLock<Arc<AnswerRef>>,
}

/// The answer to a question, as the target of pipelined calls. The last reference
/// to go sends `Finish`, if the callee keeps the answer.
pub(crate) struct AnswerRef {
    pub(crate) conn: Connection,
    pub(crate) question: QuestionId,
    finish_owed: AtomicBool,
    answered: AtomicBool,
}

impl Drop for AnswerRef {
    fn drop(&mut self) {
        if self.finish_owed.load(Ordering::Acquire) {
            let _ = self.conn.command(Command::Finish {
                question: self.question,
                answered: self.answered.load(Ordering::Acquire),
            });
        }
    }
}

impl Question {
    /// The answer as a pipelining target.
    pub(crate) fn answer(&self) -> Arc<AnswerRef> {
        self.answer
            .get_or_init(|| {
                Arc::new(AnswerRef {
                    conn: self.conn.clone(),
                    question: self.id,
                    finish_owed: AtomicBool::new(true),
                    answered: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Settles who owes the callee a `Finish` once the reply is known.
    fn settle(&self, reply: Option<&Reply>) {
        let owed = reply.is_none_or(Reply::needs_finish);
        match self.answer.get() {
            Some(answer) => {
                answer.answered.store(reply.is_some(), Ordering::Release);
                answer.finish_owed.store(owed, Ordering::Release);
            }
            None if owed => {
                let _ = self.conn.command(Command::Finish {
                    question: self.id,
                    answered: reply.is_some(),
                });
            }
            None => {}
        }
    }
}

impl Future for Question {
    type Output = Result<Reply, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let received = ready!(Pin::new(&mut self.rx).poll(cx));
        self.done = true;
        match received {
            Ok(reply) => {
                self.settle(Some(&reply));
                Poll::Ready(Ok(reply))
            }
            Err(_) => Poll::Ready(Err(self.conn.disconnect_error())),
        }
    }
}

impl Drop for Question {
    fn drop(&mut self) {
        if !self.done {
            // The answer may already be here, unread.
            let reply = self.rx.try_recv().ok();
            self.settle(reply.as_ref());
        }
    }
}

pub(crate) struct Shared {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    next_question: AtomicU64,
    /// Bytes of calls handed to the connection task and not yet taken into its
    /// outbound queue: what `max_queued_bytes` bounds for local callers.
    pub(crate) pending_bytes: AtomicUsize,
    /// Streams open on the connection (see `stream.rs`).
    pub(crate) streams: AtomicUsize,
    config: Config,
    /// Why the connection ended; set before any pending call is failed, so every
    /// failed call can say why.
    reason: OnceLock<CloseReason>,
    closed: watch::Sender<bool>,
}

/// A handle to a live connection; cheap to clone, usable from any task.
///
/// A connection is symmetric: each side may offer a root object (see
/// [`Builder::root`]) and may ask for the other's with [`root`](Self::root).
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
    /// Present in every handle that keeps the connection in use; the connection
    /// task's own handle has none. When the last one goes, a connection that offers
    /// nothing to its peer closes itself.
    _handle: Option<Arc<Handle>>,
}

/// Shared by the handles that keep a connection in use.
pub(crate) struct Handle {
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::HandlesGone);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The bootstrap pseudo-method, for error messages.
static BOOTSTRAP: Method = Method {
    interface: "(bootstrap)",
    name: "root",
    id: 0,
};

impl Connection {
    /// A builder with the default [`Config`] and no root.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A process-unique number identifying this connection (in logs, and to tell
    /// peers apart in a handler through [`CallContext`](crate::CallContext)).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The connection's settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Asks the peer for its root object as client type `C`.
    ///
    /// Fails with [`RpcError::WrongInterface`] (naming both interfaces) if the peer's
    /// root implements another trait, and [`RpcError::NoRoot`] if it offers none. A
    /// peer built from another version of the same trait is accepted; methods it does
    /// not have fail with [`RpcError::MethodNotFound`] when called.
    pub async fn root<C: RemoteClient>(&self) -> Result<C, RpcError> {
        let interface = C::INTERFACE;
        let outgoing = Outgoing::Bootstrap {
            interface: interface.name.to_owned(),
            fingerprint: interface.fingerprint,
        };
        let message = Message {
            payload: Default::default(),
            caps: Vec::new(),
            codec: self.codec(),
        };
        let question = self.ask(outgoing, message)?;
        let reply = tokio::time::timeout(self.config().handshake_timeout, question)
            .await
            .map_err(|_| RpcError::Timeout)??;
        let cap = reply.caps.first().cloned();
        match decode_reply::<Plain<()>>(&BOOTSTRAP, reply).and_then(|r| r) {
            Ok(()) => match cap {
                Some(cap) => Ok(C::from_client(Client::from_cap(cap))),
                None => Err(RpcError::BadMessage(
                    "bootstrap returned no capability".into(),
                )),
            },
            Err(RpcError::WrongInterface { found, .. }) => Err(RpcError::WrongInterface {
                expected: interface.name.to_owned(),
                found,
            }),
            Err(e) => Err(e),
        }
    }

    /// The sizes of this side's tables: pending calls, running handlers, exports and
    /// imports. See [`Stats`]. On a connection that has ended, the tables are gone
    /// and this fails with [`RpcError::Disconnected`] giving the close reason.
    pub async fn stats(&self) -> Result<Stats, RpcError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Stats { reply })?;
        rx.await.map_err(|_| self.disconnect_error())
    }

    /// Closes gracefully: incoming calls already running finish and their results
    /// are sent, new incoming calls are refused with [`RpcError::Closing`], this
    /// side's pending calls fail with [`RpcError::Disconnected`], then the transport
    /// is closed. Calls still running when [`Config::drain_timeout`] passes are
    /// dropped and the connection ends anyway, so this always resolves: when the
    /// connection has ended.
    pub fn close(&self) -> impl Future<Output = ()> + Send + 'static {
        let (done, wait) = oneshot::channel();
        let sent = self.command(Command::Close { done: Some(done) }).is_ok();
        let closed = self.closed();
        async move {
            if sent {
                let _ = wait.await;
            }
            closed.await;
        }
    }

    /// Closes at once: running handlers are dropped, every pending call on both sides
    /// fails with [`RpcError::Disconnected`], and the peer is told why. Resolves when
    /// the connection has ended.
    pub fn abort(&self) -> impl Future<Output = ()> + Send + 'static {
        self.abort_with(CloseReason::AbortedLocally)
    }

    /// [`abort`](Self::abort) with `reason` as the close reason (unless the
    /// connection already has one), so pending calls say why they failed.
    pub(crate) fn abort_with(
        &self,
        reason: CloseReason,
    ) -> impl Future<Output = ()> + Send + 'static {
        let _ = self.command(Command::Abort { reason });
        self.closed()
    }

    /// Resolves once the connection has ended, for whatever reason.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Why the connection ended (or is ending), if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().cloned()
    }

    pub(crate) fn codec(&self) -> AnyCodec {
        self.shared.config.codec
    }

    pub(crate) fn max_frame_size(&self) -> usize {
        self.shared.config.max_frame_size
    }

    pub(crate) fn next_question(&self) -> QuestionId {
        self.shared.next_question.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn commands(&self) -> &mpsc::UnboundedSender<Command> {
        &self.shared.commands
    }

    pub(crate) fn command(&self, command: Command) -> Result<(), RpcError> {
        self.shared
            .commands
            .send(command)
            .map_err(|_| self.disconnect_error())
    }

    /// Sends a question; the returned future yields its reply.
    pub(crate) fn ask(&self, outgoing: Outgoing, message: Message) -> Result<Question, RpcError> {
        self.reserve(message.payload.len())?;
        let id = self.next_question();
        let (reply, rx) = oneshot::channel();
        self.command(Command::Ask {
            question: id,
            outgoing,
            message,
            reply,
        })?;
        Ok(Question {
            conn: self.clone(),
            id,
            rx,
            done: false,
            answer: OnceLock::new(),
        })
    }

    /// Sends a one-way call.
    pub(crate) fn send(
        &self,
        target: Target,
        method: u32,
        message: Message,
    ) -> Result<(), RpcError> {
        self.reserve(message.payload.len())?;
        self.command(Command::Send {
            target,
            method,
            message,
        })
    }

    /// Counts `bytes` as queued for sending, refusing when the queue is full.
    fn reserve(&self, bytes: usize) -> Result<(), RpcError> {
        let pending = &self.shared.pending_bytes;
        let limit = self.shared.config.queue_limit();
        if pending.load(Ordering::Relaxed) >= limit {
            return Err(RpcError::Overloaded(format!(
                "more than {limit} bytes are queued for sending (the peer is not reading fast enough)"
            )));
        }
        pending.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn disconnect_error(&self) -> RpcError {
        let reason = self
            .shared
            .reason
            .get()
            .cloned()
            .unwrap_or_else(|| CloseReason::Other("connection closed".into()));
        RpcError::Disconnected(reason)
    }
}
