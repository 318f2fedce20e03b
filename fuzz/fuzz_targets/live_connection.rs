//! A hostile peer: an opening message (usually valid, sometimes corrupted, of another
//! version or codec, late or missing), then a sequence of frames, mostly well-formed
//! protocol messages with fuzzer-chosen ids (sometimes corrupted), sometimes raw
//! bytes, fed to a live `Connection` serving a small root over
//! `farcall::transport::memory()`, interleaved with yields, paused-time sleeps and
//! calls the served side makes on the peer. Pipelined chains of calls go through
//! handlers that await (yield, sleep, wait on a gate, or never return), with `Finish`
//! frames, duplicate question ids and promises of running answers passed as
//! arguments.
//!
//! Each input runs in its own current-thread tokio runtime with paused time, and
//! everything is bounded: the steps run under a 300 ms (paused) time limit, then the
//! peer hangs up and the connection must end within 10 s (paused) with a reason that
//! is not "connection task stopped" (which is what a panic in its task would leave),
//! that names a bad opening message if the peer sent one, and after which every
//! object the root handed out (and the root) has been dropped.
//! Any panic aborts the process (libfuzzer-sys installs an aborting panic hook).
//!
//! Frames are built from the runtime's own wire types (`Header`, `WireError`, ...),
//! which derive `Arbitrary` in `--cfg fuzzing` builds and are re-exported as
//! `farcall::__private::fuzz`, so the target cannot drift from the protocol.

#![no_main]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use farcall::__private::fuzz::{
    self, codec_number, CapDescriptor, Header, Target, WireError, HELLO_MAGIC, PROTOCOL_VERSION,
};
use farcall::transport::{memory, MemoryTransport};
use farcall::{AnyCodec, Callback, Connection, RemoteClient};
use futures_util::{FutureExt, SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::yield_now;

#[farcall::remote]
trait Root {
    /// Returns its argument (large ones go out in chunks).
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns a new object (a capability exported to the caller).
    async fn make(&self) -> RootClient;
    /// Calls the caller's callback with `x` and returns what it answered.
    async fn with_callback(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String>;
    /// Returns a new object after awaiting (see [`pause`]).
    async fn child(&self, wait: u8) -> RootClient;
    /// Returns a new object once a `Notify` step opens the gate.
    async fn gated(&self) -> RootClient;
    /// Never returns.
    async fn never(&self) -> RootClient;
    /// Calls `other.child(wait - 1)` and returns what that returned, or `other` itself
    /// if `wait` is 0: a call on a capability received as an argument.
    async fn relay(&self, other: RootClient, wait: u8) -> RootClient;
    /// Returns a new object after `ms` ms; runs to completion even when its caller
    /// finishes early (its result is then dropped).
    #[farcall(no_cancel)]
    async fn settle(&self, ms: u8) -> RootClient;
    /// One way: awaits (see [`pause`]), returns nothing.
    #[farcall(oneway)]
    async fn nudge(&self, wait: u8);
}

/// What the objects of one run share: how many are alive, and the gate of `gated`.
#[derive(Default)]
struct Env {
    live: AtomicUsize,
    gate: Notify,
}

/// An object served by the connection; counted in `Env::live` while it exists.
struct Node(Arc<Env>);

impl Node {
    fn new(env: &Arc<Env>) -> Self {
        env.live.fetch_add(1, Ordering::SeqCst);
        Node(env.clone())
    }

    fn another(&self) -> RootClient {
        RootClient::from_local(Node::new(&self.0))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Below 128: yields `wait` times; from 128: sleeps `wait - 128` ms (paused time).
async fn pause(wait: u8) {
    if wait < 128 {
        for _ in 0..wait {
            yield_now().await;
        }
    } else {
        tokio::time::sleep(Duration::from_millis(u64::from(wait - 128))).await;
    }
}

impl Root for Node {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn make(&self) -> RootClient {
        self.another()
    }
    async fn with_callback(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String> {
        cb.call(x).await.map_err(|e| e.to_string())
    }
    async fn child(&self, wait: u8) -> RootClient {
        pause(wait).await;
        self.another()
    }
    async fn gated(&self) -> RootClient {
        self.0.gate.notified().await;
        self.another()
    }
    async fn never(&self) -> RootClient {
        std::future::pending().await
    }
    async fn relay(&self, other: RootClient, wait: u8) -> RootClient {
        if wait == 0 {
            return other;
        }
        match other.child(wait - 1).await {
            Ok(next) => next,
            Err(_) => self.another(),
        }
    }
    async fn settle(&self, ms: u8) -> RootClient {
        tokio::time::sleep(Duration::from_millis(ms.into())).await;
        self.another()
    }
    async fn nudge(&self, wait: u8) {
        pause(wait).await;
    }
}

/// The wire id of one of the root's methods.
fn method_id(name: &str) -> u32 {
    <RootClient as RemoteClient>::INTERFACE
        .methods
        .iter()
        .find(|m| m.name == name)
        .expect("a method of Root")
        .id
}

/// An id for the script's own choices (a chain's target, a descriptor, a question):
/// drawn as the wire types' ids are (`farcall::__private::fuzz::id`), mostly small,
/// sometimes extreme.
#[derive(Debug, Clone, Copy)]
struct Id(u64);

impl<'a> Arbitrary<'a> for Id {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        fuzz::id(u).map(Id)
    }
}

/// A method id: one of the root's or the callback's, or `any`.
fn aim_method(
    u: &mut Unstructured<'_>,
    any: impl FnOnce(&mut Unstructured<'_>) -> arbitrary::Result<u32>,
) -> arbitrary::Result<u32> {
    let methods = <RootClient as RemoteClient>::INTERFACE.methods;
    let pick = u.int_in_range(0..=methods.len() + 1)?;
    Ok(match methods.get(pick) {
        Some(method) => method.id,
        None if pick == methods.len() => 1, // `Callback::call`
        None => any(u)?,
    })
}

/// A method id drawn by [`aim_method`].
#[derive(Debug, Clone, Copy)]
struct MethodId(u32);

impl<'a> Arbitrary<'a> for MethodId {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        aim_method(u, |u| u.arbitrary()).map(MethodId)
    }
}

/// A real [`Header`] (the runtime's own, deriving `Arbitrary` under `cfg(fuzzing)`),
/// aimed at the root: a call's method is mostly one of the root's (see
/// [`aim_method`]), a bootstrap usually names the root's interface.
#[derive(Debug, Clone)]
struct Aimed(Header);

impl<'a> Arbitrary<'a> for Aimed {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut header = Header::arbitrary(u)?;
        aim(&mut header, u)?;
        Ok(Aimed(header))
    }
}

fn aim(header: &mut Header, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    match header {
        Header::Bootstrap {
            interface,
            fingerprint,
            ..
        } => {
            let root = <RootClient as RemoteClient>::INTERFACE;
            match u.int_in_range(0u8..=3)? {
                0 | 1 => {
                    *interface = root.name.into();
                    *fingerprint = root.fingerprint;
                }
                2 => *interface = root.name.into(),
                _ => {}
            }
        }
        Header::Call { method, .. } => {
            let any = *method;
            *method = aim_method(u, |_| Ok(any))?;
        }
        Header::Foreign { header, .. } => aim(header, u)?,
        _ => {}
    }
    Ok(())
}

/// A frame's payload. Capabilities in a payload are `u32` indexes into the header's
/// descriptors, so `Plain` is also a returned capability.
#[derive(Debug, Clone, Arbitrary)]
enum Payload {
    /// `()`: bootstrap and `make` arguments, `Finish`, `Release`...
    Unit,
    /// `(Vec<u8>,)`: `echo`'s arguments.
    Echo(Vec<u8>),
    /// `(Vec<u8>,)` of `len` bytes: `echo`'s arguments, large.
    BigEcho { len: u16, fill: u8 },
    /// `(u32, u32)`: `with_callback`'s arguments (capability index, value).
    Two(u32, u32),
    /// `u32`: a value, a callback's argument, or a returned capability's index.
    Plain(u32),
    /// `Vec<u8>`: what `echo` returns.
    Bytes(Vec<u8>),
    /// A `Failed` return's error.
    Error(WireError),
    /// An application error or a wrongly typed value.
    Text(String),
    /// Anything.
    Raw(Vec<u8>),
}

impl Payload {
    fn encode(&self, codec: AnyCodec, out: &mut Vec<u8>) {
        let _ = match self {
            Payload::Unit => codec.encode(&(), out),
            Payload::Echo(data) => codec.encode(&(data,), out),
            Payload::BigEcho { len, fill } => codec.encode(&(vec![*fill; *len as usize],), out),
            Payload::Two(cap, x) => codec.encode(&(cap, x), out),
            Payload::Plain(x) => codec.encode(x, out),
            Payload::Bytes(data) => codec.encode(data, out),
            Payload::Error(e) => codec.encode(e, out),
            Payload::Text(s) => codec.encode(s, out),
            Payload::Raw(bytes) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        };
    }
}

/// Something the served side does through its `Connection` handle, on a spawned task.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Local {
    /// Asks the peer for its root and keeps it for the calls below.
    Bootstrap,
    /// `root.echo(...)` with `len` bytes (large ones go out in chunks).
    Echo(u16),
    /// `root.make().echo(...)`, pipelined, with `len` bytes.
    Pipelined(u16),
    /// `root.make()`, then replaces the kept root with what it returned.
    Descend,
    /// `root.with_callback(cb, x)` with a local callback.
    PassCallback(u32),
    /// `root.child(wait)` pipelined `depth % 8 + 1` times, then `.echo(...)`.
    Deep { depth: u8, wait: u8 },
    /// `conn.stats()`.
    Stats,
    /// Closes gracefully.
    Close,
    /// Aborts.
    Abort,
}

/// A question id picked when the step runs: one of the ids this script's calls used
/// (`Recent(0)` the latest: in a call's own descriptors, that call's id), one it has
/// not used yet (`Ahead(0)` the next), or any id.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Recent(u8),
    Ahead(u8),
    Any(Id),
}

impl<'a> Arbitrary<'a> for Asked {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0u8..=15)? {
            0..=12 => Asked::Recent(u.int_in_range(0..=7)?),
            13 => Asked::Ahead(u.int_in_range(0..=3)?),
            _ => Asked::Any(u.arbitrary()?),
        })
    }
}

/// A capability passed in a call, as its descriptor: mostly the promise of an answer
/// asked before (running, waiting or done).
#[derive(Debug, Clone, Copy)]
enum Pass {
    Answer(Asked),
    Root,
    Hosted(Id),
    Sender(Id),
}

impl<'a> Arbitrary<'a> for Pass {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0u8..=7)? {
            0..=4 => Pass::Answer(u.arbitrary()?),
            5 => Pass::Root,
            6 => Pass::Hosted(u.arbitrary()?),
            _ => Pass::Sender(u.arbitrary()?),
        })
    }
}

/// The method a link of a chain calls, with well-formed arguments (but `Other`).
#[derive(Debug, Clone, Arbitrary)]
enum Method {
    Child(u8),
    Gated,
    Never,
    Make,
    Settle(u8),
    Relay(Pass, u8),
    Echo(Vec<u8>),
    WithCallback(Pass, u32),
    Nudge(u8),
    /// Any method id with any payload.
    Other(MethodId, Payload),
}

/// The question id of a link.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// A new id (most links).
    Fresh,
    /// A one-way call.
    OneWay,
    /// An id used before: a duplicate if that question is still in the answer table.
    Reuse(Asked),
    /// Any id.
    Any(Id),
}

impl<'a> Arbitrary<'a> for Ask {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0u8..=31)? {
            0..=26 => Ask::Fresh,
            27..=28 => Ask::OneWay,
            29..=30 => Ask::Reuse(u.arbitrary()?),
            _ => Ask::Any(u.arbitrary()?),
        })
    }
}

/// One call of a pipelined chain.
#[derive(Debug, Clone, Arbitrary)]
struct Link {
    method: Method,
    question: Ask,
    /// Descriptors appended after the method's own (at most two are used): the call
    /// waits for every answer among them.
    extra: Vec<Pass>,
    /// Sends `Finish` for this link's question once the whole chain is sent.
    finish: bool,
    /// Lets the tasks run after this link.
    pause: bool,
}

/// What the first link of a chain calls.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Start {
    Root,
    Export(Id),
    /// Continues a chain sent before.
    Answer(Asked),
}

/// Longest chain sent by one step.
const MAX_LINKS: usize = 8;

#[derive(Debug, Clone, Arbitrary)]
enum Step {
    /// A well-formed frame, maybe with one bit flipped (at `flip.0 % len`).
    Frame {
        header: Aimed,
        payload: Payload,
        flip: Option<(u16, u8)>,
    },
    /// Raw bytes as a frame.
    Raw(Vec<u8>),
    /// A well-formed frame sent in chunks, cut after each `cuts` byte count (at least
    /// one chunk); the last chunk is marked last only if `finish`.
    Chunked {
        header: Aimed,
        payload: Payload,
        stream: u8,
        cuts: Vec<u16>,
        finish: bool,
    },
    /// One chunk of anything.
    Chunk {
        data: Vec<u8>,
        stream: u8,
        flags: u8,
    },
    /// Lets the tasks run this many times (mod 16).
    Yield(u8),
    /// Sleeps this many milliseconds of paused time.
    Sleep(u8),
    /// The served side acts.
    Local(Local),
    /// A pipelined chain: each link after the first calls the answer of the one
    /// before (or, after a one-way link, the same target again).
    Chain { start: Start, links: Vec<Link> },
    /// `Finish` for a question this script asked (maybe still running or waiting).
    Finish(Asked),
    /// `Disembargo` (not reflected) on a question this script asked.
    Disembargo(Asked),
    /// Opens the gate of `gated`: for every waiter, or one (or the next) waiter.
    Notify { all: bool },
}

/// The largest frame the peer's opening message accepts.
#[derive(Debug, Clone, Copy)]
struct Limit(u64);

impl<'a> Arbitrary<'a> for Limit {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Limit(match u.int_in_range(0u8..=7)? {
            0..=5 => 16 << 20,
            6 => u.int_in_range(0..=2048)?,
            _ => u.arbitrary()?,
        }))
    }
}

/// The peer's opening message (see `runtime/src/wire.rs`, `Hello`), made wrong.
#[derive(Debug, Clone, Arbitrary)]
enum BadHello {
    Version(u16),
    Codec(u8),
    /// One bit flipped at `.0 % len`.
    Flip(u16, u8),
    /// Cut to this many bytes (mod its length).
    Truncate(u8),
    /// A valid one, sent as a chunk.
    Chunked,
    /// An ordinary frame (a `Ping`).
    Ping,
    /// Anything.
    Raw(Vec<u8>),
    /// Anything ending in the opening mark.
    Marked(Vec<u8>),
}

/// What the peer opens with.
#[derive(Debug, Clone)]
enum Opening {
    /// A valid opening message (most inputs), with `extra` bytes of fields a later
    /// version might add.
    Valid { limit: Limit, extra: Vec<u8> },
    /// An opening message that is probably not acceptable.
    Bad(BadHello),
    /// No opening message: the steps' first frame is the peer's first.
    Missing,
    /// A valid opening message, sent after `.0 % 8` steps.
    Late(u8),
}

impl<'a> Arbitrary<'a> for Opening {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0u8..=15)? {
            0..=11 => Opening::Valid {
                limit: u.arbitrary()?,
                extra: if u.ratio(1u8, 8)? {
                    u.arbitrary()?
                } else {
                    Vec::new()
                },
            },
            12 | 13 => Opening::Bad(u.arbitrary()?),
            14 => Opening::Missing,
            _ => Opening::Late(u.arbitrary()?),
        })
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    codec: u8,
    /// Bit 0: small limits; 1: call timeout; 2: keepalive; 3: idle timeout; 4: small
    /// frame limit; 5: redact panics; 6: smallest chunk size (1 KiB).
    options: u8,
    opening: Opening,
    steps: Vec<Step>,
}

const HELLO_MARK: [u8; 2] = fuzz::HELLO_MARK.to_le_bytes();

fn hello(version: u16, codec: u8, limit: u64, extra: &[u8]) -> Vec<u8> {
    let mut buf = HELLO_MAGIC.to_vec();
    buf.extend_from_slice(&version.to_le_bytes());
    buf.push(codec);
    buf.extend_from_slice(&limit.to_le_bytes());
    buf.extend_from_slice(extra);
    buf.extend_from_slice(&HELLO_MARK);
    buf
}

impl BadHello {
    fn bytes(&self, codec: AnyCodec) -> Vec<u8> {
        let ours = codec_number(codec);
        let good = || hello(PROTOCOL_VERSION, ours, 16 << 20, &[]);
        match self {
            BadHello::Version(v) => hello(*v, ours, 16 << 20, &[]),
            BadHello::Codec(c) => hello(PROTOCOL_VERSION, *c, 16 << 20, &[]),
            BadHello::Flip(at, bit) => {
                let mut buf = good();
                let at = *at as usize % buf.len();
                buf[at] ^= 1 << (bit % 8);
                buf
            }
            BadHello::Truncate(len) => {
                let mut buf = good();
                buf.truncate(*len as usize % buf.len());
                buf
            }
            BadHello::Chunked => chunk(good(), 0, 1),
            BadHello::Ping => frame(codec, &Header::Ping, &Payload::Unit, None),
            BadHello::Raw(bytes) => bytes.clone(),
            BadHello::Marked(bytes) => {
                let mut buf = bytes.clone();
                buf.extend_from_slice(&HELLO_MARK);
                buf
            }
        }
    }
}

/// What must be said about `frame` as the peer's first: `None` if it is an acceptable
/// opening message for `codec`, else a fragment of the reason the connection must
/// close with. Mirrors `Hello::decode` and `Hello::mismatch`.
fn verdict(frame: &[u8], codec: AnyCodec) -> Option<&'static str> {
    let len = frame.len();
    if len < HELLO_MAGIC.len() + 11 + 2
        || frame[len - 2..] != HELLO_MARK
        || !frame.starts_with(HELLO_MAGIC)
    {
        return Some("opening message");
    }
    if u16::from_le_bytes([frame[8], frame[9]]) != PROTOCOL_VERSION {
        return Some("protocol version");
    }
    if frame[10] != codec_number(codec) {
        return Some("codec");
    }
    None
}

fn build(codec: AnyCodec, options: u8, root: Node) -> farcall::Builder {
    let mut builder = Connection::builder()
        .codec(codec)
        .root(RootServer::new(root))
        .handshake_timeout(Duration::from_millis(200));
    if options & 1 != 0 {
        builder = builder
            .max_inflight_calls(2)
            .max_answers(3)
            .max_exports(2)
            .max_queued_bytes(512);
    }
    if options & 2 != 0 {
        builder = builder.call_timeout(Some(Duration::from_millis(20)));
    }
    if options & 4 != 0 {
        builder = builder.keepalive(Some(Duration::from_millis(10)));
    }
    if options & 8 != 0 {
        builder = builder.idle_timeout(Some(Duration::from_millis(50)));
    }
    if options & 16 != 0 {
        builder = builder.max_frame_size(64);
    }
    if options & 64 != 0 {
        builder = builder.chunk_size(1024);
    }
    builder.expose_panics(options & 32 == 0)
}

/// Appends a chunk trailer: stream id, flags, and the chunk mark.
fn chunk(mut data: Vec<u8>, stream: u8, flags: u8) -> Vec<u8> {
    data.extend_from_slice(&u32::from(stream).to_le_bytes());
    data.push(flags);
    data.extend_from_slice(&[0xFF, 0xFF]);
    data
}

fn frame(codec: AnyCodec, header: &Header, payload: &Payload, flip: Option<(u16, u8)>) -> Vec<u8> {
    let mut buf = Vec::new();
    payload.encode(codec, &mut buf);
    seal(codec, header, buf, flip)
}

/// Completes a frame: appends the header and its length to the encoded payload (an
/// empty frame if the header is too long), then flips a bit if asked to.
fn seal(codec: AnyCodec, header: &Header, buf: Vec<u8>, flip: Option<(u16, u8)>) -> Vec<u8> {
    let mut buf = fuzz::encode_frame(codec, header, buf).unwrap_or_default();
    if let (Some((at, bit)), false) = (flip, buf.is_empty()) {
        let at = at as usize % buf.len();
        buf[at] ^= 1 << (bit % 8);
    }
    buf
}

fn args<T: Serialize>(codec: AnyCodec, args: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = codec.encode(args, &mut buf);
    buf
}

/// The peer's side of the transport, and what the checks need to know about it.
struct Peer {
    io: MemoryTransport,
    codec: AnyCodec,
    /// The first frame it sent, and whether the connection was still open then.
    first: Option<(Vec<u8>, bool)>,
    /// The first frame the connection sent.
    received: Option<Vec<u8>>,
    /// The question ids of the calls this script sent, in order.
    asked: Vec<u64>,
    next_question: u64,
    /// Whether every question the connection may hold an answer for is in `asked`,
    /// and nothing but those questions can keep an answer: no frames from the plain
    /// steps (their ids are not tracked), no reused or arbitrary ids, no one-way calls
    /// (a one-way call waiting on an answer keeps it, by design, and cannot be
    /// finished).
    tracked: bool,
}

impl Peer {
    async fn send(&mut self, conn: &Connection, bytes: Vec<u8>) {
        if self.first.is_none() {
            self.first = Some((bytes.clone(), !conn.is_closed()));
        }
        let _ = self.io.send(bytes.into()).await;
    }

    /// Reads and drops whatever the connection sent so far (keeping the first).
    fn drain(&mut self) {
        while let Some(Some(frame)) = self.io.next().now_or_never() {
            if let (None, Ok(frame)) = (&self.received, frame) {
                self.received = Some(frame.to_vec());
            }
        }
    }

    fn recall(&self, asked: Asked) -> u64 {
        match asked {
            Asked::Recent(back) if !self.asked.is_empty() => {
                self.asked[self.asked.len() - 1 - back as usize % self.asked.len()]
            }
            Asked::Recent(_) => 0,
            Asked::Ahead(ahead) => self.next_question + u64::from(ahead),
            Asked::Any(id) => id.0,
        }
    }

    fn fresh(&mut self) -> u64 {
        // Above the ids `Id` usually picks, so that plain frames rarely collide.
        let question = self.next_question;
        self.next_question += 1;
        self.asked.push(question);
        question
    }

    fn descriptor(&self, pass: Pass) -> CapDescriptor {
        match pass {
            Pass::Answer(asked) => CapDescriptor::ReceiverAnswer(self.recall(asked)),
            Pass::Root => CapDescriptor::ReceiverHosted(0),
            Pass::Hosted(id) => CapDescriptor::ReceiverHosted(id.0),
            Pass::Sender(id) => CapDescriptor::SenderHosted(id.0),
        }
    }

    /// The frame of one link of a chain.
    fn call(&mut self, question: Option<u64>, target: Target, link: &Link) -> Vec<u8> {
        let codec = self.codec;
        let mut caps = Vec::new();
        let (method, payload) = match &link.method {
            Method::Child(wait) => (method_id("child"), args(codec, &(wait,))),
            Method::Gated => (method_id("gated"), args(codec, &())),
            Method::Never => (method_id("never"), args(codec, &())),
            Method::Make => (method_id("make"), args(codec, &())),
            Method::Settle(ms) => (method_id("settle"), args(codec, &(ms,))),
            Method::Relay(pass, wait) => {
                caps.push(self.descriptor(*pass));
                (method_id("relay"), args(codec, &(0u32, wait)))
            }
            Method::Echo(data) => (method_id("echo"), args(codec, &(data,))),
            Method::WithCallback(pass, x) => {
                caps.push(self.descriptor(*pass));
                (method_id("with_callback"), args(codec, &(0u32, x)))
            }
            Method::Nudge(wait) => (method_id("nudge"), args(codec, &(wait,))),
            Method::Other(method, payload) => {
                let mut buf = Vec::new();
                payload.encode(codec, &mut buf);
                (method.0, buf)
            }
        };
        caps.extend(link.extra.iter().take(2).map(|&pass| self.descriptor(pass)));
        let header = Header::Call {
            question,
            target,
            method,
            caps,
        };
        seal(codec, &header, payload, None)
    }
}

type Kept = Arc<Mutex<Option<RootClient>>>;

fn local(conn: &Connection, kept: &Kept, op: Local) {
    let conn = conn.clone();
    let kept = kept.clone();
    let root = kept.lock().unwrap().clone();
    // The results do not matter, only that nothing panics.
    tokio::spawn(async move {
        match (op, root) {
            (Local::Bootstrap, _) => {
                if let Ok(root) = conn.root::<RootClient>().await {
                    *kept.lock().unwrap() = Some(root);
                }
            }
            (Local::Echo(len), Some(root)) => {
                let _ = root.echo(vec![7; len.into()]).await;
            }
            (Local::Pipelined(len), Some(root)) => {
                let _ = root.make().echo(vec![7; len.into()]).await;
            }
            (Local::Descend, Some(root)) => {
                if let Ok(next) = root.make().await {
                    *kept.lock().unwrap() = Some(next);
                }
            }
            (Local::PassCallback(x), Some(root)) => {
                let cb = Callback::new(|v: u32| async move { v.wrapping_add(1) });
                let _ = root.with_callback(cb, x).await;
            }
            (Local::Deep { depth, wait }, Some(root)) => {
                let mut promise = root.child(wait);
                for _ in 0..depth % 8 {
                    let next = promise.child(wait);
                    promise = next;
                }
                let _ = promise.echo(Vec::new()).await;
            }
            (Local::Stats, _) => {
                let _ = conn.stats().await;
            }
            (Local::Close, _) => conn.close().await,
            (Local::Abort, _) => conn.abort().await,
            (_, None) => {}
        }
    });
}

async fn run(input: Input) {
    let codec = AnyCodec::ALL[input.codec as usize % AnyCodec::ALL.len()];
    let small_limits = input.options & 1 != 0;
    let env = Arc::new(Env::default());
    let (ours, io) = memory();
    // The builder (and with it a reference to the root) is dropped at once.
    let conn = build(codec, input.options, Node::new(&env)).connect(ours);
    let kept: Kept = Arc::default();
    let mut peer = Peer {
        io,
        codec,
        first: None,
        received: None,
        asked: Vec::new(),
        next_question: 7,
        tracked: true,
    };

    let ours_hello =
        |limit: Limit, extra: &[u8]| hello(PROTOCOL_VERSION, codec_number(codec), limit.0, extra);
    let late = match &input.opening {
        Opening::Valid { limit, extra } => {
            let extra = &extra[..extra.len().min(16)];
            peer.send(&conn, ours_hello(*limit, extra)).await;
            None
        }
        Opening::Bad(bad) => {
            peer.send(&conn, bad.bytes(codec)).await;
            None
        }
        Opening::Missing => None,
        Opening::Late(after) => Some(*after as usize % 8),
    };
    yield_now().await;

    let steps = async {
        for (index, step) in input.steps.into_iter().enumerate() {
            if late == Some(index) {
                peer.send(&conn, ours_hello(Limit(16 << 20), &[])).await;
                yield_now().await;
            }
            let untracked = match step {
                Step::Frame { .. } | Step::Raw(_) | Step::Chunked { .. } | Step::Chunk { .. } => {
                    true
                }
                _ => false,
            };
            if untracked {
                peer.tracked = false;
            }
            match step {
                Step::Frame {
                    header,
                    payload,
                    flip,
                } => {
                    peer.send(&conn, frame(codec, &header.0, &payload, flip))
                        .await;
                    yield_now().await;
                }
                Step::Raw(bytes) => {
                    peer.send(&conn, bytes).await;
                    yield_now().await;
                }
                Step::Chunked {
                    header,
                    payload,
                    stream,
                    cuts,
                    finish,
                } => {
                    let whole = frame(codec, &header.0, &payload, None);
                    let mut rest = &whole[..];
                    let mut cuts = cuts.into_iter();
                    loop {
                        let at = cuts.next().map_or(rest.len(), usize::from).min(rest.len());
                        let (piece, after) = rest.split_at(at);
                        rest = after;
                        let last = rest.is_empty() && finish;
                        peer.send(&conn, chunk(piece.to_vec(), stream, last.into()))
                            .await;
                        yield_now().await;
                        if rest.is_empty() {
                            break;
                        }
                    }
                }
                Step::Chunk {
                    data,
                    stream,
                    flags,
                } => {
                    peer.send(&conn, chunk(data, stream, flags)).await;
                    yield_now().await;
                }
                Step::Yield(n) => {
                    for _ in 0..n % 16 {
                        yield_now().await;
                    }
                }
                Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
                Step::Local(op) => {
                    local(&conn, &kept, op);
                    yield_now().await;
                }
                Step::Chain { start, links } => {
                    let mut target = match start {
                        Start::Root => Target::Export(0),
                        Start::Export(id) => Target::Export(id.0),
                        Start::Answer(asked) => Target::Answer(peer.recall(asked)),
                    };
                    let mut finish = Vec::new();
                    for link in links.iter().take(MAX_LINKS) {
                        if !matches!(link.question, Ask::Fresh) {
                            peer.tracked = false;
                        }
                        let question = match link.question {
                            Ask::Fresh => Some(peer.fresh()),
                            Ask::OneWay => None,
                            Ask::Reuse(asked) => Some(peer.recall(asked)),
                            Ask::Any(id) => {
                                peer.asked.push(id.0);
                                Some(id.0)
                            }
                        };
                        let bytes = peer.call(question, target, link);
                        peer.send(&conn, bytes).await;
                        if link.pause {
                            yield_now().await;
                        }
                        if let Some(question) = question {
                            target = Target::Answer(question);
                            if link.finish {
                                finish.push(question);
                            }
                        }
                    }
                    for question in finish {
                        let header = Header::Finish { question };
                        peer.send(&conn, frame(codec, &header, &Payload::Unit, None))
                            .await;
                    }
                    yield_now().await;
                }
                Step::Finish(asked) => {
                    let header = Header::Finish {
                        question: peer.recall(asked),
                    };
                    peer.send(&conn, frame(codec, &header, &Payload::Unit, None))
                        .await;
                    yield_now().await;
                }
                Step::Disembargo(asked) => {
                    let header = Header::Disembargo {
                        question: peer.recall(asked),
                        reflected: false,
                    };
                    peer.send(&conn, frame(codec, &header, &Payload::Unit, None))
                        .await;
                    yield_now().await;
                }
                Step::Notify { all: true } => env.gate.notify_waiters(),
                Step::Notify { all: false } => env.gate.notify_one(),
            }
            peer.drain();
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), steps).await;

    // A connection still up must still answer, within its limits.
    if !conn.is_closed() {
        let stats = tokio::time::timeout(Duration::from_secs(10), conn.stats()).await;
        let Ok(stats) = stats else {
            panic!("a live connection did not answer stats() in 10 s");
        };
        if let (true, Ok(stats)) = (small_limits, stats) {
            assert!(
                stats.answers <= 3 && stats.exports <= 2,
                "over the limits (3 answers, 2 exports): {stats:?}"
            );
        }
    }
    // Once the peer has finished every question it asked, nothing is left in the
    // answer table: running handlers are stopped, waiting calls and kept results
    // freed, however the calls depended on each other.
    if peer.tracked && !conn.is_closed() {
        let mut asked = std::mem::take(&mut peer.asked);
        asked.sort_unstable();
        asked.dedup();
        for question in asked {
            let header = Header::Finish { question };
            peer.send(&conn, frame(codec, &header, &Payload::Unit, None))
                .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.drain();
        if !conn.is_closed() {
            let stats = tokio::time::timeout(Duration::from_secs(10), conn.stats()).await;
            if let Ok(Ok(stats)) = stats {
                assert_eq!(
                    stats.answers, 0,
                    "answers left after the peer finished every question: {stats:?}"
                );
            }
        }
    }

    // Its own opening message comes first.
    peer.drain();
    if let Some(first) = &peer.received {
        assert_eq!(verdict(first, codec), None, "the connection's first frame");
    }

    // The peer hangs up; the connection must end, for a reason that fits.
    let first = peer.first.take();
    drop(peer);
    drop(kept);
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the connection did not end within 10 s of the peer hanging up");
    let reason = conn
        .close_reason()
        .expect("a closed connection has a reason");
    assert!(
        reason != farcall::CloseReason::TaskStopped,
        "the connection task died"
    );
    let locally = matches!(
        reason,
        farcall::CloseReason::ClosedLocally | farcall::CloseReason::AbortedLocally
    );
    let text = reason.to_string();
    if let Some((first, true)) = first {
        match verdict(&first, codec) {
            // A local close or abort may have come first.
            Some(why) => assert!(
                text.contains(why) || locally,
                "the peer's first frame was not an acceptable opening message \
                 ({why}), yet the connection ended with: {reason}"
            ),
            // (The peer's own `Abort` may say anything.)
            None => assert!(
                matches!(reason, farcall::CloseReason::PeerAborted(_))
                    || !(text.contains("opening message")
                        || text.contains("protocol version")
                        || matches!(reason, farcall::CloseReason::HandshakeTimeout(_))),
                "the peer opened correctly, yet the connection ended with: {reason}"
            ),
        }
    }

    // Everything it held goes with it: the task lingers at most 2 s, the handlers it
    // aborted are dropped at their next poll, `settle` runs out within 255 ms, and
    // nothing else keeps a `Node`.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let live = env.live.load(Ordering::SeqCst);
    assert_eq!(
        live, 0,
        "{live} served objects outlived the connection (reason: {reason})"
    );
}

fuzz_target!(|input: Input| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(run(input));
});
