//! A hostile Cap'n Web peer: a sequence of messages, mostly plausible protocol
//! messages (pushes calling the root's methods by name with fuzzer-chosen arguments,
//! pulls, releases, resolves and rejects of fuzzer-chosen ids, expressions with
//! exports, imports, pipelines, bytes, big integers, nested arrays), sometimes raw
//! text, fed to a live Cap'n Web session (`farcall::capnweb::connect`) serving a
//! small root over an in-memory carrier of text messages.
//!
//! Each input runs in its own current-thread tokio runtime with paused time. What
//! must hold: nothing panics (libfuzzer-sys aborts on any panic, also in spawned
//! tasks); every message the session sends is one line of valid JSON, an array
//! whose first element is a known message type; an `abort` is the last thing it
//! sends; once the peer's messages end, the session ends within 10 s (paused), and
//! not because its task stopped (what a panic in it would leave); afterwards every
//! object the root handed out has been dropped.

#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arbitrary::Arbitrary;
use farcall::{Callback, Connection};
use futures_util::{Sink, Stream};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tokio::sync::mpsc;

#[farcall::remote]
trait Root {
    async fn echo(&self, text: String) -> String;
    async fn add(&self, a: u64, b: u64) -> Result<u64, String>;
    async fn bytes(&self, data: bytes::Bytes) -> usize;
    async fn make(&self) -> RootClient;
    async fn call_back(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String>;
    async fn keep(&self, other: RootClient) -> u32;
    async fn list(&self, items: Vec<Option<i64>>) -> Vec<Option<i64>>;
    async fn sleepy(&self, ms: u16) -> u16;
    async fn total(&self, numbers: farcall::Stream<u64>) -> u64;
    async fn count(&self, n: u8) -> farcall::Stream<u8>;
    async fn fill(&self, n: u8, out: farcall::StreamSender<u8>) -> u8;
    async fn inbox(&self) -> farcall::StreamSender<u64>;
}

/// Counts live objects, so the target can check they are all dropped at the end.
struct Obj(Arc<AtomicUsize>);

impl Obj {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Obj(live.clone())
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Root for Obj {
    async fn echo(&self, text: String) -> String {
        text
    }
    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        a.checked_add(b).ok_or_else(|| "overflow".to_string())
    }
    async fn bytes(&self, data: bytes::Bytes) -> usize {
        data.len()
    }
    async fn make(&self) -> RootClient {
        RootClient::from_local(Obj::new(&self.0))
    }
    async fn call_back(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String> {
        let call = cb.call(x).timeout(Duration::from_millis(50));
        call.await.map_err(|e| e.to_string())
    }
    async fn keep(&self, other: RootClient) -> u32 {
        drop(other);
        1
    }
    async fn list(&self, items: Vec<Option<i64>>) -> Vec<Option<i64>> {
        items
    }
    async fn sleepy(&self, ms: u16) -> u16 {
        tokio::time::sleep(Duration::from_millis(u64::from(ms % 200))).await;
        ms
    }
    async fn total(&self, mut numbers: farcall::Stream<u64>) -> u64 {
        let mut total = 0u64;
        while let Some(Ok(n)) = futures_util::StreamExt::next(&mut numbers).await {
            total = total.wrapping_add(n);
        }
        total
    }
    async fn count(&self, n: u8) -> farcall::Stream<u8> {
        farcall::Stream::iter(0..n)
    }
    async fn fill(&self, n: u8, out: farcall::StreamSender<u8>) -> u8 {
        for i in 0..n {
            if out.send(i).await.is_err() {
                return i;
            }
        }
        n
    }
    async fn inbox(&self) -> farcall::StreamSender<u64> {
        let (tx, mut numbers) = farcall::Stream::<u64>::channel(2);
        tokio::spawn(async move {
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut numbers).await {}
        });
        tx
    }
}

const METHODS: [&str; 13] = [
    "echo",
    "add",
    "bytes",
    "make",
    "call_back",
    "keep",
    "list",
    "sleepy",
    "total",
    "count",
    "fill",
    "inbox",
    "nope",
];

/// An id: small (as real ids are), negative (exports), or anything.
#[derive(Debug, Arbitrary)]
enum Id {
    Small(u8),
    Negative(u8),
    Any(i64),
}

impl Id {
    fn value(&self) -> Value {
        match self {
            Id::Small(n) => json!(n % 8),
            Id::Negative(n) => json!(-i64::from(n % 8) - 1),
            Id::Any(n) => json!(n),
        }
    }
}

/// An expression, as a peer would write one.
#[derive(Debug, Arbitrary)]
enum Expr {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Null,
    Array(Vec<Expr>),
    /// An array without the `[[...]]` escape (malformed, or a typed expression).
    Bare(Vec<Expr>),
    Object(Vec<(String, Expr)>),
    Bytes(Vec<u8>),
    BigInt(String),
    Undefined,
    NonFinite(u8),
    Export(Id),
    Promise(Id),
    Import(Id),
    Pipeline(Id, Option<Vec<String>>),
    Date(f64),
    Error(String, String),
    Readable(Id),
    Writable(Id),
    Unknown(String),
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Expr {
    fn value(&self, depth: u32) -> Value {
        if depth > 6 {
            return Value::Null;
        }
        let d = depth + 1;
        match self {
            Expr::Int(n) => json!(n),
            Expr::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Expr::Text(s) => json!(s),
            Expr::Bool(b) => json!(b),
            Expr::Null => Value::Null,
            Expr::Array(items) => json!([items.iter().map(|e| e.value(d)).collect::<Vec<_>>()]),
            Expr::Bare(items) => Value::Array(items.iter().map(|e| e.value(d)).collect()),
            Expr::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value(d)))
                    .collect(),
            ),
            Expr::Bytes(data) => json!(["bytes", base64(data)]),
            Expr::BigInt(digits) => json!(["bigint", digits]),
            Expr::Undefined => json!(["undefined"]),
            Expr::NonFinite(n) => {
                let tag = ["inf", "-inf", "nan"][usize::from(n % 3)];
                json!([tag])
            }
            Expr::Export(id) => json!(["export", id.value()]),
            Expr::Promise(id) => json!(["promise", id.value()]),
            Expr::Import(id) => json!(["import", id.value()]),
            Expr::Pipeline(id, None) => json!(["pipeline", id.value()]),
            Expr::Pipeline(id, Some(path)) => json!(["pipeline", id.value(), path]),
            Expr::Date(ms) => json!(["date", ms]),
            Expr::Error(kind, message) => json!(["error", kind, message]),
            Expr::Readable(id) => json!(["readable", id.value()]),
            Expr::Writable(id) => json!(["writable", id.value()]),
            Expr::Unknown(tag) => json!([tag, 1, 2]),
        }
    }
}

/// One message from the peer.
#[derive(Debug, Arbitrary)]
enum Message {
    /// Calls a method by name on an import (mostly the root, 0).
    Call {
        on: Id,
        method: u8,
        args: Vec<Expr>,
    },
    /// Pushes any expression.
    Push(Expr),
    Pull(Id),
    Release(Id, u8),
    Resolve(Id, Expr),
    Reject(Id, Expr),
    Stream(Expr),
    Pipe,
    /// A write to a pipe, or its `close()` or `abort()` (as a stream message or a
    /// push).
    Write(Id, Expr),
    EndPipe(Id, bool, bool),
    Abort(Expr),
    /// Any JSON value, or any text.
    Json(Expr),
    Raw(String),
    /// Lets time pass (handlers sleep, callbacks time out).
    Wait(u8),
}

impl Message {
    fn text(&self) -> Option<String> {
        let value = match self {
            Message::Call { on, method, args } => {
                let name = METHODS[usize::from(*method) % METHODS.len()];
                let args: Vec<Value> = args.iter().map(|a| a.value(0)).collect();
                json!(["push", ["pipeline", on.value(), [name], args]])
            }
            Message::Push(e) => json!(["push", e.value(0)]),
            Message::Pull(id) => json!(["pull", id.value()]),
            Message::Release(id, n) => json!(["release", id.value(), n % 4]),
            Message::Resolve(id, e) => json!(["resolve", id.value(), e.value(0)]),
            Message::Reject(id, e) => json!(["reject", id.value(), e.value(0)]),
            Message::Stream(e) => json!(["stream", e.value(0)]),
            Message::Pipe => json!(["pipe"]),
            Message::Write(pipe, chunk) => {
                json!([
                    "stream",
                    ["pipeline", pipe.value(), ["write"], [chunk.value(0)]]
                ])
            }
            Message::EndPipe(pipe, abort, streamed) => {
                let call = if *abort {
                    json!([
                        "pipeline",
                        pipe.value(),
                        ["abort"],
                        [["error", "Error", "x"]]
                    ])
                } else {
                    json!(["pipeline", pipe.value(), ["close"], []])
                };
                json!([if *streamed { "stream" } else { "push" }, call])
            }
            Message::Abort(e) => json!(["abort", e.value(0)]),
            Message::Json(e) => e.value(0),
            Message::Raw(text) => return Some(text.clone()),
            Message::Wait(_) => return None,
        };
        Some(value.to_string())
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    messages: Vec<Message>,
}

/// The session's side of an in-memory carrier of text messages.
struct Carrier {
    incoming: mpsc::UnboundedReceiver<String>,
    outgoing: mpsc::UnboundedSender<String>,
}

impl Stream for Carrier {
    type Item = io::Result<String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<String> for Carrier {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: String) -> io::Result<()> {
        // The fuzzer's side may have stopped reading; that is not the session's error.
        let _ = self.outgoing.send(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const KNOWN: [&str; 8] = [
    "push", "pull", "resolve", "reject", "release", "abort", "stream", "pipe",
];

/// Checks what the session sent: valid JSON messages, an abort only last.
fn check_sent(sent: &[String]) {
    for (i, text) in sent.iter().enumerate() {
        assert!(!text.contains('\n'), "a message spans lines: {text:?}");
        let value: Value = serde_json::from_str(text).expect("the session sends valid JSON");
        let kind = value
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("not a message: {text}"));
        assert!(KNOWN.contains(&kind), "unknown message type {kind:?}");
        if kind == "abort" {
            assert_eq!(i, sent.len() - 1, "messages after an abort: {sent:?}");
        }
    }
}

fn run(input: Input) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let live = Arc::new(AtomicUsize::new(0));
        let builder = Connection::builder().root(RootServer::new(Obj::new(&live)));
        let (to_session, incoming) = mpsc::unbounded_channel();
        let (outgoing, mut from_session) = mpsc::unbounded_channel();
        let conn = farcall::capnweb::connect(&builder, Carrier { incoming, outgoing });
        drop(builder);
        for message in input.messages.iter().take(64) {
            match message.text() {
                Some(text) => {
                    let _ = to_session.send(text);
                }
                None => {
                    if let Message::Wait(ms) = message {
                        tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await;
                    }
                }
            }
            tokio::task::yield_now().await;
        }
        drop(to_session);
        let ended = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
        assert!(
            ended.is_ok(),
            "the session did not end after its peer's messages did"
        );
        let reason = conn
            .close_reason()
            .expect("an ended connection has a reason");
        assert_ne!(
            reason,
            farcall::CloseReason::TaskStopped,
            "the connection task stopped (a panic?)"
        );
        let mut sent = Vec::new();
        while let Ok(text) = from_session.try_recv() {
            sent.push(text);
        }
        check_sent(&sent);
        drop(conn);
        // Handlers still running are dropped with the session; give tasks a turn.
        for _ in 0..50 {
            if live.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "objects outlived the session"
        );
    });
}

fuzz_target!(|input: Input| run(input));
