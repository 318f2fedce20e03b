//! The Rust server the JavaScript tests of `tests/js/` call with the npm `capnweb`
//! client: serves `Api` over Cap'n Web at `/rpc` (WebSocket on GET, HTTP batch on
//! POST) on 127.0.0.1, prints its port on stdout, and runs until stdin closes (so it
//! dies with the test process that started it). `--threads N` sets the runtime's
//! worker threads (the benchmark of `tests/js/bench.mjs` runs it with 1 and without).
//!
//! With `--typescript`, prints the TypeScript declarations of `Api` instead (the
//! committed `tests/js/api.d.ts`, kept equal by `tests/typescript.rs`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use farcall::{ByteStream, ByteWriter, CallContext, Callback, Connection, Stream, StreamSender};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

#[derive(Debug, Clone, Serialize, Deserialize, ts_rs::TS)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: Option<String>,
}

/// A connection's tables, as `farcall::Stats` reports them.
#[derive(Debug, Clone, Serialize, Deserialize, ts_rs::TS)]
pub struct Tables {
    pub questions: usize,
    /// Not counting the `stats` call itself.
    pub answers: usize,
    pub exports: usize,
    pub imports: usize,
    /// Streams open on the connection.
    pub streams: usize,
}

/// A struct of plain values, a nested struct and objects (the lead counting from
/// 1, the members from 2 and 3), for property paths on results:
/// `api.team().lead.increment(1)`, `await api.team().stats.label`.
#[derive(Serialize, Deserialize, ts_rs::TS)]
pub struct Team {
    pub name: String,
    #[ts(type = "Counter")]
    pub lead: CounterClient,
    pub stats: Point,
    #[ts(type = "Array<Counter>")]
    pub members: Vec<CounterClient>,
}

/// A name and a stream, for property paths reaching a stream:
/// `await api.pair(3).numbers`.
#[derive(Serialize, Deserialize, ts_rs::TS)]
pub struct Pair {
    pub name: String,
    pub numbers: Stream<u64>,
}

farcall::capnweb::typescript::from_ts_rs!(Point, Tables, Team, Pair);

/// A counter served to JavaScript.
#[farcall::remote]
pub trait Counter {
    async fn increment(&self, by: i64) -> i64;
    async fn value(&self) -> i64;
    /// A new counter starting at this one's value plus one.
    async fn child(&self) -> CounterClient;
}

/// The root the JavaScript tests call.
#[farcall::remote]
pub trait Api {
    async fn add(&self, a: f64, b: f64) -> f64;
    async fn greet(&self, name: String) -> String;
    async fn mirror(&self, p: Point) -> Point;
    async fn sum(&self, values: Vec<i64>) -> i64;
    async fn reverse(&self, words: Vec<String>) -> Vec<String>;
    async fn double(&self, x: Option<i64>) -> Option<i64>;
    async fn flip(&self, data: Bytes) -> Bytes;
    async fn big(&self) -> u64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, String>;
    async fn explode(&self) -> i64;
    async fn counter(&self, start: i64) -> CounterClient;
    /// Calls `f` on 1 and on 2 and adds the results.
    async fn call_twice(&self, f: Callback<i64, i64>) -> i64;
    /// Keeps `f` to call on `publish`; returns how many are kept.
    async fn subscribe(&self, f: Callback<String>) -> usize;
    async fn publish(&self, text: String) -> usize;
    async fn unsubscribe_all(&self) -> usize;
    /// A new team (see `Team`).
    async fn team(&self) -> Team;
    /// Calls `increment(10)` on a counter the caller implements.
    async fn use_counter(&self, c: CounterClient) -> i64;
    /// The tables of the connection this call came on.
    async fn stats(&self) -> Tables;
    /// HTTP batch requests served so far.
    async fn requests(&self) -> u64;
    /// The numbers from 0 below `n`, as a stream.
    async fn count(&self, n: u64) -> Stream<u64>;
    /// The sum of the numbers the caller streams.
    async fn total(&self, numbers: Stream<i64>) -> Result<i64, String>;
    /// `n` bytes (byte `i` is `i % 251`), in chunks of up to 64 KiB.
    async fn download(&self, n: u64) -> ByteStream;
    /// How many bytes the caller streamed, and their sum modulo 2^32.
    async fn upload(&self, data: ByteStream) -> Result<(u64, u32), String>;
    /// The numbers from 0 on, without end, made as they are read.
    async fn ticks(&self) -> Stream<u64>;
    /// How many numbers the last `ticks` made so far.
    async fn produced(&self) -> u64;
    /// Keeps the stream, unread, until `drain`.
    async fn hold(&self, numbers: Stream<i64>);
    /// Reads the stream `hold` kept to its end: how many numbers it carried.
    async fn drain(&self) -> Result<u64, String>;
    /// Reads one number, then drops the stream.
    async fn first(&self, numbers: Stream<i64>) -> Option<i64>;
    /// A pair named "pair" with the numbers from 0 below `n`.
    async fn pair(&self, n: u64) -> Pair;
    /// Writes "line 0" to "line {n-1}" into the caller's `WritableStream`, pausing
    /// now and then; returns how many lines it took (fewer if it failed).
    async fn fill(&self, n: u64, out: StreamSender<String>) -> u64;
    /// A `WritableStream` of lines for the caller to write; `inbox_read` returns
    /// what was written once it is closed.
    async fn inbox(&self) -> StreamSender<String>;
    /// The lines written to the last `inbox`, once closed; its error if it failed.
    async fn inbox_read(&self) -> Result<Vec<String>, String>;
    /// Writes `n` bytes (byte `i` is `i % 251`) into the caller's `WritableStream`
    /// of `Uint8Array`s, then closes it.
    async fn save(&self, n: u64, out: ByteWriter) -> Result<(), String>;
    /// A `WritableStream` of `Uint8Array`s; `bytes_read` tells how many bytes were
    /// written to the last one and their sum modulo 2^32, once it is closed.
    async fn bytes_inbox(&self) -> ByteWriter;
    async fn bytes_read(&self) -> Result<(u64, u32), String>;
    /// `count(n)` of a backend: a farcall server on a connection of its own in
    /// farcall's default codec, its stream passed on to the caller (a gateway).
    async fn relayed(&self, n: u64) -> Result<Stream<u64>, String>;
    /// `total` of the caller's stream, computed by such a backend.
    async fn relayed_total(&self, numbers: Stream<i64>) -> Result<i64, String>;
}

struct Count(AtomicI64);

impl Counter for Count {
    async fn increment(&self, by: i64) -> i64 {
        self.0.fetch_add(by, Ordering::SeqCst) + by
    }
    async fn value(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    async fn child(&self) -> CounterClient {
        CounterClient::from_local(Count(AtomicI64::new(self.0.load(Ordering::SeqCst) + 1)))
    }
}

#[derive(Default)]
struct Server {
    subscribers: Mutex<Vec<Callback<String>>>,
    requests: Arc<AtomicU64>,
    produced: Arc<AtomicU64>,
    held: Mutex<Option<Stream<i64>>>,
    inbox: Mutex<Option<Stream<String>>>,
    bytes_inbox: Mutex<Option<ByteStream>>,
    /// Both ends of the connections to backends.
    backends: Mutex<Vec<Connection>>,
}

impl Server {
    /// A backend serving `Api` over an in-process link, in the default codec.
    async fn backend(&self) -> Result<ApiClient, String> {
        let (a, b) = farcall::transport::memory();
        let server = Connection::builder()
            .root(ApiServer::new(Server::default()))
            .connect(a);
        let client = Connection::builder().connect(b);
        let root = client.root().await.map_err(|e| e.to_string())?;
        let mut backends = self.backends.lock().unwrap();
        // Keep the last few only: each test makes its own.
        if backends.len() > 8 {
            backends.drain(..2);
        }
        backends.extend([server, client]);
        Ok(root)
    }
}

impl Api for Server {
    async fn add(&self, a: f64, b: f64) -> f64 {
        a + b
    }
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
    async fn mirror(&self, p: Point) -> Point {
        Point {
            x: -p.x,
            y: -p.y,
            label: p.label.map(|l| l.to_uppercase()),
        }
    }
    async fn sum(&self, values: Vec<i64>) -> i64 {
        values.iter().sum()
    }
    async fn reverse(&self, mut words: Vec<String>) -> Vec<String> {
        words.reverse();
        words
    }
    async fn double(&self, x: Option<i64>) -> Option<i64> {
        x.map(|x| x * 2)
    }
    async fn flip(&self, data: Bytes) -> Bytes {
        data.iter().rev().copied().collect()
    }
    async fn big(&self) -> u64 {
        u64::MAX
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, String> {
        a.checked_div(b)
            .ok_or_else(|| "division by zero".to_string())
    }
    async fn explode(&self) -> i64 {
        panic!("kaboom")
    }
    async fn counter(&self, start: i64) -> CounterClient {
        CounterClient::from_local(Count(AtomicI64::new(start)))
    }
    async fn call_twice(&self, f: Callback<i64, i64>) -> i64 {
        let a = f.call(1).await.unwrap_or(-1000);
        let b = f.call(2).await.unwrap_or(-1000);
        a + b
    }
    async fn subscribe(&self, f: Callback<String>) -> usize {
        let mut subscribers = self.subscribers.lock().unwrap();
        subscribers.push(f);
        subscribers.len()
    }
    async fn publish(&self, text: String) -> usize {
        let subscribers = self.subscribers.lock().unwrap().clone();
        for f in &subscribers {
            let _ = f.call(text.clone()).await;
        }
        subscribers.len()
    }
    async fn unsubscribe_all(&self) -> usize {
        std::mem::take(&mut *self.subscribers.lock().unwrap()).len()
    }
    async fn team(&self) -> Team {
        let counter = |n| CounterClient::from_local(Count(AtomicI64::new(n)));
        Team {
            name: "core".into(),
            lead: counter(1),
            stats: Point {
                x: 1.0,
                y: 2.0,
                label: Some("stats".into()),
            },
            members: vec![counter(2), counter(3)],
        }
    }
    async fn use_counter(&self, c: CounterClient) -> i64 {
        c.increment(10).await.unwrap_or(-1)
    }
    async fn stats(&self) -> Tables {
        let Some(cx) = CallContext::current() else {
            return Tables {
                questions: 0,
                answers: 0,
                exports: 0,
                imports: 0,
                streams: 0,
            };
        };
        let stats = cx
            .connection()
            .stats()
            .await
            .expect("the connection is open");
        Tables {
            questions: stats.questions,
            answers: stats.answers.saturating_sub(1),
            exports: stats.exports,
            imports: stats.imports,
            streams: stats.streams,
        }
    }
    async fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    async fn count(&self, n: u64) -> Stream<u64> {
        Stream::iter(0..n)
    }
    async fn total(&self, mut numbers: Stream<i64>) -> Result<i64, String> {
        let mut total = 0i64;
        while let Some(n) = numbers.next().await {
            total = total.wrapping_add(n.map_err(|e| e.to_string())?);
        }
        Ok(total)
    }
    async fn download(&self, n: u64) -> ByteStream {
        let chunks = (0..n).step_by(64 << 10).map(move |start| {
            let end = (start + (64 << 10)).min(n);
            Bytes::from((start..end).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
        });
        ByteStream::new(futures_util::stream::iter(chunks))
    }
    async fn upload(&self, data: ByteStream) -> Result<(u64, u32), String> {
        let mut reader = data.into_reader();
        let mut buf = vec![0u8; 64 << 10];
        let (mut len, mut sum) = (0u64, 0u32);
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok((len, sum));
            }
            len += n as u64;
            sum = buf[..n]
                .iter()
                .fold(sum, |s, &b| s.wrapping_add(u32::from(b)));
        }
    }
    async fn ticks(&self) -> Stream<u64> {
        let produced = Arc::new(AtomicU64::new(0));
        self.produced.store(0, Ordering::SeqCst);
        let made = self.produced.clone();
        // Lazily: a number is made only when the stream's pump asks for one.
        Stream::new(futures_util::stream::poll_fn(move |_| {
            let n = produced.fetch_add(1, Ordering::SeqCst);
            made.store(n + 1, Ordering::SeqCst);
            std::task::Poll::Ready(Some(n))
        }))
    }
    async fn produced(&self) -> u64 {
        self.produced.load(Ordering::SeqCst)
    }
    async fn hold(&self, numbers: Stream<i64>) {
        *self.held.lock().unwrap() = Some(numbers);
    }
    async fn drain(&self) -> Result<u64, String> {
        let held = self.held.lock().unwrap().take();
        let Some(mut numbers) = held else {
            return Err("nothing held".into());
        };
        let mut count = 0;
        while let Some(n) = numbers.next().await {
            n.map_err(|e| e.to_string())?;
            count += 1;
        }
        Ok(count)
    }
    async fn first(&self, mut numbers: Stream<i64>) -> Option<i64> {
        numbers.next().await.and_then(Result::ok)
    }
    async fn fill(&self, n: u64, out: StreamSender<String>) -> u64 {
        for i in 0..n {
            if i % 10 == 9 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if out.send(format!("line {i}")).await.is_err() {
                return i;
            }
        }
        n
    }
    async fn inbox(&self) -> StreamSender<String> {
        let (tx, lines) = Stream::channel(4);
        *self.inbox.lock().unwrap() = Some(lines);
        tx
    }
    async fn inbox_read(&self) -> Result<Vec<String>, String> {
        let lines = self.inbox.lock().unwrap().take();
        let mut lines = lines.ok_or("no inbox")?;
        let mut got = Vec::new();
        while let Some(line) = lines.next().await {
            got.push(line.map_err(|e| e.to_string())?);
        }
        Ok(got)
    }
    async fn save(&self, n: u64, mut out: ByteWriter) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(16 << 10) {
            out.write_all(piece).await.map_err(|e| e.to_string())?;
        }
        out.shutdown().await.map_err(|e| e.to_string())
    }
    async fn bytes_inbox(&self) -> ByteWriter {
        let (writer, data) = ByteStream::pipe(4);
        *self.bytes_inbox.lock().unwrap() = Some(data);
        writer
    }
    async fn bytes_read(&self) -> Result<(u64, u32), String> {
        let data = self.bytes_inbox.lock().unwrap().take();
        self.upload(data.ok_or("no inbox")?).await
    }
    async fn relayed(&self, n: u64) -> Result<Stream<u64>, String> {
        let backend = self.backend().await?;
        backend.count(n).await.map_err(|e| e.to_string())
    }
    async fn relayed_total(&self, numbers: Stream<i64>) -> Result<i64, String> {
        let backend = self.backend().await?;
        backend.total(numbers).await.map_err(|e| e.to_string())
    }
    async fn pair(&self, n: u64) -> Pair {
        Pair {
            name: "pair".into(),
            numbers: Stream::iter(0..n),
        }
    }
}

/// With `--threads N`, a tokio runtime of N worker threads (1: a current-thread
/// runtime, like Node's one event loop); without, tokio's default (one per core).
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--typescript") {
        print!(
            "{}",
            farcall::capnweb::typescript::declarations::<ApiClient>()
        );
        return Ok(());
    }
    let threads = match args.iter().position(|a| a == "--threads") {
        Some(i) => Some(
            args.get(i + 1)
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| std::io::Error::other("--threads takes a positive number"))?,
        ),
        None => None,
    };
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    let server = Server::default();
    let requests = server.requests.clone();
    let builder = Connection::builder().root(ApiServer::new(server));
    let app = axum::Router::new()
        .route("/rpc", farcall::capnweb::axum::routes(builder))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                if request.method() == axum::http::Method::POST {
                    requests.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    // Small messages go out at once, not held back by Nagle's algorithm (Node's
    // servers set the same; farcall's own listeners do too).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stdin_closed = async {
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stdin_closed)
        .await
}
