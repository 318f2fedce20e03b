//! Time limits, cancellation, resource limits and reentrancy: nothing hangs, nothing
//! grows without bound, and one peer's trouble does not reach the others.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use farcall::{CloseReason, Connection, RemoteClient, RpcError, Stats};
use tokio::sync::Notify;

#[tokio::test(start_paused = true)]
async fn a_connection_wide_call_timeout_stops_the_callee_and_frees_the_tables() {
    let f = fixture_with(
        Link::Memory,
        Default::default(),
        Connection::builder(),
        Connection::builder().call_timeout(Some(Duration::from_secs(1))),
    )
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(f.service.wait_forever().await, Err(RpcError::Timeout));
    assert!(started.elapsed() >= Duration::from_secs(1));
    f.state.dropped_forever.notified().await;
    assert_eq!(f.service.add(1, 2).await, Ok(3), "the connection lives on");
    assert_eq!(f.server.stats().await.unwrap().answers, 0);
    assert_eq!(f.client.stats().await.unwrap().questions, 0);
}

#[tokio::test(start_paused = true)]
async fn a_per_call_timeout_overrides_the_default() {
    let f = fixture(Link::Memory, Default::default()).await;
    let started = tokio::time::Instant::now();
    let result = f
        .service
        .wait_forever()
        .timeout(Duration::from_millis(250))
        .await;
    assert_eq!(result, Err(RpcError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(1));
    f.state.dropped_forever.notified().await;
}

#[tokio::test(start_paused = true)]
async fn the_handshake_has_a_time_limit() {
    // A peer that never answers: the raw end of a memory pair, never read.
    let (_silent, ours) = farcall::transport::memory();
    let conn = Connection::builder()
        .handshake_timeout(Duration::from_secs(2))
        .connect(ours);
    assert_eq!(
        conn.root::<ServiceClient>().await.unwrap_err(),
        RpcError::Timeout
    );
}

#[farcall::remote]
pub trait Jobs {
    /// Runs to completion even if the caller gives up.
    #[farcall(no_cancel)]
    async fn commit(&self) -> u32;
    /// Stops when the caller gives up.
    async fn attempt(&self) -> u32;
    /// Returns after `yields` scheduler turns.
    async fn after(&self, yields: u32) -> u32;
}

#[derive(Default)]
struct JobState {
    gate: Notify,
    entered: Notify,
    finished: AtomicU32,
}

#[derive(Clone, Default)]
struct JobsImpl(Arc<JobState>);

impl Jobs for JobsImpl {
    async fn commit(&self) -> u32 {
        self.0.entered.notify_one();
        self.0.gate.notified().await;
        self.0.finished.fetch_add(1, Ordering::SeqCst) + 1
    }
    async fn attempt(&self) -> u32 {
        self.0.entered.notify_one();
        self.0.gate.notified().await;
        self.0.finished.fetch_add(1, Ordering::SeqCst) + 1
    }
    async fn after(&self, yields: u32) -> u32 {
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        yields
    }
}

async fn jobs() -> (Connection, Connection, JobsClient, Arc<JobState>) {
    let imp = JobsImpl::default();
    let state = imp.0.clone();
    let (server, client) = connect(
        Link::Memory,
        Default::default(),
        Connection::builder().root(JobsServer::new(imp)),
        Connection::builder(),
    )
    .await;
    let jobs = client.root().await.unwrap();
    (server, client, jobs, state)
}

#[tokio::test]
async fn no_cancel_methods_run_to_completion_when_the_caller_gives_up() {
    bounded("no_cancel", async {
        let (_server, _client, jobs, state) = jobs().await;
        let call = tokio::spawn({
            let jobs = jobs.clone();
            async move { jobs.commit().await }
        });
        state.entered.notified().await;
        call.abort();
        let _ = call.await;
        // The caller is gone; the work still finishes.
        state.gate.notify_one();
        while state.finished.load(Ordering::SeqCst) == 0 {
            jobs.after(1).await.unwrap();
        }

        // An ordinary method is dropped instead.
        let call = tokio::spawn({
            let jobs = jobs.clone();
            async move { jobs.attempt().await }
        });
        state.entered.notified().await;
        call.abort();
        let _ = call.await;
        for _ in 0..20 {
            jobs.after(1).await.unwrap();
        }
        state.gate.notify_one();
        for _ in 0..20 {
            jobs.after(1).await.unwrap();
        }
        assert_eq!(
            state.finished.load(Ordering::SeqCst),
            1,
            "the cancelled attempt never finished"
        );
    })
    .await;
}

/// A small deterministic generator, so the schedules are random but repeatable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_returns_leave_no_trace() {
    bounded("cancel race", async {
        let (server, client, jobs, _state) = jobs().await;
        let mut rng = Lcg(7);
        let mut completed = 0;
        for _ in 0..500 {
            let work = rng.next(4) as u32;
            let patience = rng.next(6);
            let call = tokio::spawn({
                let jobs = jobs.clone();
                async move { jobs.after(work).await }
            });
            for _ in 0..patience {
                tokio::task::yield_now().await;
            }
            call.abort();
            if let Ok(result) = call.await {
                assert_eq!(result, Ok(work));
                completed += 1;
            }
        }
        eprintln!("{completed} of 500 calls completed before their cancel");
        assert_eq!(jobs.after(0).await, Ok(0), "still serving");
        for _ in 0..100 {
            let (s, c) = (server.stats().await.unwrap(), client.stats().await.unwrap());
            if s == Stats::default() && c.questions == 0 {
                return;
            }
            jobs.after(0).await.unwrap();
        }
        panic!(
            "tables not empty: {:?} {:?}",
            server.stats().await,
            client.stats().await
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_after_the_idle_timeout_unless_it_keeps_alive() {
    let idle = Duration::from_secs(5);
    // Without keepalives: the watching side hangs up.
    let (watcher, _quiet) = connect(
        Link::Memory,
        Default::default(),
        Connection::builder().idle_timeout(Some(idle)),
        Connection::builder(),
    )
    .await;
    watcher.closed().await;
    assert!(matches!(
        watcher.close_reason(),
        Some(CloseReason::IdleTimeout(_))
    ));

    // With keepalives shorter than the idle timeout, it stays up.
    let (watcher, lively) = connect(
        Link::Memory,
        Default::default(),
        Connection::builder().idle_timeout(Some(idle)),
        Connection::builder().keepalive(Some(Duration::from_secs(2))),
    )
    .await;
    tokio::time::sleep(idle * 4).await;
    assert!(!watcher.is_closed() && !lively.is_closed());
}

#[tokio::test]
async fn calls_beyond_the_inflight_limit_are_refused_and_the_rest_flows() {
    bounded("inflight limit", async {
        let f = fixture_with(
            Link::Memory,
            Default::default(),
            Connection::builder().max_inflight_calls(2),
            Connection::builder(),
        )
        .await;
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let s = f.service.clone();
                tokio::spawn(async move { s.slow().await })
            })
            .collect();
        f.state.entered_slow.notified().await;
        f.state.entered_slow.notified().await;
        let err = f.service.add(1, 1).await.unwrap_err();
        assert!(
            matches!(&err, RpcError::Overloaded(why) if why.contains("in flight")),
            "{err}"
        );
        f.state.gate.notify_waiters();
        for call in slow {
            assert_eq!(call.await.unwrap().unwrap(), "slow done");
        }
        assert_eq!(f.service.add(1, 1).await, Ok(2));
    })
    .await;
}

#[farcall::remote]
pub trait Factory {
    async fn make(&self) -> PeerClient;
}

struct FactoryImpl;

impl Factory for FactoryImpl {
    async fn make(&self) -> PeerClient {
        PeerClient::from_local(PeerImpl)
    }
}

#[tokio::test]
async fn exports_and_held_answers_are_bounded() {
    bounded("export limit", async {
        let (_server, client) = connect(
            Link::Memory,
            Default::default(),
            Connection::builder()
                .root(FactoryServer::new(FactoryImpl))
                .max_exports(3),
            Connection::builder(),
        )
        .await;
        let factory: FactoryClient = client.root().await.unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(factory.make().await.unwrap());
        }
        let err = factory.make().await.unwrap_err();
        assert!(
            matches!(&err, RpcError::Overloaded(why) if why.contains("exported")),
            "{err}"
        );
        assert_eq!(held[0].double(2).await, Ok(4));
        held.clear();
        // Released objects make room again.
        let mut again = None;
        for _ in 0..50 {
            if let Ok(peer) = factory.make().await {
                again = Some(peer);
                break;
            }
        }
        assert_eq!(again.expect("room after release").double(3).await, Ok(6));
    })
    .await;

    bounded("answer limit", async {
        let (_server, client) = connect(
            Link::Memory,
            Default::default(),
            Connection::builder()
                .root(FactoryServer::new(FactoryImpl))
                .max_answers(2),
            Connection::builder(),
        )
        .await;
        let factory: FactoryClient = client.root().await.unwrap();
        // Unawaited promises keep their answers for pipelining.
        let kept: Vec<_> = (0..2).map(|_| factory.make()).collect();
        let _pipelined: Vec<PeerClient> = kept.iter().map(|p| p.pipelined()).collect();
        factory
            .client()
            .connection()
            .unwrap()
            .stats()
            .await
            .unwrap();
        let err = factory.make().await.unwrap_err();
        assert!(
            matches!(&err, RpcError::Overloaded(why) if why.contains("answers")),
            "{err}"
        );
        drop((kept, _pipelined));
        let mut ok = false;
        for _ in 0..50 {
            if factory.make().await.is_ok() {
                ok = true;
                break;
            }
        }
        assert!(ok, "dropping the promises freed their answers");
    })
    .await;
}

#[farcall::remote]
pub trait Drain {
    #[farcall(oneway)]
    async fn push(&self, data: bytes::Bytes);
}

struct DrainImpl;

impl Drain for DrainImpl {
    async fn push(&self, _data: bytes::Bytes) {}
}

/// A TCP stream whose reading side can be stopped: a peer that stops reading.
struct Stoppable {
    inner: tokio::net::TcpStream,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for Stoppable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.stopped.load(Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Stoppable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_peer_that_stops_reading_costs_bounded_memory_and_others_keep_going() {
    bounded("stopped reader", async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let builder = Connection::builder()
            .max_frame_size(1 << 20)
            .max_queued_bytes(1 << 20);
        let (accepted, conn) = tokio::join!(listener.accept(), builder.connect_tcp(addr));
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _server = Connection::builder()
            .root(DrainServer::new(DrainImpl))
            .connect_stream(Stoppable {
                inner: accepted.unwrap().0,
                stopped: stopped.clone(),
            });
        let conn = conn.unwrap();
        let drain: DrainClient = conn.root().await.unwrap();
        drain.push(bytes::Bytes::from_static(b"fine")).unwrap();
        stopped.store(true, Ordering::SeqCst);

        let mut refused = None;
        for i in 0..10_000u32 {
            let big = bytes::Bytes::from(vec![i as u8; 64 << 10]);
            if let Err(e) = drain.push(big) {
                refused = Some((i, e));
                break;
            }
            if i % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let (count, err) = refused.expect("the queue must push back");
        assert!(matches!(&err, RpcError::Overloaded(_)), "{err}");
        // Refused after the 1 MiB limit plus what the OS socket buffers hold.
        assert!(count < 1024, "refused only after {count} calls of 64 KiB");
        eprintln!("refused after {count} calls of 64 KiB");
        // Another connection is unaffected.
        let other = fixture(Link::Memory, Default::default()).await;
        assert_eq!(other.service.add(2, 3).await, Ok(5));
    })
    .await;
}

#[farcall::remote]
pub trait Bouncer {
    /// Bounces `n` times between the two sides, through `back`.
    async fn bounce(&self, n: u32, back: BouncerClient) -> u32;
}

struct BouncerImpl {
    me: Arc<AtomicUsize>,
}

impl Bouncer for BouncerImpl {
    async fn bounce(&self, n: u32, back: BouncerClient) -> u32 {
        self.me.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            return 0;
        }
        let me = BouncerClient::from_local(BouncerImpl {
            me: self.me.clone(),
        });
        back.bounce(n - 1, me).await.unwrap_or(u32::MAX) + 1
    }
}

#[tokio::test]
async fn a_hundred_deep_ping_pong_of_callbacks_completes_on_one_thread() {
    bounded("reentrancy", async {
        let (a_hits, b_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (_a, b) = connect(
            Link::Memory,
            Default::default(),
            Connection::builder().root(BouncerServer::new(BouncerImpl { me: a_hits.clone() })),
            Connection::builder(),
        )
        .await;
        let a_root: BouncerClient = b.root().await.unwrap();
        let b_side = BouncerClient::from_local(BouncerImpl { me: b_hits.clone() });
        assert_eq!(a_root.bounce(100, b_side).await, Ok(100));
        assert_eq!(
            a_hits.load(Ordering::SeqCst) + b_hits.load(Ordering::SeqCst),
            101
        );
        assert!(a_root.client().connection().is_some());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_opens_is_closed_after_the_handshake_timeout() {
    // The raw end of a memory pair: it never sends its opening message.
    let (_silent, ours) = farcall::transport::memory();
    let conn = Connection::builder()
        .root(ServiceServer::new(ServiceImpl::default()))
        .handshake_timeout(Duration::from_secs(2))
        .connect(ours);
    let started = tokio::time::Instant::now();
    bounded("handshake timeout", conn.closed()).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    let reason = conn.close_reason().unwrap();
    assert_eq!(
        reason,
        CloseReason::HandshakeTimeout(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn ends_with_different_codecs_fail_at_once_naming_both() {
    for &a in farcall::AnyCodec::ALL {
        for &b in farcall::AnyCodec::ALL {
            if a == b {
                continue;
            }
            let (ta, tb) = farcall::transport::memory();
            let server = Connection::builder()
                .codec(a)
                .root(ServiceServer::new(ServiceImpl::default()))
                .connect(ta);
            let client = Connection::builder().codec(b).connect(tb);
            let err = bounded("root", client.root::<ServiceClient>())
                .await
                .unwrap_err();
            let why = err.to_string();
            assert!(
                why.contains(a.name()) && why.contains(b.name()),
                "{a:?} vs {b:?}: {why}"
            );
            bounded("server ends", server.closed()).await;
            let why = server.close_reason().unwrap();
            assert!(
                matches!(&why, CloseReason::ProtocolViolation(text)
                    if text.contains(a.name()) && text.contains(b.name())),
                "{why}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn close_ends_at_the_drain_deadline_while_a_handler_hangs() {
    let f = fixture_with(
        Link::Memory,
        Default::default(),
        Connection::builder().drain_timeout(Duration::from_secs(2)),
        Connection::builder(),
    )
    .await;
    let hanging = tokio::spawn({
        let service = f.service.clone();
        async move { service.wait_forever().await }
    });
    f.state.entered_forever.notified().await;
    // A handler that returns in time still gets its result out.
    let slow = tokio::spawn({
        let service = f.service.clone();
        async move { service.slow().await }
    });
    f.state.entered_slow.notified().await;
    let started = tokio::time::Instant::now();
    let close = tokio::spawn(f.server.close());
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.state.gate.notify_one();
    assert_eq!(bounded("slow", slow).await.unwrap().unwrap(), "slow done");
    bounded("close", close).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    let err = bounded("hanging", hanging).await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            RpcError::Disconnected(CloseReason::PeerAborted(why)) if why.contains("drain deadline")
        ),
        "{err}"
    );
    f.state.dropped_forever.notified().await;
}

/// The opening message of a farcall peer speaking bincode, written by hand from the
/// layout documented in `wire.rs`, as an implementation in another language would.
fn hello_frame(max_frame_size: u64) -> Vec<u8> {
    let mut hello = b"farcall\0".to_vec();
    hello.extend_from_slice(&1u16.to_le_bytes()); // protocol version
    hello.push(1); // bincode
    hello.extend_from_slice(&max_frame_size.to_le_bytes());
    hello.extend_from_slice(&0xFFFEu16.to_le_bytes());
    hello
}

/// Over a byte stream, a peer sends a frame larger than our limit: we refuse it
/// before reading it, and tell the peer why before hanging up.
async fn an_oversized_frame_is_answered_with_the_reason<S>(ours: S, mut theirs: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Connection::builder()
        .max_frame_size(1024)
        .root(ShapesServer::new(ShapesImpl))
        .connect_stream(ours);
    let hello = hello_frame(1 << 20);
    let mut bytes = (hello.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&hello);
    // A 64 KiB frame: its length, then its bytes.
    bytes.extend_from_slice(&(64u32 << 10).to_be_bytes());
    bytes.extend_from_slice(&[0u8; 64 << 10]);
    let (mut read, mut write) = tokio::io::split(&mut theirs);
    let send = async {
        let _ = write.write_all(&bytes).await;
    };
    let mut received = Vec::new();
    let receive = read.read_to_end(&mut received);
    let (_, _) = bounded("exchange", async { tokio::join!(send, receive) }).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("exceeds max_frame_size (1024 bytes)"),
        "the reason should arrive before the end of stream; got {text:?}"
    );
    bounded("server ends", server.closed()).await;
    let reason = server.close_reason().unwrap();
    assert!(
        matches!(&reason, CloseReason::Transport(why) if why.contains("1024")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_peer_whose_frame_is_too_large_is_told_why_over_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, connected) =
        tokio::join!(listener.accept(), tokio::net::TcpStream::connect(addr));
    an_oversized_frame_is_answered_with_the_reason(accepted.unwrap().0, connected.unwrap()).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_peer_whose_frame_is_too_large_is_told_why_over_a_unix_socket() {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    an_oversized_frame_is_answered_with_the_reason(ours, theirs).await;
}

/// Zero limits and periods given through a whole `Config` are brought within their
/// bounds, as the builder's setters do: a connection still serves calls (no
/// 1-byte chunks, no refusing every call, no spinning keepalive), and large frames
/// still go out in chunks.
#[tokio::test]
async fn a_config_of_zeros_is_normalized_on_every_path() {
    let mut zeros = farcall::Config::default();
    zeros.chunk_size = 0;
    zeros.max_inflight_calls = 0;
    zeros.max_answers = 0;
    zeros.max_queued_bytes = 0;
    zeros.max_frame_size = 0;
    zeros.keepalive = Some(Duration::ZERO);
    zeros.handshake_timeout = Duration::ZERO;
    let builder = Connection::builder().config(zeros.clone());
    let seen = builder.current_config();
    assert_eq!(seen.chunk_size, farcall::Config::MIN_CHUNK_SIZE);
    assert_eq!(seen.max_inflight_calls, 1);
    assert_eq!(seen.max_answers, 1);
    assert_eq!(seen.max_frame_size, farcall::Config::MIN_FRAME_SIZE);
    assert_eq!(seen.keepalive, Some(farcall::Config::MIN_TIMER));

    // A usable frame limit on both sides, every other setting zero.
    zeros.max_frame_size = 1 << 20;
    zeros.handshake_timeout = Duration::from_secs(5);
    let (a, b) = farcall::transport::memory();
    let _server = Connection::builder()
        .config(zeros.clone())
        .root(ShapesServer::new(ShapesImpl))
        .connect(a);
    let client = Connection::builder().config(zeros).connect(b);
    let shapes: ShapesClient = bounded("root", client.root()).await.unwrap();
    assert_eq!(client.config().chunk_size, farcall::Config::MIN_CHUNK_SIZE);
    for round in 0..3u32 {
        let answer = bounded("call", shapes.no_args()).await;
        assert_eq!(answer, Ok(42), "round {round}");
    }
    let big = bytes::Bytes::from(vec![7u8; 200 << 10]);
    let back = bounded("chunked", shapes.bytes(big.clone())).await.unwrap();
    assert_eq!(back, big);
}
