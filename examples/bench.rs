//! farcall against the physical limit: `cargo run --release --example bench`.
//!
//! Every scenario measures farcall and the raw transport doing the same exchange in
//! the same run, alternating them over several repetitions, and reports the medians
//! and their ratio (lower is better everywhere). Results also go to
//! `target/bench.json`.
//!
//! The process pins itself to CPU 0 unless `--split` is given (then the server side
//! runs on CPU 0 and the client side on CPU 1): on a 2-vCPU guest, waking a thread on
//! the other vCPU costs tens of microseconds, which would swamp what is measured.
//! `--quick` runs a few repetitions of each scenario (for CI, so the bench cannot
//! rot). Memory figures count the bytes the server process allocates (through a
//! counting global allocator) while a second process plays the clients. `fanout` re-executes this program as a second process holding the client
//! connections, so each process stays within the file-descriptor limit (which it
//! raises to the hard limit).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use farcall::{ByteStream, Callback, Connection, Listeners, Server, Stream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::runtime::Runtime;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[farcall::remote]
pub trait Bench {
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Calls `cb` `n` times in sequence.
    async fn call_back(&self, cb: Callback<u64, u64>, n: u32) -> u64;
    async fn node(&self, depth: u32) -> BenchClient;
    /// Waits until the gate opens (for pending-call memory).
    async fn wait(&self) -> u64;
    /// Registers `cb` for events.
    async fn listen(&self, cb: Callback<u64>) -> usize;
    /// The numbers `0..n`.
    async fn numbers(&self, n: u64) -> Stream<u64>;
    /// `n` bytes read from `tokio::io::repeat`.
    async fn bytes(&self, n: u64) -> ByteStream;
}

#[derive(Clone, Default)]
struct Impl {
    gate: Arc<tokio::sync::Notify>,
    listeners: Arc<Listeners<u64>>,
    depth: u32,
}

impl Bench for Impl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn call_back(&self, cb: Callback<u64, u64>, n: u32) -> u64 {
        let mut sum = 0;
        for i in 0..n {
            sum += cb.call(u64::from(i)).await.unwrap_or(0);
        }
        sum
    }
    async fn node(&self, depth: u32) -> BenchClient {
        BenchClient::from_local(Impl {
            depth: self.depth + depth,
            ..self.clone()
        })
    }
    async fn wait(&self) -> u64 {
        self.gate.notified().await;
        u64::from(self.depth)
    }
    async fn listen(&self, cb: Callback<u64>) -> usize {
        self.listeners.add(cb);
        self.listeners.len()
    }
    async fn numbers(&self, n: u64) -> Stream<u64> {
        Stream::iter(0..n)
    }
    async fn bytes(&self, n: u64) -> ByteStream {
        // The same source as the raw baseline's `tokio::io::copy`.
        use tokio::io::AsyncReadExt;
        ByteStream::from_reader(tokio::io::repeat(7).take(n))
    }
}

struct Options {
    quick: bool,
    split: bool,
}

impl Options {
    fn reps(&self) -> usize {
        if self.quick {
            3
        } else {
            9
        }
    }
    fn iters(&self, full: usize) -> usize {
        if self.quick {
            (full / 20).max(50)
        } else {
            full
        }
    }
}

fn pin_to(cpu: usize) -> bool {
    // SAFETY-free wrapper: sched_setaffinity on the calling thread.
    let mut set: libc::cpu_set_t = unsafe_zeroed_cpu_set();
    cpu_set(&mut set, cpu);
    sched_setaffinity(&set)
}

#[allow(unsafe_code)]
fn unsafe_zeroed_cpu_set() -> libc::cpu_set_t {
    // cpu_set_t is plain old data: all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
fn cpu_set(set: &mut libc::cpu_set_t, cpu: usize) {
    unsafe { libc::CPU_SET(cpu, set) }
}

#[allow(unsafe_code)]
fn sched_setaffinity(set: &libc::cpu_set_t) -> bool {
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

#[allow(unsafe_code)]
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime on its own thread, pinned as the mode asks.
fn runtime_thread(cpu: Option<usize>) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            if let Some(cpu) = cpu {
                pin_to(cpu);
            }
        })
        .enable_all()
        .build()
        .unwrap()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// One scenario's result: farcall, baseline, unit, ratio.
type Row = (f64, Option<f64>, &'static str, Option<f64>);

#[derive(Default)]
struct Report {
    rows: BTreeMap<&'static str, Row>,
}

impl Report {
    /// `farcall` and `baseline` in `unit`; `higher_is_better` flips the ratio.
    fn add(
        &mut self,
        name: &'static str,
        farcall: f64,
        baseline: Option<f64>,
        unit: &'static str,
        higher_is_better: bool,
    ) {
        let ratio = baseline.map(|b| {
            if higher_is_better {
                b / farcall
            } else {
                farcall / b
            }
        });
        self.rows.insert(name, (farcall, baseline, unit, ratio));
        match (baseline, ratio) {
            (Some(b), Some(r)) => println!("{name:<14} farcall {farcall:>12.2} {unit:<10} baseline {b:>12.2} {unit:<10} ratio {r:>6.2}"),
            _ => println!("{name:<14} farcall {farcall:>12.2} {unit}"),
        }
    }

    fn write_json(&self) {
        let mut map = serde_json::Map::new();
        for (name, (farcall, baseline, unit, ratio)) in &self.rows {
            let mut entry = serde_json::Map::new();
            entry.insert("farcall".into(), (*farcall).into());
            if let Some(b) = baseline {
                entry.insert("baseline".into(), (*b).into());
            }
            entry.insert("unit".into(), (*unit).into());
            if let Some(r) = ratio {
                entry.insert("ratio".into(), (*r).into());
            }
            map.insert((*name).into(), entry.into());
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("bench.json");
        std::fs::write(&path, serde_json::to_string_pretty(&map).unwrap()).unwrap();
        println!("wrote {}", path.display());
    }
}

/// Sequential small calls over the memory transport versus a tokio mpsc ping-pong,
/// both on one current-thread runtime. Microseconds per round trip.
fn mem_rtt(o: &Options) -> (f64, f64) {
    let rt = current_thread();
    let n = o.iters(100_000);
    rt.block_on(async {
        let (a, b) = farcall::transport::memory();
        let _server = Connection::builder()
            .root(BenchServer::new(Impl::default()))
            .connect(a);
        let client: BenchClient = Connection::builder().connect(b).root().await.unwrap();

        let (to_echo, mut echo_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let (echo_tx, mut from_echo) = tokio::sync::mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            while let Some(m) = echo_rx.recv().await {
                if echo_tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let payload = Bytes::from(vec![7u8; 16]);
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..o.reps() {
            let t = Instant::now();
            for i in 0..n as u64 {
                client.add(i, 1).await.unwrap();
            }
            ours.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let t = Instant::now();
            for _ in 0..n {
                to_echo.send(payload.clone()).await.unwrap();
                from_echo.recv().await.unwrap();
            }
            raw.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        (median(ours), median(raw))
    })
}

/// A raw length-delimited echo server; returns its address.
fn raw_echo_server(rt: &Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
                    while let Some(Ok(frame)) = framed.next().await {
                        if framed.feed(frame.freeze()).await.is_err() {
                            break;
                        }
                        // Echo whatever else already arrived, then flush once, as
                        // farcall does.
                        while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
                            if framed.feed(frame.freeze()).await.is_err() {
                                return;
                            }
                        }
                        if SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    })
}

/// A farcall server for `imp` on `rt`, with the settings of `builder`.
fn farcall_server(rt: &Runtime, imp: Impl, builder: farcall::Builder) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let builder = builder.root(BenchServer::new(imp));
        tokio::spawn(
            Server::new(builder)
                .max_connections(20_000)
                .serve(listener, std::future::pending()),
        );
        addr
    })
}

/// A farcall server and a raw echo server on one runtime thread, and a client of
/// each on another: the same conditions for both sides of a TCP comparison.
struct TcpSetup {
    _server_rt: Runtime,
    client_rt: Runtime,
    client: BenchClient,
    raw: Framed<tokio::net::TcpStream, LengthDelimitedCodec>,
}

fn tcp_setup(o: &Options) -> TcpSetup {
    let server_rt = runtime_thread(if o.split { Some(0) } else { None });
    let client_rt = runtime_thread(if o.split { Some(1) } else { None });
    let farcall_addr = farcall_server(&server_rt, Impl::default(), Connection::builder());
    let raw_addr = raw_echo_server(&server_rt);
    let (client, raw) = client_rt.block_on(async {
        let conn = Connection::builder()
            .connect_tcp(farcall_addr)
            .await
            .unwrap();
        let client: BenchClient = conn.root().await.unwrap();
        let stream = tokio::net::TcpStream::connect(raw_addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        (client, Framed::new(stream, LengthDelimitedCodec::new()))
    });
    TcpSetup {
        _server_rt: server_rt,
        client_rt,
        client,
        raw,
    }
}

/// The same small calls over loopback TCP versus a raw echo of a frame of the same
/// size; server and client each on their own runtime thread.
fn tcp_rtt(o: &Options) -> (f64, f64, f64) {
    let TcpSetup {
        _server_rt,
        client_rt,
        client,
        raw: mut raw_conn,
    } = tcp_setup(o);
    let n = o.iters(20_000);
    client_rt.block_on(async {
        let payload = Bytes::from(vec![7u8; 16]);
        let on_call = Callback::new(|x: u64| async move { x });
        let (mut ours, mut raw, mut cb) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..o.reps() {
            let t = Instant::now();
            for i in 0..n as u64 {
                client.add(i, 1).await.unwrap();
            }
            ours.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let t = Instant::now();
            for _ in 0..n {
                raw_conn.send(payload.clone()).await.unwrap();
                raw_conn.next().await.unwrap().unwrap();
            }
            raw.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let t = Instant::now();
            client.call_back(on_call.clone(), n as u32).await.unwrap();
            cb.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        (median(ours), median(raw), median(cb))
    })
}

/// 64 callers sharing one TCP connection versus a raw echo with 64 frames in flight.
/// Calls per second.
fn tcp_tput(o: &Options) -> (f64, f64) {
    const CALLERS: usize = 64;
    let TcpSetup {
        _server_rt,
        client_rt,
        client,
        raw: mut raw_conn,
    } = tcp_setup(o);
    let per_caller = o.iters(4_000);
    client_rt.block_on(async {
        let payload = Bytes::from(vec![7u8; 16]);
        let total = CALLERS * per_caller;
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..o.reps() {
            let t = Instant::now();
            let tasks: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let c = client.clone();
                    tokio::spawn(async move {
                        for i in 0..per_caller as u64 {
                            c.add(i, 1).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            ours.push(total as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            for _ in 0..CALLERS {
                raw_conn.feed(payload.clone()).await.unwrap();
            }
            SinkExt::<Bytes>::flush(&mut raw_conn).await.unwrap();
            for i in 0..total {
                raw_conn.next().await.unwrap().unwrap();
                if i + CALLERS < total {
                    raw_conn.send(payload.clone()).await.unwrap();
                }
            }
            raw.push(total as f64 / t.elapsed().as_secs_f64());
        }
        (median(ours), median(raw))
    })
}

/// Ten dependent calls, pipelined, over a link delaying each direction by 2 ms.
/// Round trips.
fn chain10(o: &Options) -> f64 {
    const DELAY: Duration = Duration::from_millis(2);
    let rt = current_thread();
    rt.block_on(async {
        let (a, b) = farcall::transport::memory();
        let _server = Connection::builder()
            .root(BenchServer::new(Impl::default()))
            .connect(farcall::transport::delayed(a, DELAY));
        let client: BenchClient = Connection::builder()
            .connect(farcall::transport::delayed(b, DELAY))
            .root()
            .await
            .unwrap();
        // A round trip is what one call takes on this link (the delay plus timer
        // granularity), measured beside the chain.
        let mut runs = Vec::new();
        for _ in 0..o.reps() {
            let t = Instant::now();
            client.add(1, 2).await.unwrap();
            let round_trip = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut node = client.node(1);
            for _ in 1..10 {
                node = node.node(1);
            }
            node.await.unwrap();
            runs.push(t.elapsed().as_secs_f64() / round_trip);
        }
        median(runs)
    })
}

/// Server memory per idle connection and per pending call: bytes allocated by the
/// server process (counted by this program's allocator) while a second process opens
/// the connections and makes the calls, so the client's share is not counted.
fn conn_mem(o: &Options) -> (f64, f64) {
    let conns = if o.quick { 200 } else { 1000 };
    let pending = if o.quick { 2_000 } else { 10_000 };
    let server_rt = runtime_thread(if o.split { Some(0) } else { None });
    let imp = Impl::default();
    let gate = imp.gate.clone();
    let limits = Connection::builder()
        .max_inflight_calls(1 << 20)
        .max_answers(1 << 20);
    let addr = farcall_server(&server_rt, imp, limits);
    let mut child = Peer::spawn(&[
        "mem-client",
        &addr.to_string(),
        &conns.to_string(),
        &pending.to_string(),
    ]);
    let before = allocated();
    child.expect("conns");
    let per_conn = (allocated() - before) as f64 / conns as f64 / 1024.0;
    let before = allocated();
    child.say("go");
    child.expect("pending");
    let per_call = (allocated() - before) as f64 / pending as f64;
    gate.notify_waiters();
    child.say("bye");
    (per_conn, per_call)
}

/// The child side of `conn_mem`.
fn mem_client(addr: &str, conns: usize, pending: usize) {
    let rt = runtime_thread(None);
    rt.block_on(async move {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut clients = Vec::with_capacity(conns);
        for _ in 0..conns {
            let conn = Connection::builder()
                .connect_tcp(addr)
                .await
                .expect("connect");
            let root: BenchClient = conn.root().await.unwrap();
            clients.push((conn, root));
        }
        // Let the server settle its tables.
        clients[0].1.add(1, 1).await.unwrap();
        println!("conns");
        wait_line();
        let client = &clients[0].1;
        let calls: Vec<_> = (0..pending).map(|_| client.wait()).collect();
        // Every call has reached its handler once a later call returns.
        client.add(1, 1).await.unwrap();
        println!("pending");
        wait_line();
        drop(calls);
    });
}

fn wait_line() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// This program run as a second process, talking over its stdin and stdout.
struct Peer {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the client process");
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Peer { child, lines }
    }

    fn expect(&mut self, word: &str) {
        let line = self.lines.next().and_then(Result::ok).unwrap_or_default();
        assert_eq!(line.trim(), word, "the client process failed");
    }

    fn say(&mut self, word: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        let _ = writeln!(stdin, "{word}");
        let _ = stdin.flush();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts the bytes this process has allocated and not freed.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed) as isize
}

/// One server, many TCP connections each registering a callback; time for one event
/// to reach all of them, and the server's RSS.
fn fanout(o: &Options) -> (f64, f64, usize) {
    let limit = raise_fd_limit();
    let wanted = if o.quick { 500 } else { 10_000 };
    let n = wanted.min((limit as usize).saturating_sub(200));
    let server_rt = runtime_thread(if o.split { Some(0) } else { None });
    let imp = Impl::default();
    let listeners = imp.listeners.clone();
    let addr = farcall_server(&server_rt, imp, Connection::builder());
    let mut child = Peer::spawn(&["fanout-client", &addr.to_string(), &n.to_string()]);
    // The client says "ready" once every connection registered.
    child.expect("ready");
    assert_eq!(listeners.len(), n);
    let t = Instant::now();
    listeners.emit(&42);
    child.expect("all");
    let elapsed = t.elapsed().as_secs_f64() * 1e3;
    let rss = rss_kib() as f64 / 1024.0;
    child.say("bye");
    (elapsed, rss, n)
}

/// The child side of `fanout`: `n` connections, each registering a callback; prints
/// "ready", then "all" once every callback ran.
fn fanout_client(addr: &str, n: usize) {
    raise_fd_limit();
    let rt = runtime_thread(if std::env::args().any(|a| a == "--split") {
        Some(1)
    } else {
        None
    });
    rt.block_on(async move {
        let addr: SocketAddr = addr.parse().unwrap();
        let got = Arc::new(AtomicUsize::new(0));
        let all = Arc::new(tokio::sync::Notify::new());
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let conn = Connection::builder()
                .connect_tcp(addr)
                .await
                .expect("connect");
            let server: BenchClient = conn.root().await.unwrap();
            let (got, all) = (got.clone(), all.clone());
            let cb = Callback::new(move |_: u64| {
                if got.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    all.notify_one();
                }
                async {}
            });
            server.listen(cb).await.unwrap();
            conns.push(conn);
        }
        println!("ready");
        all.notified().await;
        println!("all");
        wait_line();
    });
}

/// A raw TCP server for the stream baselines: reads a mode byte and a count, then
/// writes that many u64s through a `BufWriter` (mode 0) or copies that many bytes
/// with `tokio::io::copy` (mode 1).
fn raw_stream_server(rt: &Runtime) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    while let (Ok(mode), Ok(n)) = (stream.read_u8().await, stream.read_u64().await)
                    {
                        if mode == 0 {
                            let mut w = tokio::io::BufWriter::new(&mut stream);
                            for i in 0..n {
                                w.write_u64(i).await.unwrap();
                            }
                            w.flush().await.unwrap();
                        } else {
                            let mut data = tokio::io::repeat(7).take(n);
                            tokio::io::copy(&mut data, &mut stream).await.unwrap();
                        }
                    }
                });
            }
        });
        addr
    })
}

/// Small u64 items per second through a `Stream<u64>` over loopback TCP, versus raw
/// u64s through a `BufWriter`; and bytes per second through a `ByteStream` versus
/// `tokio::io::copy` of the same size.
fn streams_tcp(o: &Options) -> ((f64, f64), (f64, f64)) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server_rt = runtime_thread(if o.split { Some(0) } else { None });
    let client_rt = runtime_thread(if o.split { Some(1) } else { None });
    let farcall_addr = farcall_server(&server_rt, Impl::default(), Connection::builder());
    let raw_addr = raw_stream_server(&server_rt);
    let items = o.iters(5_000_000) as u64 * 4;
    let bytes: u64 = if o.quick { 32 << 20 } else { 256 << 20 };
    client_rt.block_on(async move {
        let conn = Connection::builder()
            .connect_tcp(farcall_addr)
            .await
            .unwrap();
        let client: BenchClient = conn.root().await.unwrap();
        let mut raw = tokio::net::TcpStream::connect(raw_addr).await.unwrap();
        raw.set_nodelay(true).unwrap();
        let (mut ours_i, mut raw_i, mut ours_b, mut raw_b) = (vec![], vec![], vec![], vec![]);
        for _ in 0..o.reps().min(5) {
            let t = Instant::now();
            let mut s = client.numbers(items).await.unwrap();
            let mut count = 0u64;
            while let Some(x) = s.next().await {
                x.unwrap();
                count += 1;
            }
            assert_eq!(count, items);
            ours_i.push(items as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            raw.write_u8(0).await.unwrap();
            raw.write_u64(items).await.unwrap();
            let mut r = tokio::io::BufReader::new(&mut raw);
            for _ in 0..items {
                r.read_u64().await.unwrap();
            }
            raw_i.push(items as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            let s = client.bytes(bytes).await.unwrap();
            let got = tokio::io::copy(&mut s.into_reader(), &mut tokio::io::sink())
                .await
                .unwrap();
            assert_eq!(got, bytes);
            ours_b.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e6);

            let t = Instant::now();
            raw.write_u8(1).await.unwrap();
            raw.write_u64(bytes).await.unwrap();
            let got = tokio::io::copy(&mut (&mut raw).take(bytes), &mut tokio::io::sink())
                .await
                .unwrap();
            assert_eq!(got, bytes);
            raw_b.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        (
            (median(ours_i), median(raw_i)),
            (median(ours_b), median(raw_b)),
        )
    })
}

/// One byte stream over a simulated link of 100 Mbit/s and 50 ms round trip, in
/// paused (virtual) time: the share of the link's bandwidth it reaches, window
/// growth included.
fn stream_window(o: &Options) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let total: u64 = if o.quick { 20 << 20 } else { 100 << 20 };
    rt.block_on(async {
        let rate = 100e6 / 8.0;
        let delay = Duration::from_millis(25);
        let (a, b) = farcall::transport::memory();
        let _server = Connection::builder()
            .root(BenchServer::new(Impl::default()))
            .connect(farcall::transport::delayed(a, delay).bandwidth(rate));
        let client: BenchClient = Connection::builder()
            .connect(farcall::transport::delayed(b, delay).bandwidth(rate))
            .root()
            .await
            .unwrap();
        let t = tokio::time::Instant::now();
        let s = client.bytes(total).await.unwrap();
        let got = tokio::io::copy(&mut s.into_reader(), &mut tokio::io::sink())
            .await
            .unwrap();
        assert_eq!(got, total);
        got as f64 / t.elapsed().as_secs_f64() / rate
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("fanout-client") => return fanout_client(&args[2], args[3].parse().unwrap()),
        Some("mem-client") => {
            return mem_client(&args[2], args[3].parse().unwrap(), args[4].parse().unwrap())
        }
        _ => {}
    }
    let o = Options {
        quick: args.iter().any(|a| a == "--quick"),
        split: args.iter().any(|a| a == "--split"),
    };
    if o.split {
        println!("mode: split (server side on CPU 0, client side on CPU 1)");
    } else if pin_to(0) {
        println!("mode: pinned to CPU 0 (use --split to put client and server on two CPUs)");
    } else {
        println!("mode: unpinned (pinning failed)");
    }
    let mut report = Report::default();
    let (ours, raw) = mem_rtt(&o);
    report.add("mem_rtt", ours, Some(raw), "us/call", false);
    let (ours, raw, cb) = tcp_rtt(&o);
    report.add("tcp_rtt", ours, Some(raw), "us/call", false);
    report.add("callback_rtt", cb, Some(ours), "us/call", false);
    let (ours, raw) = tcp_tput(&o);
    report.add("tcp_tput", ours, Some(raw), "calls/s", true);
    report.add("chain10", chain10(&o), None, "round trips", false);
    let ((ours_i, raw_i), (ours_b, raw_b)) = streams_tcp(&o);
    report.add("stream_items", ours_i, Some(raw_i), "items/s", true);
    report.add("stream_bytes", ours_b, Some(raw_b), "MB/s", true);
    report.add(
        "stream_window",
        stream_window(&o) * 100.0,
        None,
        "% of link",
        false,
    );
    let (per_conn, per_call) = conn_mem(&o);
    report.add("conn_mem_conn", per_conn, None, "KiB/conn", false);
    report.add("conn_mem_call", per_call, None, "B/call", false);
    let (ms, rss, n) = fanout(&o);
    println!("fanout: {n} connections");
    report.add("fanout_time", ms, None, "ms", false);
    report.add("fanout_rss", rss, None, "MiB", false);
    report.write_json();
}
