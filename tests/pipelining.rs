//! Promise pipelining: calls on results that have not arrived, one round trip for a
//! chain, failures that propagate, promises as arguments, and E-order.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bounded;
use farcall::{AnyCodec, Connection, RemoteClient, RpcError};
use tokio::sync::Notify;
use tokio::time::Instant;

const DELAY: Duration = Duration::from_millis(10);

#[farcall::remote]
pub trait Node {
    /// A new node one level deeper.
    async fn child(&self, name: String) -> NodeClient;
    async fn depth(&self) -> u32;
    async fn name(&self) -> String;
    /// Fails with an application error instead of returning a node.
    async fn refuse(&self) -> Result<NodeClient, String>;
    async fn explode(&self) -> NodeClient;
    /// Waits for the gate before returning a node.
    async fn slow_child(&self) -> NodeClient;
    /// Like `child`, but awaits before returning, as a handler doing I/O does:
    /// `wait_ms` 0 yields to the scheduler once, more sleeps that long.
    async fn awaiting_child(&self, name: String, wait_ms: u64) -> NodeClient;
    /// Describes a node passed in: its name and whether it arrived as a local object.
    async fn inspect(&self, node: NodeClient) -> (String, bool);
    /// Returns the recorder it is given.
    async fn bounce(&self, recorder: RecorderClient) -> RecorderClient;
    /// A recorder living here.
    async fn recorder(&self) -> RecorderClient;
    async fn log(&self) -> Vec<u32>;
}

#[farcall::remote]
pub trait Recorder {
    async fn record(&self, n: u32);
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u32>>>);

impl Recorder for Log {
    async fn record(&self, n: u32) {
        self.0.lock().unwrap().push(n);
    }
}

#[derive(Default)]
struct Shared {
    gate: Notify,
    entered: Notify,
    dropped: AtomicUsize,
    log: Log,
    /// Nodes made by `make` and not dropped yet.
    live: AtomicUsize,
}

struct NodeImpl {
    name: String,
    depth: u32,
    shared: Arc<Shared>,
}

struct DropFlag(Arc<Shared>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl NodeImpl {
    fn root(shared: Arc<Shared>) -> Self {
        NodeImpl {
            name: "root".into(),
            depth: 0,
            shared,
        }
    }

    fn make(&self, name: String) -> NodeClient {
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        NodeClient::from_local(NodeImpl {
            name,
            depth: self.depth + 1,
            shared: self.shared.clone(),
        })
    }
}

impl Drop for NodeImpl {
    fn drop(&mut self) {
        if self.depth > 0 {
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Node for NodeImpl {
    async fn child(&self, name: String) -> NodeClient {
        self.make(name)
    }
    async fn depth(&self) -> u32 {
        self.depth
    }
    async fn name(&self) -> String {
        self.name.clone()
    }
    async fn refuse(&self) -> Result<NodeClient, String> {
        Err("no children today".into())
    }
    async fn explode(&self) -> NodeClient {
        panic!("boom")
    }
    async fn slow_child(&self) -> NodeClient {
        let _flag = DropFlag(self.shared.clone());
        self.shared.entered.notify_one();
        self.shared.gate.notified().await;
        self.make("slow".into())
    }
    async fn awaiting_child(&self, name: String, wait_ms: u64) -> NodeClient {
        if wait_ms == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        self.make(name)
    }
    async fn inspect(&self, node: NodeClient) -> (String, bool) {
        let name = node.name().await.unwrap_or_else(|e| e.to_string());
        (name, node.client().is_local())
    }
    async fn bounce(&self, recorder: RecorderClient) -> RecorderClient {
        recorder
    }
    async fn recorder(&self) -> RecorderClient {
        RecorderClient::from_local(self.shared.log.clone())
    }
    async fn log(&self) -> Vec<u32> {
        self.shared.log.0.lock().unwrap().clone()
    }
}

struct Link {
    server: Connection,
    client: Connection,
    root: NodeClient,
    shared: Arc<Shared>,
}

/// A client and a server over a memory link delaying each direction by `DELAY`.
async fn link(codec: AnyCodec) -> Link {
    link_over(common::Link::Memory, codec, Some(DELAY)).await
}

/// A client and a server over `link`, with `delay` added each way on a memory link.
async fn link_over(link: common::Link, codec: AnyCodec, delay: Option<Duration>) -> Link {
    let shared = Arc::new(Shared::default());
    let server = Connection::builder().root(NodeServer::new(NodeImpl::root(shared.clone())));
    let (server, client) = match (link, delay) {
        (common::Link::Memory, Some(delay)) => {
            let (a, b) = farcall::transport::memory();
            (
                server
                    .codec(codec)
                    .connect(farcall::transport::delayed(a, delay)),
                Connection::builder()
                    .codec(codec)
                    .connect(farcall::transport::delayed(b, delay)),
            )
        }
        _ => common::connect(link, codec, server, Connection::builder()).await,
    };
    let root = client.root().await.unwrap();
    Link {
        server,
        client,
        root,
        shared,
    }
}

fn round_trips(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() / (2.0 * DELAY.as_secs_f64())
}

#[tokio::test(start_paused = true)]
async fn a_pipelined_chain_of_ten_costs_one_round_trip() {
    for &codec in AnyCodec::ALL {
        let l = link(codec).await;

        let start = Instant::now();
        let mut node = l.root.child("1".into());
        for i in 2..=10 {
            node = node.child(i.to_string());
        }
        let last = node.await.unwrap();
        let pipelined = round_trips(start.elapsed());
        assert_eq!(last.depth().await.unwrap(), 10);

        let start = Instant::now();
        let mut node = l.root.clone();
        for i in 1..=10 {
            node = node.child(i.to_string()).await.unwrap();
        }
        let awaited = round_trips(start.elapsed());
        assert_eq!(node.depth().await.unwrap(), 10);

        assert!(
            pipelined <= 2.0,
            "{codec:?}: pipelined chain took {pipelined} round trips"
        );
        assert!(
            (9.5..=11.0).contains(&awaited),
            "{codec:?}: awaited chain took {awaited} round trips"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn methods_on_a_promise_read_like_methods_on_the_client() {
    let l = link(AnyCodec::default()).await;
    let start = Instant::now();
    let depth = l
        .root
        .child("a".into())
        .child("b".into())
        .child("c".into())
        .depth()
        .await;
    assert_eq!(depth, Ok(3));
    assert!(round_trips(start.elapsed()) <= 1.01);
    let name = l.root.child("x".into()).name().await.unwrap();
    assert_eq!(name, "x");
}

#[tokio::test(start_paused = true)]
async fn calls_on_a_failed_promise_fail_and_say_why() {
    for &codec in AnyCodec::ALL {
        let l = link(codec).await;
        let err = l.root.refuse().depth().await.unwrap_err();
        assert!(
            matches!(&err, RpcError::PromiseFailed(why)
                if why.contains("application error: no children today")),
            "{err}"
        );
        let err = l.root.explode().child("x".into()).name().await.unwrap_err();
        assert!(
            matches!(&err, RpcError::PromiseFailed(why) if why.contains("boom")),
            "{err}"
        );
        // The connection is fine.
        assert_eq!(l.root.depth().await.unwrap(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_promise_can_be_passed_as_an_argument_before_it_resolves() {
    for &codec in AnyCodec::ALL {
        let l = link(codec).await;
        let start = Instant::now();
        let child = l.root.child("passed".into());
        let (name, local) = l.root.inspect(child.pipelined()).await.unwrap();
        assert_eq!(name, "passed");
        assert!(local, "the receiver gets its own resolved object");
        assert!(round_trips(start.elapsed()) <= 1.01);
        drop(child);
    }
}

#[tokio::test(start_paused = true)]
async fn calls_on_a_promise_stay_ahead_of_calls_on_what_it_resolves_to() {
    for &codec in AnyCodec::ALL {
        let l = link(codec).await;
        // Resolving to an object on the server.
        let promise = l.root.recorder();
        let first = promise.record(1);
        let second = promise.record(2);
        let recorder = promise.await.unwrap();
        recorder.record(3).await.unwrap();
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(l.root.log().await.unwrap(), vec![1, 2, 3]);

        // Resolving to an object on the caller's own side: the pipelined calls travel
        // to the server and back, the later call is local, yet order holds.
        let ours = Log::default();
        let promise = l.root.bounce(RecorderClient::from_local(ours.clone()));
        // Pipelined a little later, so their reflections arrive after the return.
        tokio::time::sleep(DELAY / 2).await;
        let first = promise.record(1);
        let second = promise.record(2);
        let recorder = promise.await.unwrap();
        assert!(
            recorder.client().is_local(),
            "came home as the original object"
        );
        recorder.record(3).await.unwrap();
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(*ours.0.lock().unwrap(), vec![1, 2, 3], "{codec:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_an_unawaited_promise_frees_the_answer_and_stops_the_work() {
    let l = link(AnyCodec::default()).await;
    let promise = l.root.slow_child();
    l.shared.entered.notified().await;
    assert_eq!(l.server.stats().await.unwrap().answers, 1);
    drop(promise);
    bounded("handler dropped", async {
        while l.shared.dropped.load(Ordering::SeqCst) == 0 {
            l.root.depth().await.unwrap();
        }
    })
    .await;
    assert_eq!(l.server.stats().await.unwrap().answers, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_promise_with_pipelined_calls_keeps_running_for_them() {
    let l = link(AnyCodec::default()).await;
    let promise = l.root.slow_child();
    let name = promise.name();
    drop(promise);
    l.shared.entered.notified().await;
    l.shared.gate.notify_one();
    assert_eq!(bounded("pipelined", name).await.unwrap(), "slow");
}

#[tokio::test(start_paused = true)]
async fn every_table_is_empty_once_everything_is_dropped() {
    let l = link(AnyCodec::default()).await;
    {
        let a = l.root.child("a".into());
        let b = a.child("b".into());
        let c = b.child("c".into());
        assert_eq!(c.depth().await.unwrap(), 3);
        let resolved = a.await.unwrap();
        assert_eq!(resolved.name().await.unwrap(), "a");
        drop((b, c));
    }
    bounded("settle", async {
        for _ in 0..100 {
            let server = l.server.stats().await.unwrap();
            let client = l.client.stats().await.unwrap();
            // The root the client holds is not counted.
            if server.is_zero() && client.is_zero() {
                return;
            }
            l.root.depth().await.unwrap();
        }
        panic!(
            "tables not empty: server {:?}, client {:?}",
            l.server.stats().await.unwrap(),
            l.client.stats().await.unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn local_objects_pipeline_too() {
    let shared = Arc::new(Shared::default());
    let root = NodeClient::from_local(NodeImpl::root(shared.clone()));
    let depth = bounded(
        "local chain",
        root.child("a".into()).child("b".into()).depth(),
    )
    .await;
    assert_eq!(depth, Ok(2));
    // A local call still running: calls on its result wait for it, in order.
    let promise = root.slow_child();
    let first = promise.name();
    let second = promise.depth();
    shared.entered.notified().await;
    shared.gate.notify_one();
    assert_eq!(bounded("first", first).await.unwrap(), "slow");
    assert_eq!(bounded("second", second).await.unwrap(), 1);
    assert_eq!(promise.await.unwrap().name().await.unwrap(), "slow");
}

/// Waits (bounded) until the server holds no answers and every node it made was
/// dropped, then checks both.
async fn settles_to_nothing(l: &Link) {
    for _ in 0..200 {
        let answers = l.server.stats().await.unwrap().answers;
        if answers == 0 && l.shared.live.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "server still holds {:?} and {} nodes are alive",
        l.server.stats().await.unwrap(),
        l.shared.live.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn chains_through_awaiting_handlers_resolve_at_any_depth() {
    // Each call in the chain is pipelined on an answer whose handler is still
    // running, or on a call that itself still waits: all must wait in order.
    for (codec, link) in common::setups() {
        let l = link_over(link, codec, None).await;
        for depth in 1..=6u32 {
            for wait_ms in [0, 3] {
                let mut node = l.root.awaiting_child("1".into(), wait_ms);
                for i in 2..=depth {
                    node = node.awaiting_child(i.to_string(), wait_ms);
                }
                let got = bounded("chain", node.depth()).await;
                assert_eq!(got, Ok(depth), "{codec:?} over {link:?}, wait {wait_ms} ms");
                let name = bounded("chain", node.name()).await;
                assert_eq!(name, Ok(depth.to_string()), "{codec:?} over {link:?}");
            }
        }
        settles_to_nothing(&l).await;
    }
}

#[tokio::test(start_paused = true)]
async fn chains_through_awaiting_handlers_on_a_slow_link() {
    let l = link(AnyCodec::default()).await;
    let start = Instant::now();
    let mut node = l.root.awaiting_child("1".into(), 1);
    for i in 2..=8 {
        node = node.awaiting_child(i.to_string(), 1);
    }
    assert_eq!(bounded("chain", node.depth()).await, Ok(8));
    assert!(round_trips(start.elapsed()) <= 1.5, "still one round trip");
    drop(node);
    settles_to_nothing(&l).await;
}

#[tokio::test(start_paused = true)]
async fn finishing_a_call_that_waits_on_a_running_one_frees_everything() {
    let l = link(AnyCodec::default()).await;
    let promise = l.root.slow_child();
    let pipelined = promise.child("x".into());
    l.shared.entered.notified().await;
    // Both sent, the second waiting for the first; the caller gives up on both.
    drop(pipelined);
    drop(promise);
    tokio::time::sleep(DELAY * 4).await;
    l.shared.gate.notify_one();
    settles_to_nothing(&l).await;
    assert_eq!(l.root.depth().await, Ok(0), "the connection is fine");
}

#[tokio::test(start_paused = true)]
async fn a_finished_call_kept_for_its_pipelined_calls_is_freed_after_them() {
    let l = link(AnyCodec::default()).await;
    let promise = l.root.slow_child();
    // Two levels wait on the gated call; the caller keeps only the last one.
    let last = promise.child("x".into()).child("y".into());
    let name = last.name();
    drop(promise);
    drop(last);
    l.shared.entered.notified().await;
    l.shared.gate.notify_one();
    assert_eq!(bounded("pipelined", name).await, Ok("y".to_string()));
    settles_to_nothing(&l).await;
}

#[tokio::test]
async fn a_local_call_stops_once_its_promise_and_pipelined_calls_are_gone() {
    let shared = Arc::new(Shared::default());
    let root = NodeClient::from_local(NodeImpl::root(shared.clone()));
    let promise = root.slow_child();
    let pipelined = promise.child("x".into());
    shared.entered.notified().await;
    drop(pipelined);
    drop(promise);
    bounded("local handler dropped", async {
        while shared.dropped.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(shared.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_while_it_waits_releases_what_it_carried() {
    let l = link(AnyCodec::default()).await;
    let slow = l.root.slow_child();
    // Waits on the server: its argument is an answer still running.
    let first = l.root.inspect(slow.pipelined());
    // Queued behind it on the same target, carrying an object of ours.
    let ours = NodeImpl::root(l.shared.clone()).make("ours".into());
    let second = l.root.inspect(ours);
    l.shared.entered.notified().await;
    tokio::time::sleep(DELAY * 4).await;
    drop(second);
    tokio::time::sleep(DELAY * 4).await;
    l.shared.gate.notify_one();
    let (name, _) = bounded("first", first).await.unwrap();
    assert_eq!(name, "slow");
    drop(slow);
    settles_to_nothing(&l).await;
    assert_eq!(l.client.stats().await.unwrap().exports, 0);
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DebugOnly {
    code: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Opaque;

#[farcall::remote]
pub trait Picky {
    async fn debug_only(&self) -> Result<PickyClient, DebugOnly>;
    async fn opaque(&self) -> Result<PickyClient, Opaque>;
    async fn ping(&self) -> u32;
}

struct PickyImpl;

impl Picky for PickyImpl {
    async fn debug_only(&self) -> Result<PickyClient, DebugOnly> {
        tokio::task::yield_now().await;
        Err(DebugOnly { code: 7 })
    }
    async fn opaque(&self) -> Result<PickyClient, Opaque> {
        Err(Opaque)
    }
    async fn ping(&self) -> u32 {
        1
    }
}

#[tokio::test]
async fn a_failed_promise_describes_any_application_error() {
    for (codec, link) in common::setups() {
        let (_server, client) = common::connect(
            link,
            codec,
            Connection::builder().root(PickyServer::new(PickyImpl)),
            Connection::builder(),
        )
        .await;
        let picky: PickyClient = client.root().await.unwrap();
        let err = bounded("debug", picky.debug_only().ping())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RpcError::PromiseFailed(why) if why.ends_with("DebugOnly { code: 7 }")),
            "{err}"
        );
        let err = bounded("opaque", picky.opaque().ping()).await.unwrap_err();
        assert!(
            matches!(&err, RpcError::PromiseFailed(why) if why.contains("Opaque")),
            "{err}"
        );
        // The call itself gives the typed error.
        let typed = picky
            .debug_only()
            .await
            .err()
            .and_then(|e| e.into_app().ok());
        assert_eq!(typed.map(|e| e.code), Some(7));
    }
}
