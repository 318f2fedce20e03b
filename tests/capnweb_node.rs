//! farcall's Cap'n Web client calling a JavaScript server: `tests/js/server.mjs`, an
//! `RpcTarget` served by the stock npm `capnweb` package in Node, over WebSocket.
//!
//! Needs `node` and `tests/js/node_modules` (`cd tests/js && npm ci`). Without them
//! each test prints a notice and passes, so `cargo test` does not depend on Node;
//! with `FARCALL_REQUIRE_NODE=1` (set by `.ci/run`) they fail instead.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use common::bounded;
use farcall::{ByteStream, CallError, Callback, Connection, RpcError, Stream, StreamSender};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: Option<String>,
}

/// What `fail_kind` may fail with: the `Error`'s message names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    NotFound,
    Denied,
}

/// The JavaScript session's tables (`RpcSession.getStats()`, the main objects both
/// ways included) and its counters not yet disposed.
/// What `promised` returns: both fields arrive as promises JavaScript settles.
#[derive(Serialize, Deserialize)]
pub struct Promised {
    pub n: f64,
    pub counter: CounterClient,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsStats {
    pub imports: u64,
    pub exports: u64,
    pub live_counters: i64,
}

#[farcall::remote]
pub trait Counter {
    async fn increment(&self, by: i64) -> i64;
    async fn value(&self) -> i64;
    async fn child(&self) -> CounterClient;
}

/// The methods of `Api` in tests/js/server.mjs (and one it does not have).
#[farcall::remote]
pub trait Api {
    async fn add(&self, a: f64, b: f64) -> f64;
    async fn greet(&self, name: String) -> String;
    async fn mirror(&self, p: Point) -> Point;
    async fn flip(&self, data: Bytes) -> Bytes;
    /// Throws a `RangeError` with this message.
    async fn fail(&self, message: String) -> i64;
    /// Throws a `RangeError`: declared with an error type, it is the `Err`.
    async fn fail_typed(&self, message: String) -> Result<i64, String>;
    /// Rejects with an `Error` whose message is `kind`.
    async fn fail_kind(&self, kind: String) -> Result<i64, Kind>;
    /// Not a method of the JavaScript object.
    async fn missing(&self) -> i64;
    /// Calls `f(1)` and `f(2)` and adds the results.
    async fn call_twice(&self, f: Callback<i64, i64>) -> i64;
    /// Keeps `f`; returns how many are kept.
    async fn subscribe(&self, f: Callback<String>) -> usize;
    /// Calls every kept function with `text`.
    async fn publish(&self, text: String) -> usize;
    /// Disposes the kept functions.
    async fn unsubscribe_all(&self) -> usize;
    async fn counter(&self, start: i64) -> CounterClient;
    /// Calls `increment(10)` on the counter it is given.
    async fn use_counter(&self, c: CounterClient) -> i64;
    /// `n` after a moment (or a rejection with `message`) and a counter at `n`,
    /// each put in the result as a promise.
    async fn promised(&self, n: f64, message: Option<String>) -> Promised;
    async fn stats(&self) -> JsStats;
    /// Calls `log(text)` on this side's root.
    async fn ask_client(&self, text: String) -> usize;
    /// A `ReadableStream` of the numbers below `n`.
    async fn count(&self, n: u64) -> Stream<u64>;
    /// Sums a `ReadableStream` of numbers.
    async fn total(&self, numbers: Stream<u64>) -> u64;
    /// Writes the numbers below `n` into the sender (a `WritableStream` there).
    async fn fill(&self, n: u64, out: StreamSender<u64>) -> u64;
    /// A `WritableStream` there; `inbox_sum` adds up what was written to it.
    async fn inbox(&self) -> StreamSender<u64>;
    async fn inbox_sum(&self) -> Result<u64, String>;
    /// A `ReadableStream` of `n` bytes (byte `i` is `i % 251`).
    async fn download(&self, n: u64) -> ByteStream;
    /// Counts the bytes of a `ReadableStream` of `Uint8Array`s.
    async fn upload(&self, data: ByteStream) -> u64;
    /// A `ReadableStream` of the numbers from 0 on, made as they are read.
    async fn ticks(&self) -> Stream<u64>;
    /// How many numbers the last `ticks` made.
    async fn produced_count(&self) -> u64;
    /// Reads `n` numbers and keeps the stream, unread, until `cancel_kept`.
    async fn take(&self, numbers: Stream<u64>, n: u64) -> Vec<u64>;
    /// Cancels the stream `take` kept.
    async fn cancel_kept(&self);
}

/// The root this side offers the JavaScript server.
#[farcall::remote]
pub trait Logger {
    async fn log(&self, text: String) -> usize;
}

struct Lines(Mutex<Vec<String>>);

impl Logger for std::sync::Arc<Lines> {
    async fn log(&self, text: String) -> usize {
        let mut lines = self.0.lock().unwrap();
        lines.push(text);
        lines.len()
    }
}

/// A counter living on the Rust side, for JavaScript to call.
struct RustCounter(Mutex<i64>);

impl Counter for RustCounter {
    async fn increment(&self, by: i64) -> i64 {
        let mut n = self.0.lock().unwrap();
        *n += by;
        *n
    }
    async fn value(&self) -> i64 {
        *self.0.lock().unwrap()
    }
    async fn child(&self) -> CounterClient {
        CounterClient::from_local(RustCounter(Mutex::new(self.value().await + 1)))
    }
}

/// A running `node tests/js/server.mjs`, killed when dropped.
struct NodeServer {
    _child: Child,
    _stdout: BufReader<tokio::process::ChildStdout>,
    port: u16,
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Starts the Node server, or says why it cannot and returns `None` (a failure
/// instead with `FARCALL_REQUIRE_NODE=1`).
async fn node_server() -> Option<NodeServer> {
    let required = std::env::var("FARCALL_REQUIRE_NODE").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "FARCALL_REQUIRE_NODE=1 but {why}");
        // Past the test harness's capture, once, so `cargo test` shows it.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping the Node-backed Cap'n Web tests (tests/capnweb_node.rs): {why}"
            );
        });
        None
    };
    let dir = js_dir();
    if !dir.join("node_modules/capnweb").is_dir() || !dir.join("node_modules/ws").is_dir() {
        return skip(format!(
            "{} has no node_modules (run `npm ci` there)",
            dir.display()
        ));
    }
    let mut child = match Command::new("node")
        .arg(dir.join("server.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return skip(format!("`node` cannot be started: {e}")),
    };
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    let mut stdout = BufReader::new(stdout);
    match tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => panic!("the Node server exited without printing its port"),
        Err(_) => panic!("the Node server printed no port within 20 s"),
    }
    let port = line.trim().parse().expect("the Node server printed a port");
    Some(NodeServer {
        _child: child,
        _stdout: stdout,
        port,
    })
}

/// A client connection to a fresh Node server, and its root.
async fn connect() -> Option<(NodeServer, Connection, ApiClient)> {
    connect_with(Connection::builder()).await
}

async fn connect_with(builder: farcall::Builder) -> Option<(NodeServer, Connection, ApiClient)> {
    let server = node_server().await?;
    let url = format!("ws://127.0.0.1:{}", server.port);
    let conn = bounded(
        "connecting",
        farcall::capnweb::connect_websocket(&builder, &url),
    )
    .await
    .expect("connected to the Node server");
    let api: ApiClient = bounded("the root", conn.root()).await.expect("its root");
    Some((server, conn, api))
}

/// The baseline: the JavaScript session holds its main object, exported (and our
/// main, imported), and no counters; farcall's tables are empty but for the root.
async fn assert_released(conn: &Connection, api: &ApiClient, baseline: &JsStats) {
    let js = bounded("stats", api.stats()).await.unwrap();
    assert_eq!(&js, baseline, "the JavaScript session's tables are back");
    let ours = bounded("our stats", conn.stats()).await.unwrap();
    assert_eq!(
        (ours.questions, ours.answers, ours.exports, ours.imports),
        (0, 0, 0, 0),
        "farcall's tables are back at zero: {ours:?}"
    );
}

#[tokio::test]
async fn values_cross() {
    let Some((_server, conn, api)) = connect().await else {
        return;
    };
    assert_eq!(bounded("add", api.add(1.5, 2.0)).await.unwrap(), 3.5);
    assert_eq!(
        bounded("greet", api.greet("Rust".into())).await.unwrap(),
        "Hello, Rust!"
    );
    let p = Point {
        x: 1.0,
        y: -2.5,
        label: Some("a".into()),
    };
    let mirrored = bounded("mirror", api.mirror(p)).await.unwrap();
    assert_eq!(
        mirrored,
        Point {
            x: -1.0,
            y: 2.5,
            label: Some("A".into())
        }
    );
    let none = Point {
        x: 0.5,
        y: 0.0,
        label: None,
    };
    assert_eq!(
        bounded("mirror", api.mirror(none)).await.unwrap().label,
        None
    );
    let flipped = bounded("flip", api.flip(Bytes::from_static(&[1, 2, 255])))
        .await
        .unwrap();
    assert_eq!(&flipped[..], &[255, 2, 1]);
    let js = bounded("stats", api.stats()).await.unwrap();
    assert_eq!(js.live_counters, 0);
    drop(api);
    bounded("close", conn.close()).await;
}

#[tokio::test]
async fn rejections_are_errors_with_their_text() {
    let Some((_server, _conn, api)) = connect().await else {
        return;
    };
    match bounded("fail", api.fail("out of range".into())).await {
        Err(RpcError::RemotePanic(Some(text))) => {
            assert!(text.contains("RangeError: out of range"), "{text}")
        }
        other => panic!("expected the rejection, got {other:?}"),
    }
    match bounded("missing", api.missing()).await {
        Err(RpcError::RemotePanic(Some(text))) => assert!(text.contains("missing"), "{text}"),
        other => panic!("expected the rejection, got {other:?}"),
    }
    // A method declared with an error type gets the throw as its `Err` when the
    // error type reads from the message, else the rejection as before.
    match bounded("fail_typed", api.fail_typed("too big".into())).await {
        Err(CallError::App(message)) => assert_eq!(message, "too big"),
        other => panic!("expected the application error, got {other:?}"),
    }
    match bounded("fail_kind", api.fail_kind("Denied".into())).await {
        Err(CallError::App(kind)) => assert_eq!(kind, Kind::Denied),
        other => panic!("expected Kind::Denied, got {other:?}"),
    }
    match bounded("fail_kind", api.fail_kind("on fire".into())).await {
        Err(CallError::Rpc(RpcError::RemotePanic(Some(text)))) => {
            assert!(text.contains("Error: on fire"), "{text}")
        }
        other => panic!("expected the rejection, got {other:?}"),
    }
    // The session goes on.
    assert_eq!(bounded("add", api.add(1.0, 1.0)).await.unwrap(), 2.0);
}

#[tokio::test]
async fn javascript_calls_rust_callbacks_and_objects() {
    let Some((_server, conn, api)) = connect().await else {
        return;
    };
    let baseline = bounded("stats", api.stats()).await.unwrap();

    let f = Callback::new(|x: i64| async move { x * 10 });
    assert_eq!(bounded("call_twice", api.call_twice(f)).await.unwrap(), 30);

    // A function JavaScript keeps, calls later and then disposes.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let f = Callback::new(move |text: String| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(text);
        }
    });
    assert_eq!(bounded("subscribe", api.subscribe(f)).await.unwrap(), 1);
    assert_eq!(
        bounded("publish", api.publish("news".into()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(bounded("the event", rx.recv()).await.unwrap(), "news");
    assert_eq!(
        bounded("unsubscribe", api.unsubscribe_all()).await.unwrap(),
        1
    );

    // A Rust object passed to JavaScript, called there.
    let client = CounterClient::from_local(RustCounter(Mutex::new(5)));
    assert_eq!(
        bounded("use_counter", api.use_counter(client.clone()))
            .await
            .unwrap(),
        15
    );
    assert_eq!(bounded("value", client.value()).await.unwrap(), 15);
    drop(client);

    assert_released(&conn, &api, &baseline).await;
}

#[tokio::test]
async fn promises_in_javascript_results_are_awaited() {
    let Some((_server, conn, api)) = connect().await else {
        return;
    };
    let baseline = bounded("stats", api.stats()).await.unwrap();

    let got = bounded("promised", api.promised(4.0, None)).await.unwrap();
    assert_eq!(got.n, 4.0);
    assert_eq!(bounded("value", got.counter.value()).await.unwrap(), 4);
    drop(got);
    match bounded("promised", api.promised(1.0, Some("no number".into()))).await {
        Err(RpcError::RemotePanic(Some(text))) => {
            assert!(text.contains("RangeError: no number"), "{text}")
        }
        other => panic!("expected the rejection, got {:?}", other.map(|p| p.n)),
    }
    // The counter's promise may settle after the rejection, its counter released
    // then: a few round trips let JavaScript get there.
    for _ in 0..50 {
        if bounded("stats", api.stats()).await.unwrap() == baseline {
            break;
        }
    }

    assert_released(&conn, &api, &baseline).await;
}

#[tokio::test]
async fn returned_stubs_are_clients_and_are_released() {
    let Some((_server, conn, api)) = connect().await else {
        return;
    };
    let baseline = bounded("stats", api.stats()).await.unwrap();

    let counter: CounterClient = bounded("counter", api.counter(5)).await.unwrap();
    assert_eq!(bounded("increment", counter.increment(2)).await.unwrap(), 7);
    let child = bounded("child", counter.child()).await.unwrap();
    assert_eq!(bounded("value", child.value()).await.unwrap(), 8);
    let js = bounded("stats", api.stats()).await.unwrap();
    assert_eq!(js.live_counters, 2);
    assert_eq!(conn.stats().await.unwrap().imports, 2);

    // Dropping the clients disposes the JavaScript objects.
    drop((counter, child));
    assert_released(&conn, &api, &baseline).await;
}

#[tokio::test]
async fn pipelined_calls_on_javascript_results() {
    let Some((_server, conn, api)) = connect().await else {
        return;
    };
    let baseline = bounded("stats", api.stats()).await.unwrap();

    // One round trip: `counter` has not returned when `increment` is sent.
    let n = bounded("pipelined", api.counter(40).increment(2))
        .await
        .unwrap();
    assert_eq!(n, 42);
    let v = bounded("pipelined chain", api.counter(1).child().child().value())
        .await
        .unwrap();
    assert_eq!(v, 3);

    // A promise kept for pipelining and then awaited.
    let promise = api.counter(100);
    let pipelined: CounterClient = promise.pipelined();
    assert_eq!(
        bounded("on the promise", pipelined.increment(1))
            .await
            .unwrap(),
        101
    );
    let resolved: CounterClient = bounded("resolved", promise).await.unwrap();
    assert_eq!(
        bounded("on the result", resolved.value()).await.unwrap(),
        101
    );
    drop((pipelined, resolved));

    // A Rust callback passed along a pipelined call.
    let counter = api.counter(0);
    let f = Callback::new(|x: i64| async move { x + 1 });
    assert_eq!(bounded("call_twice", api.call_twice(f)).await.unwrap(), 5);
    drop(counter);

    assert_released(&conn, &api, &baseline).await;
}

#[tokio::test]
async fn streams_cross_both_ways() {
    let Some((_server, conn, api)) = connect().await else {
        return;
    };
    let baseline = bounded("stats", api.stats()).await.unwrap();

    // A ReadableStream result is a `Stream`, read within the window.
    let numbers = bounded("count", api.count(500)).await.unwrap();
    let got: Vec<u64> = bounded("reading", numbers.map(Result::unwrap).collect()).await;
    assert_eq!(got, (0..500).collect::<Vec<_>>());

    // A `Stream` argument is a ReadableStream there.
    let sum = bounded("total", api.total(Stream::iter(1..=100)))
        .await
        .unwrap();
    assert_eq!(sum, 5050);

    // Bytes both ways.
    let data = bounded("download", api.download(100_000)).await.unwrap();
    let mut reader = data.into_reader();
    let mut all = Vec::new();
    bounded(
        "reading",
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut all),
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 100_000);
    assert!(all.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    let chunks = (0..30).map(|i| Bytes::from(vec![i as u8; 10_000]));
    let upload = ByteStream::new(futures_util::stream::iter(chunks));
    assert_eq!(
        bounded("upload", api.upload(upload)).await.unwrap(),
        300_000
    );

    // A `StreamSender` argument is a WritableStream there, written and closed.
    let (tx, written) = Stream::channel(4);
    let (n, got) = bounded("fill", async {
        tokio::join!(
            api.fill(300, tx),
            written.map(Result::unwrap).collect::<Vec<u64>>()
        )
    })
    .await;
    assert_eq!(n.unwrap(), 300);
    assert_eq!(got, (0..300).collect::<Vec<_>>());

    // A WritableStream result is a `StreamSender`: dropped, it closes there;
    // failed, it aborts there with the reason.
    let inbox = bounded("inbox", api.inbox()).await.unwrap();
    for n in 1..=100 {
        bounded("send", inbox.send(n)).await.unwrap();
    }
    drop(inbox);
    assert_eq!(bounded("inbox_sum", api.inbox_sum()).await.unwrap(), 5050);
    let inbox = bounded("inbox", api.inbox()).await.unwrap();
    inbox.send(1).await.unwrap();
    bounded("fail", inbox.fail("out of paper")).await.unwrap();
    let failed = bounded("inbox_sum", api.inbox_sum()).await;
    assert!(
        matches!(&failed, Err(CallError::App(why)) if why.contains("out of paper")),
        "{failed:?}"
    );

    // A reader dropped early cancels the JavaScript stream.
    let mut endless = bounded("count", api.count(u64::MAX >> 12)).await.unwrap();
    assert_eq!(bounded("first", endless.next()).await.unwrap().unwrap(), 0);
    drop(endless);

    // JavaScript forgets the writes it had in flight as their rejections reach it:
    // read its tables until they are back (at most 50 round trips).
    for _ in 0..50 {
        if bounded("stats", api.stats()).await.unwrap() == baseline {
            break;
        }
    }
    assert_released(&conn, &api, &baseline).await;
    assert_eq!(conn.stats().await.unwrap().streams, 0);
}

/// Reads `read` until it gives the same number 5 times running (at most 100
/// times): how far something the session drives got once it stopped.
async fn when_steady<F: std::future::Future<Output = u64>>(mut read: impl FnMut() -> F) -> u64 {
    let mut last = read().await;
    let mut same = 0;
    for _ in 0..100 {
        let now = read().await;
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same == 5 {
            break;
        }
    }
    last
}

#[tokio::test]
async fn a_slow_reader_on_either_side_holds_the_producer_back() {
    let Some((_server, conn, api)) = connect().await else {
        return;
    };
    let baseline = bounded("stats", api.stats()).await.unwrap();

    // A Rust reader that stops reading: the page's writer waits for
    // acknowledgements, which come only as the reader takes items, so the
    // JavaScript stream is read only as far as capnweb's own window (of bytes).
    let mut ticks = bounded("ticks", api.ticks()).await.unwrap();
    for k in 0..3 {
        assert_eq!(bounded("a tick", ticks.next()).await.unwrap().unwrap(), k);
    }
    let made =
        when_steady(|| async { bounded("produced", api.produced_count()).await.unwrap() }).await;
    assert!((3..50_000).contains(&made), "{made} made for 3 read");
    drop(ticks);

    // A page that stops reading: the Rust producer is held to the window of 64
    // writes (plus what the page's pipe and the channel hold).
    let (tx, numbers) = Stream::channel(1);
    let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = tokio::spawn({
        let made = made.clone();
        async move {
            let mut n = 0;
            while tx.send(n).await.is_ok() {
                n += 1;
                made.store(n, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let taken = bounded("take", api.take(numbers, 3)).await.unwrap();
    assert_eq!(taken, [0, 1, 2]);
    let sent = when_steady(|| async {
        bounded("a round trip", api.add(0.0, 0.0)).await.unwrap();
        made.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    assert!((64..=3 + 64 + 4).contains(&sent), "{sent} sent for 3 read");
    // Cancelled there, it stops here.
    bounded("cancel", api.cancel_kept()).await.unwrap();
    bounded("the producer stops", producer).await.unwrap();

    for _ in 0..50 {
        if bounded("stats", api.stats()).await.unwrap() == baseline {
            break;
        }
    }
    assert_released(&conn, &api, &baseline).await;
    assert_eq!(conn.stats().await.unwrap().streams, 0);
}

#[tokio::test]
async fn javascript_calls_the_root_this_side_offers() {
    let lines = std::sync::Arc::new(Lines(Mutex::new(Vec::new())));
    let builder = Connection::builder().root(LoggerServer::new(lines.clone()));
    let Some((_server, _conn, api)) = connect_with(builder).await else {
        return;
    };
    assert_eq!(
        bounded("ask", api.ask_client("one".into())).await.unwrap(),
        1
    );
    assert_eq!(
        bounded("ask", api.ask_client("two".into())).await.unwrap(),
        2
    );
    assert_eq!(*lines.0.lock().unwrap(), ["one", "two"]);
}

#[tokio::test]
async fn many_calls_in_flight() {
    let Some((_server, _conn, api)) = connect().await else {
        return;
    };
    let calls = (0..200).map(|i| api.add(f64::from(i), 1.0));
    let results = bounded("200 calls", futures_util::future::join_all(calls)).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as f64 + 1.0);
    }
}

#[tokio::test]
async fn the_session_ends_with_the_server() {
    let Some((server, conn, api)) = connect().await else {
        return;
    };
    assert_eq!(bounded("add", api.add(1.0, 2.0)).await.unwrap(), 3.0);
    drop(server);
    match bounded("a call to a dead server", api.add(1.0, 2.0)).await {
        Err(RpcError::Disconnected(_)) => {}
        other => panic!("expected a disconnection, got {other:?}"),
    }
    bounded("the connection ends", conn.closed()).await;
}
