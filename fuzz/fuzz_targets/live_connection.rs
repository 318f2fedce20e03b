//! A hostile peer: a sequence of frames, mostly well-formed protocol messages with
//! fuzzer-chosen ids (sometimes corrupted), sometimes raw bytes, fed to a live
//! `Connection` serving a small root over `farcall::transport::memory()`, interleaved
//! with yields, paused-time sleeps and calls the served side makes on the peer.
//!
//! Each input runs in its own current-thread tokio runtime with paused time, and
//! everything is bounded: the steps run under a 300 ms (paused) time limit, then the
//! peer hangs up and the connection must end within 10 s (paused) with a reason that
//! is not "connection task stopped" (which is what a panic in its task would leave).
//! Any panic aborts the process (libfuzzer-sys installs an aborting panic hook).

#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use farcall::transport::{memory, MemoryTransport};
use farcall::{AnyCodec, Callback, Connection, RemoteClient};
use futures_util::{FutureExt, SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;

#[farcall::remote]
trait Root {
    /// Returns its argument (large ones go out in chunks).
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns a new object (a capability exported to the caller).
    async fn make(&self) -> RootClient;
    /// Calls the caller's callback with `x` and returns what it answered.
    async fn with_callback(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String>;
}

struct Node;

impl Root for Node {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn make(&self) -> RootClient {
        RootClient::from_local(Node)
    }
    async fn with_callback(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String> {
        cb.call(x).await.map_err(|e| e.to_string())
    }
}

// Mirrors of the private wire types (`runtime/src/wire.rs`, `runtime/src/error.rs`):
// same variants in the same order with the same field names, so they encode
// identically in every codec.

/// An id: mostly small (ids are allocated from 0 or 1 upwards), sometimes extreme.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
struct Id(u64);

impl<'a> Arbitrary<'a> for Id {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Id(match u.int_in_range(0u8..=7)? {
            0..=5 => u.int_in_range(0..=6)?,
            6 => u64::MAX - u.int_in_range(0..=1)?,
            _ => u.arbitrary()?,
        }))
    }
}

/// A method id: one of the root's or the callback's, or any.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
struct MethodId(u32);

impl<'a> Arbitrary<'a> for MethodId {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let methods = <RootClient as RemoteClient>::INTERFACE.methods;
        let pick = u.int_in_range(0..=methods.len() + 1)?;
        Ok(MethodId(match methods.get(pick) {
            Some(method) => method.id,
            None if pick == methods.len() => 1, // `Callback::call`
            None => u.arbitrary()?,
        }))
    }
}

/// An interface name and fingerprint, usually the root's.
#[derive(Debug, Clone, Serialize)]
struct Expected(String, u64);

impl<'a> Arbitrary<'a> for Expected {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let root = <RootClient as RemoteClient>::INTERFACE;
        Ok(match u.int_in_range(0u8..=3)? {
            0 | 1 => Expected(root.name.into(), root.fingerprint),
            2 => Expected(root.name.into(), u.arbitrary()?),
            _ => Expected(u.arbitrary()?, u.arbitrary()?),
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Arbitrary)]
enum Target {
    Export(Id),
    Answer(Id),
}

#[derive(Debug, Clone, Copy, Serialize, Arbitrary)]
enum CapDescriptor {
    SenderHosted(Id),
    ReceiverHosted(Id),
    ReceiverAnswer(Id),
}

#[derive(Debug, Clone, Copy, Serialize, Arbitrary)]
enum Outcome {
    Value,
    AppError,
    Failed,
}

#[derive(Debug, Clone, Arbitrary)]
enum Header {
    Bootstrap {
        question: Id,
        expected: Expected,
    },
    Call {
        question: Option<Id>,
        target: Target,
        method: MethodId,
        caps: Vec<CapDescriptor>,
    },
    Return {
        question: Id,
        outcome: Outcome,
        caps: Vec<CapDescriptor>,
    },
    Finish {
        question: Id,
    },
    Release {
        id: Id,
        count: Id,
    },
    Disembargo {
        question: Id,
        reflected: bool,
    },
    Ping,
    Abort {
        reason: String,
    },
}

/// What goes on the wire for a [`Header`] (`Bootstrap` flattens `Expected`).
#[derive(Serialize)]
enum WireHeader<'a> {
    Bootstrap {
        question: Id,
        interface: &'a str,
        fingerprint: u64,
    },
    Call {
        question: Option<Id>,
        target: Target,
        method: MethodId,
        caps: &'a [CapDescriptor],
    },
    Return {
        question: Id,
        outcome: Outcome,
        caps: &'a [CapDescriptor],
    },
    Finish {
        question: Id,
    },
    Release {
        id: Id,
        count: Id,
    },
    Disembargo {
        question: Id,
        reflected: bool,
    },
    Ping,
    Abort {
        reason: &'a str,
    },
}

impl Header {
    fn wire(&self) -> WireHeader<'_> {
        match self {
            Header::Bootstrap { question, expected } => WireHeader::Bootstrap {
                question: *question,
                interface: &expected.0,
                fingerprint: expected.1,
            },
            Header::Call {
                question,
                target,
                method,
                caps,
            } => WireHeader::Call {
                question: *question,
                target: *target,
                method: *method,
                caps,
            },
            Header::Return {
                question,
                outcome,
                caps,
            } => WireHeader::Return {
                question: *question,
                outcome: *outcome,
                caps,
            },
            Header::Finish { question } => WireHeader::Finish {
                question: *question,
            },
            Header::Release { id, count } => WireHeader::Release {
                id: *id,
                count: *count,
            },
            Header::Disembargo {
                question,
                reflected,
            } => WireHeader::Disembargo {
                question: *question,
                reflected: *reflected,
            },
            Header::Ping => WireHeader::Ping,
            Header::Abort { reason } => WireHeader::Abort { reason },
        }
    }
}

#[derive(Debug, Clone, Serialize, Arbitrary)]
enum WireError {
    MethodNotFound,
    ObjectNotFound,
    WrongInterface { found: String },
    NoRoot,
    Panic(Option<String>),
    BadArguments(String),
    Encode(String),
    ResultTooLarge { size: u64, limit: u64 },
    Closing,
    Revoked,
    Forward(String),
    PromiseFailed(String),
    Overloaded(String),
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
    /// `conn.stats()`.
    Stats,
    /// Closes gracefully.
    Close,
    /// Aborts.
    Abort,
}

#[derive(Debug, Clone, Arbitrary)]
enum Step {
    /// A well-formed frame, maybe with one bit flipped (at `flip.0 % len`).
    Frame {
        header: Header,
        payload: Payload,
        flip: Option<(u16, u8)>,
    },
    /// Raw bytes as a frame.
    Raw(Vec<u8>),
    /// A well-formed frame sent in chunks, cut after each `cuts` byte count (at least
    /// one chunk); the last chunk is marked last only if `finish`.
    Chunked {
        header: Header,
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
}

#[derive(Debug, Arbitrary)]
struct Input {
    codec: u8,
    /// Bit 0: small limits; 1: call timeout; 2: keepalive; 3: idle timeout; 4: small
    /// frame limit; 5: redact panics; 6: smallest chunk size (1 KiB).
    options: u8,
    steps: Vec<Step>,
}

fn build(codec: AnyCodec, options: u8) -> farcall::Builder {
    let mut builder = Connection::builder()
        .codec(codec)
        .root(RootServer::new(Node))
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
    let start = buf.len();
    let _ = codec.encode(&header.wire(), &mut buf);
    let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    if let Some((at, bit)) = flip {
        let at = at as usize % buf.len();
        buf[at] ^= 1 << (bit % 8);
    }
    buf
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
            (Local::Stats, _) => {
                let _ = conn.stats().await;
            }
            (Local::Close, _) => conn.close().await,
            (Local::Abort, _) => conn.abort().await,
            (_, None) => {}
        }
    });
}

/// Reads and drops whatever the connection sent so far.
fn drain(peer: &mut MemoryTransport) {
    while let Some(Some(_)) = peer.next().now_or_never() {}
}

async fn run(input: Input) {
    let codec = AnyCodec::ALL[input.codec as usize % AnyCodec::ALL.len()];
    let (ours, mut peer) = memory();
    let conn = build(codec, input.options).connect(ours);
    let kept: Kept = Arc::default();

    let steps = async {
        for step in input.steps {
            match step {
                Step::Frame {
                    header,
                    payload,
                    flip,
                } => {
                    let bytes = frame(codec, &header, &payload, flip);
                    let _ = peer.send(bytes.into()).await;
                    tokio::task::yield_now().await;
                }
                Step::Raw(bytes) => {
                    let _ = peer.send(bytes.into()).await;
                    tokio::task::yield_now().await;
                }
                Step::Chunked {
                    header,
                    payload,
                    stream,
                    cuts,
                    finish,
                } => {
                    let mut rest = &frame(codec, &header, &payload, None)[..];
                    let mut cuts = cuts.into_iter();
                    loop {
                        let at = cuts.next().map_or(rest.len(), usize::from).min(rest.len());
                        let (piece, after) = rest.split_at(at);
                        rest = after;
                        let last = rest.is_empty() && finish;
                        let _ = peer
                            .send(chunk(piece.to_vec(), stream, last.into()).into())
                            .await;
                        tokio::task::yield_now().await;
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
                    let _ = peer.send(chunk(data, stream, flags).into()).await;
                    tokio::task::yield_now().await;
                }
                Step::Yield(n) => {
                    for _ in 0..n % 16 {
                        tokio::task::yield_now().await;
                    }
                }
                Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
                Step::Local(op) => {
                    local(&conn, &kept, op);
                    tokio::task::yield_now().await;
                }
            }
            drain(&mut peer);
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), steps).await;

    // A connection still up must still answer; then the peer hangs up and it must end.
    if !conn.is_closed() {
        let stats = tokio::time::timeout(Duration::from_secs(10), conn.stats()).await;
        assert!(
            stats.is_ok(),
            "a live connection did not answer stats() in 10 s"
        );
    }
    drop(peer);
    drop(kept);
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the connection did not end within 10 s of the peer hanging up");
    let reason = conn
        .close_reason()
        .expect("a closed connection has a reason");
    assert!(
        !reason.contains("task stopped"),
        "the connection task died: {reason}"
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
