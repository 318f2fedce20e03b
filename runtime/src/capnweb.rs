//! Serving `#[farcall::remote]` traits to JavaScript clients of
//! [Cap'n Web](https://github.com/cloudflare/capnweb) (the npm `capnweb` package), over
//! WebSocket and HTTP batch, and calling Cap'n Web servers over WebSocket
//! ([`connect_websocket`]). Feature `capnweb` (`axum` for the [`axum`] route).
//!
//! Any trait, unchanged, can be served: JavaScript calls its methods by name with
//! positional arguments, and gets results, errors as rejected promises carrying an
//! `Error` with the error's text, stubs for returned client types (whose methods it
//! can call, also before they resolve: pipelining), and its functions arrive in
//! Rust as [`Callback`](crate::Callback)s to call and keep.
//!
//! ```no_run
//! #[farcall::remote]
//! pub trait Greeter {
//!     async fn greet(&self, name: String) -> String;
//! }
//! struct Hello;
//! impl Greeter for Hello {
//!     async fn greet(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//! # async fn demo() -> std::io::Result<()> {
//! let builder = farcall::Connection::builder().root(GreeterServer::new(Hello));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // JavaScript: `newWebSocketRpcSession("ws://127.0.0.1:8080").greet("you")`
//! farcall::Server::new(builder)
//!     .serve_capnweb(listener, std::future::pending())
//!     .await;
//! # Ok(()) }
//! ```
//!
//! As a client, [`connect_websocket`] gives a connection whose
//! [`root`](crate::Connection::root) is the server's main object, as any client type:
//! its methods are called by their Rust names, results decode into the method's
//! types, a rejection is the application error of a method returning
//! `Result<T, E>` when `E` reads from the `Error`'s message (a `String`, an enum of
//! unit variants named by it), else
//! [`RpcError::RemotePanic`](crate::RpcError::RemotePanic) with the error's text,
//! returned stubs are client types, and JavaScript objects are
//! disposed when farcall drops its last handle.
//!
//! # How
//!
//! Cap'n Web is translated, not reimplemented: a translating transport turns each Cap'n Web message into farcall frames for
//! the ordinary connection actor, and each frame the actor writes into Cap'n Web
//! messages, so the answer table, pipelining, exports, imports, reference counts,
//! limits and close reasons are farcall's own. A `push` is a call whose question id
//! is the push's id, `pull` asks for its result, `resolve`/`reject` are returns,
//! `release` is a `Finish` or a `Release`; the translator keeps only what Cap'n
//! Web adds (which results were pulled, each result until its release for property
//! paths on it, the numbering of this side's pushes, the sign of ids). Payloads
//! travel as Cap'n Web expressions (`codec/capnweb.rs`).
//!
//! Methods are called by name: the translator hashes the name as the macro does
//! and leaves the signature bits as a wildcard, which the served object resolves
//! against its interface. For Rust calling a JavaScript object, a
//! [`Callback`](crate::Callback) is a call of the function itself, and a typed
//! client's methods are named from a process-wide table of method names that the
//! generated clients fill as they call over a Cap'n Web connection.
//!
//! # Limits and failures
//!
//! A message may be at most [`MAX_MESSAGE_SIZE`] bytes and nest at most 256 levels
//! (Cap'n Web's defaults), and at most
//! [`max_inflight_calls`](crate::Config::max_inflight_calls) pushes and promises
//! together may wait: pushes for the results their property paths need or for the
//! promises among their arguments, and each unsettled promise of the peer's. At most
//! [`max_answers`](crate::Config::max_answers) pushes may be held at once (each is
//! kept, result and all, until the peer releases it; one more ends the session),
//! the results kept may hold at most 32 times
//! [`max_queued_bytes`](crate::Config::max_queued_bytes) (256 MiB by default; beyond,
//! the session ends when the peer next sends), and
//! the peer may hold at most
//! [`max_exports`](crate::Config::max_exports) ids of this side's objects (it gets a
//! fresh id each time one reaches it): a result that would give it more is rejected
//! as `Overloaded`, as the actor refuses one. A value
//! with the resolutions of its promises put in stays within a message's size and
//! nesting (else its call is rejected saying so). A message that is not JSON, breaks the
//! protocol or goes over a limit ends that session with an `["abort", error]` saying
//! why; other sessions are not affected. Every other guarantee of a farcall
//! connection holds.
//!
//! # What is supported
//!
//! Calls by method name with positional arguments (trailing ones may be left out
//! when their type is an `Option`); results and errors; functions and `RpcTarget`s
//! passed as arguments (as `Callback`s or as client types); client types and
//! callbacks returned (as stubs); pipelining on results and on stubs; property
//! paths on results, also pipelined: reads (`await api.team().stats.label`, a
//! missing property being `undefined`), reads of objects, which arrive as stubs
//! (`await api.team().lead`), and calls through a path, which go to the object it
//! reaches (`api.team().lead.increment(1)`; a path ending at a function calls it);
//! release and dispose both ways; bytes, big integers, non-finite numbers,
//! `undefined`.
//!
//! Promises passed as values: a `capnweb` client passes one (`["promise", id]`) for
//! an `RpcPromise` that is not this side's (a call on a local `RpcStub`, or on
//! another session) and settles it by itself. A call with such promises among its
//! arguments, at any depth, waits until each has resolved (a resolution may hold
//! objects, or further promises, awaited alike), then runs with the values in their
//! place; one rejecting rejects the call with its error, and what the call carried
//! is released. A promise inside a result JavaScript returns to a call Rust made is
//! awaited the same way: the result reaches Rust once its promises resolve, and one
//! rejecting fails the call as a throw does. Nothing else waits. Each promise is
//! released once settled, or with the push that carried it. A settlement of an id
//! the peer never used for a promise ends the session; of a promise released or
//! settled already, it is ignored. Over HTTP batch, a promise the request does not
//! settle rejects what waits for it when the request ends. (The `capnweb` 0.12
//! client cannot send a native `Promise` at all: it throws "Cannot serialize value";
//! await it first.)
//!
//! A call by one name on a result (`api.counter(1).increment(2)`) goes to the
//! result's object (its first, when it holds several), as farcall pipelines; a
//! function in a field of a returned struct is called through a longer path, or
//! once the struct is awaited.
//!
//! Streams, both ways: a [`Stream<T>`](crate::Stream) or
//! [`ByteStream`](crate::ByteStream) sent to the peer is a `ReadableStream` there
//! (this side opens a pipe on the peer and writes the items into it), and a
//! `ReadableStream` the peer sends is one here. Flow control holds end to end:
//! credit counts items on these sessions (a peer cannot size a value as Rust types
//! do); at most 64 writes wait for the peer's reader, and the peer's writes are
//! acknowledged only as the Rust reader's window lets them through (64 items,
//! growing to 1024). A writer that ignores acknowledgements beyond 32 MiB, or more
//! than 1024 open pipes, ends the session with the reason. Streams may sit anywhere
//! in a value, and a property path may reach one (`await api.pair().numbers`); a
//! stream is read once, so read again it arrives aborted, saying so. A stream
//! passed on between a Cap'n Web session and a farcall connection (a gateway) is
//! read and served again by this side, typed: its own `start` and `credit` calls
//! cannot be read across the two codecs.
//!
//! A [`StreamSender<T>`](crate::StreamSender) is a `WritableStream`, both ways (and
//! a [`ByteWriter`](crate::ByteWriter) one of `Uint8Array` chunks). One
//! the peer passes (`["writable", e]`) is written by the Rust sender within the same
//! window of acknowledged writes, closed when the last sender is dropped, aborted
//! with the reason by [`fail`](crate::StreamSender::fail); the peer's export is
//! released only after that, so the peer does not abort it early. One Rust sends is
//! a `WritableStream` this side exports: the peer's writes, `close()` and
//! `abort(reason)` reach the Rust reader as items, the end and
//! `RpcError::StreamFailed`; released without `close()`, it fails the Rust stream.
//!
//! Not supported: `.map()` (remap), streams over HTTP batch (an argument that is
//! one rejects its call saying so; one in a result is an `Error` in its place), property reads and paths on this side's objects (they have
//! methods, not properties), property paths passed as argument values, promises
//! written to a stream, calls nested inside arguments, `Date`, `Error` values,
//! `URL`, `Headers`, `Request`, `Response` and `Blob` values. A push of one of these
//! is rejected with a reason; the session goes on. A JavaScript exception thrown by
//! a function Rust called arrives as its application error, or as
//! [`RpcError::RemotePanic`](crate::RpcError::RemotePanic) with its message (as
//! above). An
//! object received from one connection and passed to a Cap'n Web peer is refused
//! (its payloads are in another codec).

mod batch;
mod translate;
mod transport;
#[cfg(feature = "websocket")]
mod websocket;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "typescript")]
pub mod typescript;

use crate::codec::AnyCodec;
use crate::connection::{Builder, Config, Connection};

pub use batch::{batch, BATCH_TIMEOUT};
pub use transport::Messages;
#[cfg(feature = "websocket")]
pub use websocket::{accept_websocket, connect_websocket, websocket};

/// The largest message taken from a peer, in bytes (the `capnweb` package's default).
pub const MAX_MESSAGE_SIZE: usize = 32 << 20;

/// The window of a stream coming from the peer, in items: where it starts, and
/// how far it may grow when the link holds the stream back.
const STREAM_WINDOW: (usize, usize) = (64, 1024);

/// How much a WebSocket session reads from its socket at a time. tungstenite's
/// default, 128 KiB, is zeroed before every read and often allocated afresh: for
/// Cap'n Web's small messages that cost more than the rest of a call.
#[cfg(any(feature = "websocket", feature = "axum"))]
const READ_BUFFER_SIZE: usize = 16 << 10;

/// The connection settings of a Cap'n Web session, from the builder's: the
/// Cap'n Web payload encoding, frames as large as a message can make, no chunks and
/// no keepalives (Cap'n Web has neither), stream windows counted in items.
/// Results the peer has not released may hold this many times
/// [`Config::max_queued_bytes`] (256 MiB by default): beyond, the session ends.
const KEPT_PER_QUEUED: usize = 32;

fn session_config(builder: &Builder) -> Config {
    let mut config = builder.current_config().clone();
    config.codec = AnyCodec::CapnWeb;
    // A frame holds a message's payload and a header.
    config.max_frame_size = MAX_MESSAGE_SIZE + (64 << 10);
    config.chunk_size = usize::MAX;
    config.keepalive = None;
    // Stream credit counts items on these sessions (see `translate/streams.rs`).
    config.stream_window = STREAM_WINDOW.0;
    config.max_stream_window = STREAM_WINDOW.1;
    config
}

/// Serves the builder's root to a Cap'n Web peer over `messages` (any carrier of
/// text messages: see [`Messages`]); the session ends when the carrier does.
pub fn connect<M: Messages>(builder: &Builder, messages: M) -> Connection {
    start(builder, messages, transport::OnEnd::Close)
}

fn start<M: Messages>(builder: &Builder, messages: M, on_end: transport::OnEnd) -> Connection {
    start_translating(builder, messages, on_end, |_| {})
}

/// Starts a session, letting `inspect` see its translator first.
fn start_translating<M: Messages>(
    builder: &Builder,
    messages: M,
    on_end: transport::OnEnd,
    inspect: impl FnOnce(&translate::Translator),
) -> Connection {
    let config = session_config(builder);
    // Pushes waiting in the translator for a result are calls waiting to start.
    let mut translator = translate::Translator::new(
        config.max_frame_size,
        translate::Limits {
            message: MAX_MESSAGE_SIZE,
            waiting: config.max_inflight_calls,
            answers: config.max_answers,
            exports: config.max_exports,
            kept: config.max_queued_bytes.saturating_mul(KEPT_PER_QUEUED),
        },
    );
    if matches!(on_end, transport::OnEnd::Settle(_)) {
        translator.refuse_streams(
            "streams do not cross an HTTP batch session (nothing flows once its response \
             is written): use a WebSocket session",
        );
    }
    inspect(&translator);
    builder
        .clone()
        .config(config)
        .connect(transport::Translating::new(messages, translator, on_end))
}

/// [`connect`], and where the translator's residue (see `Translator::residue`)
/// is kept up to date.
#[cfg(test)]
fn connect_observed<M: Messages>(
    builder: &Builder,
    messages: M,
) -> (Connection, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut observed = None;
    let conn = start_translating(builder, messages, transport::OnEnd::Close, |t| {
        observed = Some(t.observed.clone())
    });
    (conn, observed.expect("inspected"))
}

#[cfg(test)]
mod tests;
