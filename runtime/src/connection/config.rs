//! A connection's settings ([`Config`]) and the [`Builder`] that starts connections
//! with them over any transport.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use super::{actor, Connection, Handle, Shared};
use crate::cap::{Dispatch, LocalObject};
use crate::codec::AnyCodec;
use crate::transport::{self, Transport};
use crate::wire::MAX_FRAME_CEILING;

/// Settings of a connection. Build one through [`Connection::builder`]; every field
/// has the default documented on it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Wire codec; both ends must agree. Default: [`AnyCodec::default`] (bincode).
    pub codec: AnyCodec,
    /// Largest frame sent or accepted, in bytes. Incoming frames are checked before a
    /// buffer is allocated; an outgoing call over the limit fails locally with
    /// [`RpcError::FrameTooLarge`](crate::RpcError::FrameTooLarge) and the connection stays up. Default: 16 MiB.
    pub max_frame_size: usize,
    /// Whether a handler's panic message is sent to the caller (`true`) or redacted to
    /// just "panicked" (`false`, for servers facing untrusted peers). Default: `true`.
    pub expose_panics: bool,
    /// Outbound bytes queued before the connection pushes back: the connection task
    /// stops reading frames and taking local calls until the transport drains, and
    /// new local calls fail with [`RpcError::Overloaded`](crate::RpcError::Overloaded) instead of queueing more. A
    /// peer that stops reading therefore costs bounded memory. The limit in effect is
    /// never below `max_frame_size`, so one frame of the largest size can always be
    /// queued. Default: 8 MiB.
    pub max_queued_bytes: usize,
    /// Time limit for every call made on this connection; `None` waits as long as the
    /// connection lives. [`Call::timeout`](crate::Call::timeout) overrides it per
    /// call. On timeout the caller gets [`RpcError::Timeout`](crate::RpcError::Timeout) and the callee is told to
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
    /// peer is told why (its callers get [`RpcError::Disconnected`](crate::RpcError::Disconnected) saying the drain
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
    /// calls are refused with [`RpcError::Overloaded`](crate::RpcError::Overloaded) while returns, releases and
    /// finishes keep flowing. Default: 1,024.
    pub max_inflight_calls: usize,
    /// Answers held for the peer at once: running calls plus finished ones kept for
    /// pipelining until the peer's `Finish`. Beyond it, calls are refused with
    /// [`RpcError::Overloaded`](crate::RpcError::Overloaded). Default: 16,384.
    pub max_answers: usize,
    /// Objects and callbacks exported to the peer at once. A result or call that would
    /// export more fails with [`RpcError::Overloaded`](crate::RpcError::Overloaded). Default: 65,536.
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
    /// more fails with [`RpcError::Overloaded`](crate::RpcError::Overloaded) (the
    /// peer's stream ends with it). Default: 1,024.
    pub max_open_streams: usize,
}

impl Config {
    /// The smallest [`chunk_size`](Self::chunk_size) in effect.
    pub const MIN_CHUNK_SIZE: usize = 1024;

    /// The smallest frame limit in effect: room for any control message.
    pub const MIN_FRAME_SIZE: usize = 64;

    /// The shortest timer in effect: a zero handshake, idle or keepalive period
    /// would close at once or spin.
    pub const MIN_TIMER: Duration = Duration::from_millis(1);

    /// This configuration within its bounds, as every connection uses it (the
    /// [`Builder`] applies it to whatever it is given): `max_frame_size` within
    /// [`MIN_FRAME_SIZE`](Self::MIN_FRAME_SIZE) ..= [`MAX_FRAME_CEILING`];
    /// `chunk_size` at least [`MIN_CHUNK_SIZE`](Self::MIN_CHUNK_SIZE);
    /// `max_inflight_calls`, `max_answers`, `max_exports` and `max_queued_bytes` at
    /// least 1 (a zero would refuse everything); `stream_window` at least 1 and
    /// `max_stream_window` at least `stream_window`; `handshake_timeout`, `keepalive`
    /// and `idle_timeout` at least [`MIN_TIMER`](Self::MIN_TIMER).
    ///
    /// ```
    /// # use farcall::Config;
    /// let mut config = Config::default();
    /// config.chunk_size = 0;
    /// config.max_inflight_calls = 0;
    /// let config = config.normalized();
    /// assert_eq!(config.chunk_size, Config::MIN_CHUNK_SIZE);
    /// assert_eq!(config.max_inflight_calls, 1);
    /// ```
    pub fn normalized(mut self) -> Self {
        let timer = |d: Duration| d.max(Self::MIN_TIMER);
        self.max_frame_size = self
            .max_frame_size
            .clamp(Self::MIN_FRAME_SIZE, MAX_FRAME_CEILING);
        self.chunk_size = self.chunk_size.max(Self::MIN_CHUNK_SIZE);
        self.max_inflight_calls = self.max_inflight_calls.max(1);
        self.max_answers = self.max_answers.max(1);
        self.max_exports = self.max_exports.max(1);
        self.max_queued_bytes = self.max_queued_bytes.max(1);
        self.stream_window = self.stream_window.max(1);
        self.max_stream_window = self.max_stream_window.max(self.stream_window);
        self.handshake_timeout = timer(self.handshake_timeout);
        self.keepalive = self.keepalive.map(timer);
        self.idle_timeout = self.idle_timeout.map(timer);
        self
    }

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
        self.normalize()
    }

    /// Sets [`Config::max_frame_size`] (clamped to 64 bytes ..= [`MAX_FRAME_CEILING`]).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.max_frame_size = bytes;
        self.normalize()
    }

    /// Sets [`Config::expose_panics`].
    pub fn expose_panics(mut self, expose: bool) -> Self {
        self.config.expose_panics = expose;
        self.normalize()
    }

    /// Sets [`Config::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.config.max_queued_bytes = bytes;
        self.normalize()
    }

    /// Sets [`Config::call_timeout`].
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.call_timeout = timeout;
        self.normalize()
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self.normalize()
    }

    /// Sets [`Config::drain_timeout`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self.normalize()
    }

    /// Sets [`Config::keepalive`].
    pub fn keepalive(mut self, every: Option<Duration>) -> Self {
        self.config.keepalive = every;
        self.normalize()
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self.normalize()
    }

    /// Sets [`Config::max_inflight_calls`].
    pub fn max_inflight_calls(mut self, max: usize) -> Self {
        self.config.max_inflight_calls = max;
        self.normalize()
    }

    /// Sets [`Config::max_answers`].
    pub fn max_answers(mut self, max: usize) -> Self {
        self.config.max_answers = max;
        self.normalize()
    }

    /// Sets [`Config::chunk_size`] (at least 1 KiB).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.config.chunk_size = bytes;
        self.normalize()
    }

    /// Sets [`Config::max_exports`].
    pub fn max_exports(mut self, max: usize) -> Self {
        self.config.max_exports = max;
        self.normalize()
    }

    /// Sets [`Config::stream_window`].
    pub fn stream_window(mut self, bytes: usize) -> Self {
        self.config.stream_window = bytes;
        self.normalize()
    }

    /// Sets [`Config::max_stream_window`].
    pub fn max_stream_window(mut self, bytes: usize) -> Self {
        self.config.max_stream_window = bytes;
        self.normalize()
    }

    /// Sets [`Config::max_open_streams`].
    pub fn max_open_streams(mut self, max: usize) -> Self {
        self.config.max_open_streams = max;
        self.normalize()
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.config.max_frame_size = self.config.max_frame_size.clamp(64, MAX_FRAME_CEILING);
        self.normalize()
    }

    /// Applies [`Config::normalized`]: the one place a builder's settings are
    /// brought within their bounds, whichever way they were set.
    fn normalize(mut self) -> Self {
        self.config = self.config.normalized();
        self
    }

    /// The configuration connections will get (normalized, see
    /// [`Config::normalized`]).
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
            room: tokio::sync::Notify::new(),
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
