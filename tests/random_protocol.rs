//! Randomized protocol schedules, checked against a plain model.
//!
//! Each schedule is one seed. It runs in a fresh current-thread runtime with paused
//! (virtual) time, so a run is fast and (close to) deterministic: two endpoints, both
//! offering a [`Node`] root, are linked by `transport::memory()` wrapped on each end in
//! `transport::delayed_by` (a random latency per frame, 0..=20 ms, sometimes a
//! bandwidth limit), with a random codec. Two to six scripts run concurrently on
//! either side, 20..200 operations in all:
//! - pipelined chains of depth 1..6 (`peer.child(..).child(..).value(..)`) through
//!   handlers that answer at once, yield once, sleep, or never answer, sometimes
//!   through `fail` (an application error), keeping, dropping or awaiting the links
//!   along the way;
//! - plain calls, one-way `bump`s (their totals are checked), callbacks in both
//!   directions (which may await, and may call across again), promises passed as
//!   arguments (`.pipelined()`), local objects sent and coming home;
//! - cancellations at random moments (a call's future dropped), `.timeout()` on calls
//!   that never answer, `release()` of held references, `revoke()` of a callback or
//!   object before or after it is handed out;
//! - in some schedules the link is cut at a random moment: `abort()`, a graceful
//!   `close()`, or a transport that stops in both directions.
//!
//! A second test, `random_stream_schedules` (module `streams` at the end), plays
//! seeded schedules of streams in both directions over the same kind of link: opened,
//! read fully, read partly then dropped, dropped unread, producers that fail, random
//! windows, and in some schedules a cut link; every stream must end as the model says
//! (or with `Disconnected` on a cut link), every producer must be dropped, and on a
//! healthy link both sides' `stats()` (open streams included) return to zero.
//!
//! Checks:
//! - every operation ends within 60 s of virtual time (a hang is a failure) with the
//!   outcome the model predicts: on a healthy link only the expected errors (the
//!   application error of `fail`, `PromiseFailed` for calls pipelined on it,
//!   `Timeout` where the test set one, `Released`, `Revoked`); on a cut link also
//!   `Disconnected` / `Closing`;
//! - every one-way bump arrives (each root counts them), in order with the calls made
//!   after it on the same reference (a node's count);
//! - healthy link: once every handle is dropped, `stats()` is all zeros on both sides,
//!   no handler or callback future is still alive, and every node served by the test
//!   (apart from the two roots) has been dropped; after a graceful close the roots are
//!   dropped too;
//! - cut link: both connections end, and then every node, handler and callback is
//!   gone as well;
//! - every node's `Drop` ran exactly once.
//!
//! Running:
//! - `cargo test --test random_protocol`: the default run, `FARCALL_SCHEDULES`
//!   schedules (default 300) from seed `FARCALL_SEED_BASE` (default 0) on. A failure
//!   prints its seed, the schedule's settings and what went wrong.
//! - `FARCALL_SEED=<n> cargo test --test random_protocol -- --nocapture` replays one
//!   seed and prints every operation with its outcome.
//! - `FARCALL_FRAMES=1` with `FARCALL_SEED` also prints every frame sent (readable
//!   when the schedule's codec is JSON).
//! - Long mode: `FARCALL_SCHEDULES=20000 FARCALL_SEED_BASE=<any> cargo test
//!   --test random_protocol -- --nocapture` (about 25 s per 1,000 schedules in a
//!   debug build).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use farcall::{
    AnyCodec, CallError, Callback, Connection, Promise, RemoteClient, RpcError, Stats, TryPromise,
};
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

/// Schedules in a default run.
const DEFAULT_SCHEDULES: u64 = 300;
/// How long one operation may take (virtual time) before it counts as a hang.
const OP_LIMIT: Duration = Duration::from_secs(60);
/// How long (virtual time) the tables, objects and handlers may take to settle.
const SETTLE_STEP: Duration = Duration::from_millis(10);
const SETTLE_ROUNDS: usize = 1000;
/// Failing seeds reported in full; the others by their first problem.
const REPORTED_IN_FULL: usize = 5;

// ---------------------------------------------------------------------------------
// The interface under test.

/// How long a handler takes before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// Answers without awaiting anything (ready on its first poll).
    Now,
    /// Yields to the scheduler once.
    Yield,
    /// Sleeps this many milliseconds.
    Sleep(u32),
    /// Never answers.
    Never,
}

impl Wait {
    async fn run(self) {
        match self {
            Wait::Now => {}
            Wait::Yield => tokio::task::yield_now().await,
            Wait::Sleep(ms) => sleep(Duration::from_millis(ms.into())).await,
            Wait::Never => std::future::pending().await,
        }
    }
}

/// A node of a tree: every node has a key, and a child's key is `mix(key, tag)`, so
/// the model predicts any node's key from the path that made it.
#[farcall::remote]
pub trait Node {
    /// A new node with key `mix(self.key, tag)`, after `wait`.
    async fn child(&self, tag: u32, wait: Wait) -> NodeClient;
    /// This node's key, after `wait`.
    async fn value(&self, wait: Wait) -> u64;
    /// Adds `n` to this node's count.
    #[farcall(oneway)]
    async fn bump(&self, n: u64);
    /// The sum of the bumps received so far.
    async fn bumped(&self) -> u64;
    /// Refuses with an application error (containing "refused"), after `wait`.
    async fn fail(&self, wait: Wait) -> Result<NodeClient, String>;
    /// Never answers.
    async fn never(&self) -> u64;
    /// After `wait`, calls `cb(x)` and returns its answer plus this node's key.
    async fn call_back(
        &self,
        cb: Callback<u64, Result<u64, String>>,
        x: u64,
        wait: Wait,
    ) -> Result<u64, String>;
    /// Asks `node` for its key.
    async fn echo(&self, node: NodeClient) -> Result<u64, String>;
}

/// A child's key.
fn mix(key: u64, tag: u32) -> u64 {
    scramble(key ^ u64::from(tag).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The SplitMix64 finalizer.
fn scramble(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the test observes of the objects it serves, shared by both sides.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    /// Every node ever made, by id.
    nodes: Mutex<HashMap<u64, NodeRecord>>,
    /// Handler and callback futures that started and were not dropped yet, by a
    /// number of their own, with what they are.
    running: Mutex<HashMap<u64, String>>,
    next_running: AtomicU64,
    /// Callback closures alive.
    callbacks: AtomicI64,
}

#[derive(Debug, Clone, Copy)]
struct NodeRecord {
    key: u64,
    root: bool,
    drops: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// Nodes not dropped yet (roots only if `roots`).
    fn live(&self, roots: bool) -> Vec<(u64, NodeRecord)> {
        let mut live: Vec<_> = lock(&self.nodes)
            .iter()
            .filter(|(_, r)| r.drops == 0 && (roots || !r.root))
            .map(|(id, r)| (*id, *r))
            .collect();
        live.sort_by_key(|(id, _)| *id);
        live
    }

    /// Nodes dropped other than exactly once.
    fn bad_drops(&self) -> Vec<(u64, NodeRecord)> {
        let mut bad: Vec<_> = lock(&self.nodes)
            .iter()
            .filter(|(_, r)| r.drops != 1)
            .map(|(id, r)| (*id, *r))
            .collect();
        bad.sort_by_key(|(id, _)| *id);
        bad
    }

    fn created(&self) -> usize {
        lock(&self.nodes).len()
    }
}

/// Records a running handler (or callback invocation) until dropped.
struct Running {
    reg: Arc<Registry>,
    id: u64,
}

impl Running {
    fn new(reg: &Arc<Registry>, what: String) -> Self {
        let id = reg.next_running.fetch_add(1, Ordering::SeqCst);
        lock(&reg.running).insert(id, what);
        Running {
            reg: reg.clone(),
            id,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.reg.running).remove(&self.id);
    }
}

/// Counts a live callback closure until dropped.
struct Alive(Arc<Registry>);

impl Alive {
    fn new(reg: &Arc<Registry>) -> Self {
        reg.callbacks.fetch_add(1, Ordering::SeqCst);
        Alive(reg.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.callbacks.fetch_sub(1, Ordering::SeqCst);
    }
}

struct NodeImpl {
    id: u64,
    key: u64,
    bumps: AtomicU64,
    reg: Arc<Registry>,
}

impl NodeImpl {
    fn new(reg: &Arc<Registry>, key: u64, root: bool) -> Self {
        let id = reg.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&reg.nodes).insert(
            id,
            NodeRecord {
                key,
                root,
                drops: 0,
            },
        );
        NodeImpl {
            id,
            key,
            bumps: AtomicU64::new(0),
            reg: reg.clone(),
        }
    }

    /// A new local node, as a client.
    fn client(reg: &Arc<Registry>, key: u64) -> NodeClient {
        NodeClient::from_local(NodeImpl::new(reg, key, false))
    }

    fn running(&self, method: &str, wait: Wait) -> Running {
        Running::new(&self.reg, format!("{method}({wait:?}) on {:x}", self.key))
    }
}

impl Drop for NodeImpl {
    fn drop(&mut self) {
        if let Some(record) = lock(&self.reg.nodes).get_mut(&self.id) {
            record.drops += 1;
        }
    }
}

impl Node for NodeImpl {
    async fn child(&self, tag: u32, wait: Wait) -> NodeClient {
        let _running = self.running("child", wait);
        wait.run().await;
        NodeImpl::client(&self.reg, mix(self.key, tag))
    }
    async fn value(&self, wait: Wait) -> u64 {
        let _running = self.running("value", wait);
        wait.run().await;
        self.key
    }
    async fn bump(&self, n: u64) {
        self.bumps.fetch_add(n, Ordering::SeqCst);
    }
    async fn bumped(&self) -> u64 {
        self.bumps.load(Ordering::SeqCst)
    }
    async fn fail(&self, wait: Wait) -> Result<NodeClient, String> {
        let _running = self.running("fail", wait);
        wait.run().await;
        Err(format!("node {:x} refused", self.key))
    }
    async fn never(&self) -> u64 {
        let _running = self.running("never", Wait::Never);
        std::future::pending().await
    }
    async fn call_back(
        &self,
        cb: Callback<u64, Result<u64, String>>,
        x: u64,
        wait: Wait,
    ) -> Result<u64, String> {
        let _running = self.running("call_back", wait);
        wait.run().await;
        let answer = cb.try_call(x).await.map_err(|e| e.to_string())?;
        Ok(answer.wrapping_add(self.key))
    }
    async fn echo(&self, node: NodeClient) -> Result<u64, String> {
        let _running = self.running("echo", Wait::Now);
        node.value(Wait::Now).await.map_err(|e| e.to_string())
    }
}

/// A callback answering `3x + salt` (plus the peer root's key when `peer` is given,
/// which it asks for: a call across from inside a callback), after `wait`.
fn callback(
    reg: &Arc<Registry>,
    wait: Wait,
    salt: u64,
    peer: Option<NodeClient>,
) -> Callback<u64, Result<u64, String>> {
    let alive = Alive::new(reg);
    let reg = reg.clone();
    Callback::new(move |x: u64| {
        let _alive = &alive;
        let running = Running::new(&reg, format!("callback({wait:?})"));
        let peer = peer.clone();
        async move {
            let _running = running;
            wait.run().await;
            let extra = match peer {
                Some(peer) => peer.value(Wait::Now).await.map_err(|e| e.to_string())?,
                None => 0,
            };
            Ok::<u64, String>(x.wrapping_mul(3).wrapping_add(salt).wrapping_add(extra))
        }
    })
}

// ---------------------------------------------------------------------------------
// A link that can be cut.

/// Stops both directions of a link at once, like a pulled cable.
#[derive(Default)]
struct Switch {
    cut: AtomicBool,
    wakers: [AtomicWaker; 2],
}

impl Switch {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            waker.wake();
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// One end of a link behind a [`Switch`]: once cut, the stream ends and sending
/// fails. With `trace`, prints every frame it sends (`FARCALL_FRAMES=1`; readable
/// with the JSON codec).
struct Cuttable<T> {
    inner: T,
    switch: Arc<Switch>,
    end: usize,
    trace: Option<Instant>,
}

fn pulled() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "link cut by the test")
}

impl<T: Stream<Item = io::Result<Bytes>> + Unpin> Stream for Cuttable<T> {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.switch.wakers[this.end].register(cx.waker());
        if this.switch.is_cut() {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_next(cx)
    }
}

impl<T: Sink<Bytes, Error = io::Error> + Unpin> Sink<Bytes> for Cuttable<T> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.switch.is_cut() {
            return Poll::Ready(Err(pulled()));
        }
        Pin::new(&mut this.inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        let this = self.get_mut();
        if this.switch.is_cut() {
            return Err(pulled());
        }
        if let Some(start) = this.trace {
            let at = start.elapsed().as_millis();
            eprintln!("    {at} ms: side {} sends {frame:?}", this.end);
        }
        Pin::new(&mut this.inner).start_send(frame)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.switch.is_cut() {
            return Poll::Ready(Err(pulled()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.switch.is_cut() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

// ---------------------------------------------------------------------------------
// A deterministic generator.

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(scramble(seed ^ 0x5EED_F00D_CAFE_BABE))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        scramble(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------------
// The plan of a schedule, all drawn from its seed before anything runs.

#[derive(Debug)]
struct Schedule {
    seed: u64,
    codec: AnyCodec,
    max_latency_ms: u64,
    bandwidth: Option<f64>,
    /// How and when (ms after the start) the link is cut, if it is.
    cut: Option<(Cut, u64)>,
    root_keys: [u64; 2],
    scripts: Vec<Script>,
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// `abort()` on this side.
    Abort(usize),
    /// `close()` on this side.
    Close(usize),
    /// The transport stops both ways.
    Transport,
}

#[derive(Debug)]
struct Script {
    /// The side (0 or 1) whose connection the script calls through.
    side: usize,
    ops: Vec<Planned>,
}

#[derive(Debug)]
struct Planned {
    op: Op,
    /// Drop the operation's future after this many ms, if it has not ended.
    cancel_after: Option<u64>,
}

/// Which object an operation addresses.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The other side's root.
    Peer,
    /// A node the script holds (any, by index modulo their number; the peer's root
    /// if it holds none).
    Held(usize),
    /// A new node served on the script's own side, with this key (then held).
    Own(u64),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Child(u32, Wait),
    Fail(Wait),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Each link is dropped as soon as the next one is made.
    Latest,
    /// Every link is kept until the end.
    All,
    /// Link `at` (not the last) is awaited, before or after the last call is sent.
    AwaitAt { at: usize, before_end: bool },
    /// Every link is dropped once the last call is sent, before it is awaited.
    DropBeforeEnd,
}

#[derive(Debug)]
enum End {
    /// `value(wait)` on the last link.
    Value(Wait),
    /// One-way `bump`s on the last link, then `bumped()`.
    Bumped(Vec<u64>),
    /// Await the last link itself and hold the node.
    Hold,
    /// Pass the last link, unresolved, to `echo` on another object.
    EchoOn(Pick),
}

#[derive(Debug)]
enum EchoArg {
    /// A promise of a call on `from`, passed before it resolves.
    Promise { from: Pick, step: Step },
    /// A node the script holds.
    Held(usize),
    /// A new local node, maybe revoked before it is passed.
    Own { key: u64, revoke: bool },
}

#[derive(Debug, Clone, Copy)]
enum Revoke {
    No,
    Before,
    /// After this many ms, while the call may be running.
    After(u64),
}

#[derive(Debug)]
enum Op {
    Chain {
        from: Pick,
        steps: Vec<Step>,
        keep: Keep,
        end: End,
        /// `.timeout()` on the last call, in ms.
        limit: Option<u64>,
    },
    Value {
        on: Pick,
        wait: Wait,
    },
    Bump {
        on: Pick,
        n: u64,
    },
    Bumped {
        held: usize,
    },
    CallBack {
        on: Pick,
        x: u64,
        wait: Wait,
        cb_wait: Wait,
        salt: u64,
        nested: bool,
        revoke: Revoke,
    },
    Echo {
        on: Pick,
        arg: EchoArg,
    },
    Never {
        on: Pick,
        /// `.timeout()` in ms; without one the operation is cancelled.
        limit: Option<u64>,
    },
    Release {
        held: usize,
    },
    Drop {
        held: usize,
    },
    Pause {
        ms: u64,
    },
}

fn plan(seed: u64) -> Schedule {
    let mut rng = Rng::new(seed);
    let codec = AnyCodec::ALL[rng.below(AnyCodec::ALL.len() as u64) as usize];
    let max_latency_ms = [0, 2, 5, 20, 20, 20][rng.below(6) as usize];
    let bandwidth = rng.chance(25).then(|| rng.range(20_000, 2_000_000) as f64);
    let cut = rng.chance(15).then(|| {
        let kind = match rng.below(3) {
            0 => Cut::Abort(rng.below(2) as usize),
            1 => Cut::Close(rng.below(2) as usize),
            _ => Cut::Transport,
        };
        (kind, rng.below(400))
    });
    let root_keys = [rng.next(), rng.next()];
    let count = rng.range(2, 6);
    let mut scripts: Vec<Script> = (0..count)
        .map(|_| Script {
            side: rng.below(2) as usize,
            ops: Vec::new(),
        })
        .collect();
    for _ in 0..rng.range(20, 200) {
        let script = rng.below(count) as usize;
        scripts[script].ops.push(planned_op(&mut rng));
    }
    Schedule {
        seed,
        codec,
        max_latency_ms,
        bandwidth,
        cut,
        root_keys,
        scripts,
    }
}

fn wait(rng: &mut Rng, never: bool) -> Wait {
    match rng.below(100) {
        0..=34 => Wait::Now,
        35..=54 => Wait::Yield,
        98.. if never => Wait::Never,
        _ => Wait::Sleep(rng.range(1, 40) as u32),
    }
}

fn pick(rng: &mut Rng) -> Pick {
    match rng.below(100) {
        0..=49 => Pick::Peer,
        50..=84 => Pick::Held(rng.below(16) as usize),
        _ => Pick::Own(rng.next()),
    }
}

fn planned_op(rng: &mut Rng) -> Planned {
    let mut cancel_after = rng.chance(12).then(|| rng.below(60));
    let op = match rng.below(100) {
        0..=29 => {
            let depth = rng.range(1, 6) as usize;
            let steps: Vec<Step> = (0..depth)
                .map(|_| {
                    if rng.chance(8) {
                        Step::Fail(wait(rng, true))
                    } else {
                        Step::Child(rng.next() as u32, wait(rng, true))
                    }
                })
                .collect();
            let mut end = match rng.below(10) {
                0..=4 => End::Value(wait(rng, true)),
                5 | 6 => End::Bumped((0..rng.range(1, 4)).map(|_| rng.range(1, 9)).collect()),
                7 | 8 => End::Hold,
                _ => End::EchoOn(pick(rng)),
            };
            let never_steps = steps
                .iter()
                .any(|s| matches!(s, Step::Child(_, Wait::Never) | Step::Fail(Wait::Never)));
            if never_steps && matches!(end, End::Bumped(_)) {
                // By design a one-way call, which has no `Finish` of its own, keeps the
                // call it is pipelined on running until it can be delivered: ended on a
                // handler that never returns, it would keep it forever.
                end = End::Hold;
            }
            let never = matches!(end, End::Value(Wait::Never)) || never_steps;
            let keep = match rng.below(4) {
                0 => Keep::Latest,
                1 => Keep::All,
                2 if depth >= 2 && !never => Keep::AwaitAt {
                    at: rng.below(depth as u64 - 1) as usize,
                    before_end: rng.chance(50),
                },
                _ => Keep::DropBeforeEnd,
            };
            let limit = rng
                .chance(if never { 50 } else { 5 })
                .then(|| rng.range(1, 100));
            if never && limit.is_none() {
                cancel_after.get_or_insert(rng.range(0, 100));
            }
            Op::Chain {
                from: pick(rng),
                steps,
                keep,
                end,
                limit,
            }
        }
        30..=39 => Op::Value {
            on: pick(rng),
            wait: wait(rng, false),
        },
        40..=47 => Op::Bump {
            on: pick(rng),
            n: rng.range(1, 100),
        },
        48..=52 => Op::Bumped {
            held: rng.below(16) as usize,
        },
        53..=64 => Op::CallBack {
            on: pick(rng),
            x: rng.below(1000),
            wait: wait(rng, false),
            cb_wait: wait(rng, false),
            salt: rng.below(1000),
            nested: rng.chance(30),
            revoke: match rng.below(10) {
                0 => Revoke::Before,
                1 | 2 => Revoke::After(rng.below(40)),
                _ => Revoke::No,
            },
        },
        65..=76 => Op::Echo {
            on: pick(rng),
            arg: match rng.below(4) {
                0 => EchoArg::Promise {
                    from: pick(rng),
                    step: if rng.chance(20) {
                        Step::Fail(wait(rng, false))
                    } else {
                        Step::Child(rng.next() as u32, wait(rng, false))
                    },
                },
                1 => EchoArg::Held(rng.below(16) as usize),
                _ => EchoArg::Own {
                    key: rng.next(),
                    revoke: rng.chance(25),
                },
            },
        },
        77..=80 => {
            let limit = rng.chance(60).then(|| rng.range(1, 100));
            if limit.is_none() {
                cancel_after.get_or_insert(rng.range(0, 100));
            }
            Op::Never {
                on: pick(rng),
                limit,
            }
        }
        81..=84 => Op::Release {
            held: rng.below(16) as usize,
        },
        85..=89 => Op::Drop {
            held: rng.below(16) as usize,
        },
        _ => Op::Pause { ms: rng.below(50) },
    };
    Planned { op, cancel_after }
}

// ---------------------------------------------------------------------------------
// The model: what an operation may end with.

/// An error kind the model may expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Timeout,
    Released,
    Revoked,
    PromiseFailed,
}

impl Class {
    fn matches(self, e: &RpcError) -> bool {
        matches!(
            (self, e),
            (Class::Timeout, RpcError::Timeout)
                | (Class::Released, RpcError::Released)
                | (Class::Revoked, RpcError::Revoked)
                | (Class::PromiseFailed, RpcError::PromiseFailed(_))
        )
    }
}

/// The outcomes the model accepts for one call (any of them).
#[derive(Debug, Clone, Default)]
struct Expect {
    value: Option<u64>,
    /// An application error containing this text.
    app: Option<&'static str>,
    rpc: Vec<Class>,
}

impl Expect {
    fn value(v: u64) -> Self {
        Expect {
            value: Some(v),
            ..Expect::default()
        }
    }

    fn app(text: &'static str) -> Self {
        Expect {
            app: Some(text),
            ..Expect::default()
        }
    }

    fn rpc(class: Class) -> Self {
        Expect {
            rpc: vec![class],
            ..Expect::default()
        }
    }

    fn or_app(mut self, text: &'static str) -> Self {
        self.app = Some(text);
        self
    }

    fn or_rpc(mut self, class: Class) -> Self {
        self.rpc.push(class);
        self
    }

    fn accepts(&self, got: &Got, cut: bool) -> bool {
        match got {
            Got::Value(v) => self.value == Some(*v),
            Got::App(text) => {
                self.app.is_some_and(|a| text.contains(a)) || (cut && link_failure(text))
            }
            Got::Rpc(e) => {
                self.rpc.iter().any(|c| c.matches(e))
                    || (cut
                        && match e {
                            RpcError::Disconnected(_) | RpcError::Closing => true,
                            RpcError::PromiseFailed(why) => link_failure(why),
                            _ => false,
                        })
            }
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any: Vec<String> = Vec::new();
        if let Some(v) = self.value {
            any.push(format!("Value({v})"));
        }
        if let Some(text) = self.app {
            any.push(format!("App(..{text:?}..)"));
        }
        any.extend(self.rpc.iter().map(|c| format!("Rpc({c:?})")));
        if any.is_empty() {
            return f.write_str("no error");
        }
        f.write_str(&any.join(" or "))
    }
}

/// Whether an error text describes a connection that ended.
fn link_failure(text: &str) -> bool {
    text.contains("disconnected") || text.contains("closing") || text.contains("connection")
}

/// What a call ended with.
#[derive(Debug)]
enum Got {
    Value(u64),
    App(String),
    Rpc(RpcError),
}

impl Got {
    fn plain(r: Result<u64, RpcError>) -> Got {
        match r {
            Ok(v) => Got::Value(v),
            Err(e) => Got::Rpc(e),
        }
    }

    fn fallible(r: Result<u64, CallError<String>>) -> Got {
        match r {
            Ok(v) => Got::Value(v),
            Err(CallError::App(text)) => Got::App(text),
            Err(CallError::Rpc(e)) => Got::Rpc(e),
        }
    }
}

/// One checked outcome.
struct Check {
    what: &'static str,
    expect: Expect,
    got: Got,
}

fn check(checks: &mut Vec<Check>, what: &'static str, expect: Expect, got: Got) {
    checks.push(Check { what, expect, got });
}

/// What the link at each position of a chain resolves to.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Node(u64),
    /// This link is the `fail` call.
    Refused,
    /// An earlier link failed.
    Broken,
    /// A handler on the way never answers.
    Hangs,
}

fn fates(base: u64, steps: &[Step]) -> Vec<Fate> {
    let mut prev = Fate::Node(base);
    steps
        .iter()
        .map(|step| {
            prev = match (prev, *step) {
                (Fate::Node(_), Step::Child(_, Wait::Never) | Step::Fail(Wait::Never)) => {
                    Fate::Hangs
                }
                (Fate::Node(key), Step::Child(tag, _)) => Fate::Node(mix(key, tag)),
                (Fate::Node(_), Step::Fail(_)) => Fate::Refused,
                (Fate::Refused | Fate::Broken, _) => Fate::Broken,
                (Fate::Hangs, _) => Fate::Hangs,
            };
            prev
        })
        .collect()
}

impl Fate {
    /// The outcome of awaiting the link itself (then asking the node for its key).
    fn awaited(self) -> Expect {
        match self {
            Fate::Node(key) => Expect::value(key),
            Fate::Refused => Expect::app("refused"),
            Fate::Broken => Expect::rpc(Class::PromiseFailed),
            Fate::Hangs => Expect::rpc(Class::Timeout),
        }
    }

    /// The outcome of a call on the link answering `value` from a node's key.
    fn called(self, value: impl FnOnce(u64) -> Expect) -> Expect {
        match self {
            Fate::Node(key) => value(key),
            Fate::Refused | Fate::Broken => Expect::rpc(Class::PromiseFailed),
            Fate::Hangs => Expect::rpc(Class::Timeout),
        }
    }
}

// ---------------------------------------------------------------------------------
// Running a schedule.

/// What the scripts of one schedule share.
struct Ctx {
    reg: Arc<Registry>,
    cut: bool,
    root_keys: [u64; 2],
    /// Bumps sent to each side's root.
    root_bumps: [AtomicU64; 2],
    failures: Mutex<Vec<String>>,
    verbose: bool,
    start: Instant,
}

impl Ctx {
    fn fail(&self, message: String) {
        if self.verbose {
            eprintln!("  FAILURE: {message}");
        }
        lock(&self.failures).push(message);
    }
}

struct Held {
    node: NodeClient,
    key: u64,
    bumps: u64,
}

enum Slot {
    Root,
    Held(usize),
}

struct Target {
    node: NodeClient,
    key: u64,
    slot: Slot,
}

struct ScriptState {
    ctx: Arc<Ctx>,
    side: usize,
    /// The other side's root.
    peer: NodeClient,
    held: Vec<Held>,
    /// Tasks that revoke a callback later.
    tasks: Vec<JoinHandle<()>>,
}

impl ScriptState {
    fn peer_key(&self) -> u64 {
        self.ctx.root_keys[1 - self.side]
    }

    fn target(&mut self, pick: Pick) -> Target {
        match pick {
            Pick::Held(i) if !self.held.is_empty() => {
                let i = i % self.held.len();
                Target {
                    node: self.held[i].node.clone(),
                    key: self.held[i].key,
                    slot: Slot::Held(i),
                }
            }
            Pick::Own(key) => {
                let node = NodeImpl::client(&self.ctx.reg, key);
                self.held.push(Held {
                    node: node.clone(),
                    key,
                    bumps: 0,
                });
                Target {
                    node,
                    key,
                    slot: Slot::Held(self.held.len() - 1),
                }
            }
            Pick::Peer | Pick::Held(_) => Target {
                node: self.peer.clone(),
                key: self.peer_key(),
                slot: Slot::Root,
            },
        }
    }
}

/// One link of a pipelined chain.
enum Link {
    Plain(Promise<NodeClient>),
    Try(TryPromise<NodeClient, String>),
}

impl Link {
    /// The pipelined client: calls on it target the pending answer.
    fn node(&self) -> &NodeClient {
        match self {
            Link::Plain(p) => p,
            Link::Try(p) => p,
        }
    }

    fn pipelined(&self) -> NodeClient {
        match self {
            Link::Plain(p) => p.pipelined(),
            Link::Try(p) => p.pipelined(),
        }
    }

    fn limit(self, limit: Option<Duration>) -> Self {
        match (self, limit) {
            (Link::Plain(p), Some(d)) => Link::Plain(p.timeout(d)),
            (Link::Try(p), Some(d)) => Link::Try(p.timeout(d)),
            (link, None) => link,
        }
    }

    /// Awaits the link, then asks the node it resolved to for its key.
    async fn settle(self) -> (Got, Option<NodeClient>) {
        let resolved = match self {
            Link::Plain(p) => p.await.map_err(Got::Rpc),
            Link::Try(p) => p.await.map_err(|e| match e {
                CallError::App(text) => Got::App(text),
                CallError::Rpc(e) => Got::Rpc(e),
            }),
        };
        match resolved {
            Ok(node) => (Got::plain(node.value(Wait::Now).await), Some(node)),
            Err(got) => (got, None),
        }
    }
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

async fn run_chain(
    st: &mut ScriptState,
    from: Pick,
    steps: &[Step],
    keep: Keep,
    end: &End,
    limit: Option<u64>,
    checks: &mut Vec<Check>,
) {
    let base = st.target(from);
    let fates = fates(base.key, steps);
    let limit = limit.map(Duration::from_millis);
    let last = steps.len() - 1;

    // Build the chain without awaiting anything.
    let mut links: Vec<Option<Link>> = Vec::with_capacity(steps.len());
    for step in steps {
        let link = {
            let parent = links
                .last()
                .and_then(Option::as_ref)
                .map_or(&base.node, Link::node);
            match *step {
                Step::Child(tag, wait) => Link::Plain(parent.child(tag, wait)),
                Step::Fail(wait) => Link::Try(parent.fail(wait)),
            }
        };
        if keep == Keep::Latest {
            if let Some(previous) = links.last_mut() {
                *previous = None;
            }
        }
        links.push(Some(link));
    }
    drop(base);

    if let Keep::AwaitAt {
        at,
        before_end: true,
    } = keep
    {
        settle_link(st, links[at].take(), fates[at], checks).await;
    }

    // The last call: sent now, awaited below.
    let fate = fates[last];
    let tail = links[last].as_ref().expect("the last link is kept");
    let (terminal, expect): (Boxed<(Got, Option<NodeClient>)>, Expect) = match end {
        End::Value(wait) => {
            let mut call = tail.node().value(*wait);
            if let Some(d) = limit {
                call = call.timeout(d);
            }
            let expect = fate.called(|key| match wait {
                Wait::Never => Expect::rpc(Class::Timeout),
                _ => Expect::value(key),
            });
            (
                Box::pin(async move { (Got::plain(call.await), None) }),
                expect,
            )
        }
        End::Bumped(ns) => {
            for &n in ns {
                if let Err(e) = tail.node().bump(n) {
                    check(checks, "bump on a promise", Expect::default(), Got::Rpc(e));
                }
            }
            let mut call = tail.node().bumped();
            if let Some(d) = limit {
                call = call.timeout(d);
            }
            let expect = fate.called(|_| Expect::value(ns.iter().sum()));
            (
                Box::pin(async move { (Got::plain(call.await), None) }),
                expect,
            )
        }
        End::Hold => {
            let link = links[last].take().expect("kept").limit(limit);
            (Box::pin(link.settle()), fate.awaited())
        }
        End::EchoOn(on) => {
            let on = st.target(*on);
            let mut call = on.node.echo(tail.pipelined());
            if let Some(d) = limit {
                call = call.timeout(d);
            }
            let expect = match fate {
                Fate::Node(key) => Expect::value(key),
                Fate::Refused | Fate::Broken => Expect::app("not available"),
                Fate::Hangs => Expect::rpc(Class::Timeout),
            };
            (
                Box::pin(async move { (Got::fallible(call.await), None) }),
                expect,
            )
        }
    };
    let expect = match limit {
        Some(_) => expect.or_rpc(Class::Timeout),
        None => expect,
    };

    if keep == Keep::DropBeforeEnd {
        links.clear();
    }
    if let Keep::AwaitAt {
        at,
        before_end: false,
    } = keep
    {
        settle_link(st, links[at].take(), fates[at], checks).await;
    }
    let (got, node) = terminal.await;
    check(checks, "end of a chain", expect, got);
    if let (Some(node), Fate::Node(key)) = (node, fate) {
        st.held.push(Held {
            node,
            key,
            bumps: 0,
        });
    }
    drop(links);
}

/// Awaits an intermediate link and holds the node it resolved to.
async fn settle_link(
    st: &mut ScriptState,
    link: Option<Link>,
    fate: Fate,
    checks: &mut Vec<Check>,
) {
    let Some(link) = link else { return };
    let (got, node) = link.settle().await;
    check(checks, "a link awaited mid-chain", fate.awaited(), got);
    if let (Some(node), Fate::Node(key)) = (node, fate) {
        st.held.push(Held {
            node,
            key,
            bumps: 0,
        });
    }
}

async fn run_op(st: &mut ScriptState, op: &Op, checks: &mut Vec<Check>) {
    match op {
        Op::Chain {
            from,
            steps,
            keep,
            end,
            limit,
        } => run_chain(st, *from, steps, *keep, end, *limit, checks).await,
        Op::Value { on, wait } => {
            let t = st.target(*on);
            let got = Got::plain(t.node.value(*wait).await);
            check(checks, "value", Expect::value(t.key), got);
        }
        Op::Bump { on, n } => {
            let t = st.target(*on);
            match t.node.bump(*n) {
                Ok(()) => match t.slot {
                    Slot::Root => {
                        st.ctx.root_bumps[1 - st.side].fetch_add(*n, Ordering::SeqCst);
                    }
                    Slot::Held(i) => st.held[i].bumps += n,
                },
                Err(e) => check(checks, "bump", Expect::default(), Got::Rpc(e)),
            }
        }
        Op::Bumped { held } => {
            if st.held.is_empty() {
                return;
            }
            let h = &st.held[held % st.held.len()];
            let (node, bumps) = (h.node.clone(), h.bumps);
            let got = Got::plain(node.bumped().await);
            check(checks, "bumped", Expect::value(bumps), got);
        }
        Op::CallBack {
            on,
            x,
            wait,
            cb_wait,
            salt,
            nested,
            revoke,
        } => {
            let t = st.target(*on);
            let peer = nested.then(|| st.peer.clone());
            let extra = if *nested { st.peer_key() } else { 0 };
            let cb = callback(&st.ctx.reg, *cb_wait, *salt, peer);
            let answer = x
                .wrapping_mul(3)
                .wrapping_add(*salt)
                .wrapping_add(extra)
                .wrapping_add(t.key);
            let expect = match revoke {
                Revoke::No => Expect::value(answer),
                Revoke::Before => {
                    cb.revoke();
                    let got = Got::fallible(cb.try_call(*x).await);
                    check(
                        checks,
                        "a revoked callback",
                        Expect::rpc(Class::Revoked),
                        got,
                    );
                    Expect::app("revoked")
                }
                Revoke::After(ms) => {
                    let later = cb.clone();
                    let ms = *ms;
                    st.tasks.push(tokio::spawn(async move {
                        sleep(Duration::from_millis(ms)).await;
                        later.revoke();
                    }));
                    Expect::value(answer).or_app("revoked")
                }
            };
            let got = Got::fallible(t.node.call_back(cb, *x, *wait).await);
            check(checks, "call_back", expect, got);
        }
        Op::Echo { on, arg } => {
            let t = st.target(*on);
            match arg {
                EchoArg::Promise { from, step } => {
                    let src = st.target(*from);
                    let (link, expect) = match *step {
                        Step::Child(tag, wait) => (
                            Link::Plain(src.node.child(tag, wait)),
                            Expect::value(mix(src.key, tag)),
                        ),
                        Step::Fail(wait) => {
                            (Link::Try(src.node.fail(wait)), Expect::app("not available"))
                        }
                    };
                    let got = Got::fallible(t.node.echo(link.pipelined()).await);
                    check(checks, "echo of a promise", expect, got);
                    drop(link);
                }
                EchoArg::Held(i) => {
                    if st.held.is_empty() {
                        return;
                    }
                    let h = &st.held[i % st.held.len()];
                    let (node, key) = (h.node.clone(), h.key);
                    let got = Got::fallible(t.node.echo(node).await);
                    check(checks, "echo of a held node", Expect::value(key), got);
                }
                EchoArg::Own { key, revoke } => {
                    let node = NodeImpl::client(&st.ctx.reg, *key);
                    let expect = if *revoke {
                        node.revoke();
                        Expect::app("revoked")
                    } else {
                        Expect::value(*key)
                    };
                    let got = Got::fallible(t.node.echo(node).await);
                    check(checks, "echo of a local node", expect, got);
                }
            }
        }
        Op::Never { on, limit } => {
            let t = st.target(*on);
            let mut call = t.node.never();
            if let Some(ms) = limit {
                call = call.timeout(Duration::from_millis(*ms));
            }
            let got = Got::plain(call.await);
            check(checks, "never", Expect::rpc(Class::Timeout), got);
        }
        Op::Release { held } => {
            let remote: Vec<usize> = (0..st.held.len())
                .filter(|&i| !st.held[i].node.client().is_local())
                .collect();
            if remote.is_empty() {
                return;
            }
            let h = st.held.remove(remote[held % remote.len()]);
            let clone = h.node.clone();
            h.node.release();
            drop(h);
            let got = Got::plain(clone.value(Wait::Now).await);
            check(
                checks,
                "a call after release()",
                Expect::rpc(Class::Released),
                got,
            );
        }
        Op::Drop { held } => {
            if !st.held.is_empty() {
                let i = held % st.held.len();
                st.held.remove(i);
            }
        }
        Op::Pause { ms } => sleep(Duration::from_millis(*ms)).await,
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    ops: usize,
    checks: usize,
    cancelled: usize,
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, other: Summary) {
        self.ops += other.ops;
        self.checks += other.checks;
        self.cancelled += other.cancelled;
    }
}

async fn run_script(mut st: ScriptState, index: usize, ops: Vec<Planned>) -> Summary {
    let ctx = st.ctx.clone();
    let mut summary = Summary::default();
    for (i, planned) in ops.iter().enumerate() {
        let mut checks = Vec::new();
        let op = run_op(&mut st, &planned.op, &mut checks);
        let bounded = async {
            match planned.cancel_after {
                Some(ms) => timeout(Duration::from_millis(ms), op).await.is_err(),
                None => {
                    op.await;
                    false
                }
            }
        };
        let outcome = timeout(OP_LIMIT, bounded).await;
        let at = ctx.start.elapsed().as_millis();
        let name = format!(
            "script {index} (side {}) op {i} at {at} ms: {:?} (cancel after {:?})",
            st.side, planned.op, planned.cancel_after
        );
        summary.ops += 1;
        summary.checks += checks.len();
        match outcome {
            Err(_) => ctx.fail(format!(
                "did not end within {OP_LIMIT:?} (virtual) -- {name}"
            )),
            Ok(cancelled) => {
                if cancelled {
                    summary.cancelled += 1;
                }
                if ctx.verbose {
                    let results: Vec<String> = checks
                        .iter()
                        .map(|c| format!("{} -> {:?}", c.what, c.got))
                        .collect();
                    eprintln!(
                        "{name}: {}{}",
                        if cancelled { "cancelled; " } else { "" },
                        results.join("; ")
                    );
                }
            }
        }
        for c in &checks {
            if !c.expect.accepts(&c.got, ctx.cut) {
                ctx.fail(format!(
                    "{}: got {:?}, expected {} -- {name}",
                    c.what, c.got, c.expect
                ));
            }
        }
    }
    for task in std::mem::take(&mut st.tasks) {
        if timeout(OP_LIMIT, task).await.is_err() {
            ctx.fail(format!("script {index}: a revoking task did not end"));
        }
    }
    summary
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The state the end of a schedule waits for, and what is left while it is not.
async fn leftovers(conns: &[Connection; 2], reg: &Registry, cut: bool) -> Option<String> {
    let mut problems = Vec::new();
    if cut {
        for (side, conn) in conns.iter().enumerate() {
            if !conn.is_closed() {
                problems.push(format!("connection of side {side} has not ended"));
            }
        }
    } else {
        for (side, conn) in conns.iter().enumerate() {
            match conn.stats().await {
                Ok(stats) if stats == Stats::default() => {}
                Ok(stats) => problems.push(format!("side {side}: {stats:?}")),
                Err(e) => problems.push(format!("side {side}: stats failed: {e}")),
            }
        }
    }
    let live = reg.live(cut);
    if !live.is_empty() {
        let shown: Vec<String> = live
            .iter()
            .take(8)
            .map(|(id, r)| {
                format!(
                    "#{id} key {:x}{}",
                    r.key,
                    if r.root { " (root)" } else { "" }
                )
            })
            .collect();
        problems.push(format!(
            "{} nodes not dropped: {}",
            live.len(),
            shown.join(", ")
        ));
    }
    let running: Vec<String> = lock(&reg.running).values().cloned().collect();
    if !running.is_empty() {
        let mut shown = running.clone();
        shown.sort();
        shown.truncate(8);
        problems.push(format!(
            "{} handler futures still alive: {}",
            running.len(),
            shown.join(", ")
        ));
    }
    let callbacks = reg.callbacks.load(Ordering::SeqCst);
    if callbacks != 0 {
        problems.push(format!("{callbacks} callback closures still alive"));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Waits (bounded, virtual time) until nothing is left; returns what is, if anything.
async fn settle(conns: &[Connection; 2], reg: &Registry, cut: bool) -> Option<String> {
    for _ in 0..SETTLE_ROUNDS {
        leftovers(conns, reg, cut).await?;
        sleep(SETTLE_STEP).await;
    }
    leftovers(conns, reg, cut).await
}

fn connect(
    plan: &Schedule,
    reg: &Arc<Registry>,
    switch: &Arc<Switch>,
    transport: farcall::transport::MemoryTransport,
    side: usize,
    trace: bool,
) -> Connection {
    let mut jitter = Rng::new(plan.seed ^ (0xA11CE + side as u64));
    let max = plan.max_latency_ms;
    let mut link = farcall::transport::delayed_by(transport, move |_| {
        Duration::from_millis(jitter.below(max + 1))
    });
    if let Some(rate) = plan.bandwidth {
        link = link.bandwidth(rate);
    }
    Connection::builder()
        .codec(plan.codec)
        .root(NodeServer::new(NodeImpl::new(
            reg,
            plan.root_keys[side],
            true,
        )))
        .connect(Cuttable {
            inner: link,
            switch: switch.clone(),
            end: side,
            trace: trace.then(Instant::now),
        })
}

async fn run_schedule(plan: Schedule, verbose: bool) -> (Summary, Vec<String>) {
    let reg = Arc::new(Registry::default());
    let switch = Arc::new(Switch::default());
    let (ta, tb) = farcall::transport::memory();
    let trace = verbose && std::env::var_os("FARCALL_FRAMES").is_some();
    let conns = [
        connect(&plan, &reg, &switch, ta, 0, trace),
        connect(&plan, &reg, &switch, tb, 1, trace),
    ];
    let mut peers = Vec::new();
    for conn in &conns {
        match conn.root::<NodeClient>().await {
            Ok(peer) => peers.push(peer),
            Err(e) => return (Summary::default(), vec![format!("bootstrap failed: {e}")]),
        }
    }
    let ctx = Arc::new(Ctx {
        reg: reg.clone(),
        cut: plan.cut.is_some(),
        root_keys: plan.root_keys,
        root_bumps: Default::default(),
        failures: Mutex::new(Vec::new()),
        verbose,
        start: Instant::now(),
    });

    let mut scripts = Vec::new();
    for (index, script) in plan.scripts.into_iter().enumerate() {
        let st = ScriptState {
            ctx: ctx.clone(),
            side: script.side,
            peer: peers[script.side].clone(),
            held: Vec::new(),
            tasks: Vec::new(),
        };
        scripts.push(tokio::spawn(run_script(st, index, script.ops)));
    }
    let cutter = plan.cut.map(|(how, at)| {
        let (conns, switch, ctx) = (conns.clone(), switch.clone(), ctx.clone());
        tokio::spawn(async move {
            sleep(Duration::from_millis(at)).await;
            if ctx.verbose {
                eprintln!("cut at {} ms: {how:?}", ctx.start.elapsed().as_millis());
            }
            let ended = match how {
                Cut::Abort(side) => timeout(OP_LIMIT, conns[side].abort()).await,
                Cut::Close(side) => timeout(OP_LIMIT, conns[side].close()).await,
                Cut::Transport => {
                    switch.cut();
                    Ok(())
                }
            };
            if ended.is_err() {
                ctx.fail(format!("{how:?} did not complete within {OP_LIMIT:?}"));
            }
        })
    });

    let mut summary = Summary::default();
    for (index, script) in scripts.into_iter().enumerate() {
        // Every operation is bounded; this bound only guards the harness itself.
        match timeout(Duration::from_secs(24 * 3600), script).await {
            Ok(Ok(s)) => summary += s,
            Ok(Err(e)) if e.is_panic() => ctx.fail(format!(
                "script {index} panicked: {}",
                panic_message(&*e.into_panic())
            )),
            Ok(Err(e)) => ctx.fail(format!("script {index} failed: {e}")),
            Err(_) => ctx.fail(format!("script {index} did not end")),
        }
    }
    if let Some(cutter) = cutter {
        if let Err(e) = cutter.await {
            ctx.fail(format!("the cutting task failed: {e}"));
        }
    }

    if !ctx.cut {
        // Every one-way bump arrived.
        for (side, peer) in peers.iter().enumerate() {
            let sent = ctx.root_bumps[1 - side].load(Ordering::SeqCst);
            match timeout(OP_LIMIT, peer.bumped()).await {
                Ok(Ok(counted)) if counted == sent => {}
                other => ctx.fail(format!(
                    "the root of side {} counted {other:?} bumps; {sent} were sent",
                    1 - side
                )),
            }
        }
    }
    drop(peers);

    if let Some(left) = settle(&conns, &reg, ctx.cut).await {
        ctx.fail(format!(
            "once every handle was dropped, after {:?} (virtual): {left}",
            SETTLE_STEP * SETTLE_ROUNDS as u32
        ));
    } else if !ctx.cut {
        // A graceful close on both sides drops the roots as well.
        for (side, conn) in conns.iter().enumerate() {
            if timeout(OP_LIMIT, conn.close()).await.is_err() {
                ctx.fail(format!("close() of side {side} did not complete"));
            }
        }
        if let Some(left) = settle(&conns, &reg, true).await {
            ctx.fail(format!("after closing both sides: {left}"));
        }
    }
    for (side, conn) in conns.iter().enumerate() {
        if conn.close_reason() == Some(farcall::CloseReason::TaskStopped) {
            ctx.fail(format!("the connection task of side {side} died"));
        }
    }
    let bad = reg.bad_drops();
    if !bad.is_empty() && lock(&ctx.failures).is_empty() {
        let shown: Vec<String> = bad
            .iter()
            .take(8)
            .map(|(id, r)| format!("#{id} key {:x} dropped {} times", r.key, r.drops))
            .collect();
        ctx.fail(format!(
            "{} of {} nodes were not dropped exactly once: {}",
            bad.len(),
            reg.created(),
            shown.join(", ")
        ));
    }

    let failures = std::mem::take(&mut *lock(&ctx.failures));
    (summary, failures)
}

/// Runs one seed in its own runtime; a panic counts as a failure.
fn schedule(seed: u64, verbose: bool) -> (String, Summary, Vec<String>) {
    let plan = plan(seed);
    let ops: usize = plan.scripts.iter().map(|s| s.ops.len()).sum();
    let about = format!(
        "codec {:?}, latency 0..={} ms, bandwidth {}, cut {}, {} scripts (sides {:?}), {ops} ops",
        plan.codec,
        plan.max_latency_ms,
        plan.bandwidth
            .map_or("unlimited".to_string(), |b| format!("{b:.0} B/s")),
        plan.cut.map_or("none".to_string(), |(how, at)| format!(
            "{how:?} at {at} ms"
        )),
        plan.scripts.len(),
        plan.scripts.iter().map(|s| s.side).collect::<Vec<_>>(),
    );
    if verbose {
        eprintln!("seed {seed}: {about}");
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(run_schedule(plan, verbose))
    }));
    let (summary, failures) = result.unwrap_or_else(|panic| {
        (
            Summary::default(),
            vec![format!("panicked: {}", panic_message(&*panic))],
        )
    });
    (about, summary, failures)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

#[test]
fn random_protocol_schedules() {
    let (seeds, verbose): (Vec<u64>, bool) = match env_u64("FARCALL_SEED") {
        Some(seed) => (vec![seed], true),
        None => {
            let base = env_u64("FARCALL_SEED_BASE").unwrap_or(0);
            let count = env_u64("FARCALL_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
            ((base..base.saturating_add(count)).collect(), false)
        }
    };
    let started = std::time::Instant::now();
    let mut total = Summary::default();
    let mut failed: Vec<(u64, String)> = Vec::new();
    for &seed in &seeds {
        let (about, summary, failures) = schedule(seed, verbose);
        total += summary;
        match failures.first() {
            None => {}
            Some(first) => {
                if failed.len() < REPORTED_IN_FULL || verbose {
                    eprintln!(
                        "\nseed {seed} FAILED ({about}); problems: {}",
                        failures.len()
                    );
                    for f in failures.iter().take(10) {
                        eprintln!("  - {f}");
                    }
                    eprintln!(
                        "  replay: FARCALL_SEED={seed} cargo test --test random_protocol -- --nocapture"
                    );
                }
                failed.push((seed, first.clone()));
            }
        }
    }
    eprintln!(
        "\n{} schedules ({} failed) in {:.1?}: {} ops, {} checked outcomes, {} cancelled ops",
        seeds.len(),
        failed.len(),
        started.elapsed(),
        total.ops,
        total.checks,
        total.cancelled
    );
    if !failed.is_empty() {
        let listed: Vec<String> = failed
            .iter()
            .map(|(seed, first)| {
                let first: String = first.chars().take(400).collect();
                format!("  seed {seed}: {first}")
            })
            .collect();
        panic!(
            "{} of {} schedules failed (replay one with FARCALL_SEED=<seed> cargo test --test random_protocol -- --nocapture):\n{}",
            failed.len(),
            seeds.len(),
            listed.join("\n")
        );
    }
}

/// Random schedules of streams (see the module docs).
mod streams {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use farcall::{AnyCodec, Connection, RpcError, Stream};
    use futures_util::StreamExt;

    use super::{env_u64, Rng};

    const DEFAULT_SCHEDULES: u64 = 60;

    #[farcall::remote]
    pub trait Streamer {
        /// `n` items of `size` bytes; the item at `fail_at`, if any, is an error.
        async fn produce(&self, n: u64, size: u64, fail_at: Option<u64>) -> Stream<Vec<u8>>;
        /// Reads up to `take` items, then drops the stream; returns how many it read
        /// and the error it ended with, if it ended with one.
        async fn consume(&self, data: Stream<Vec<u8>>, take: u64) -> (u64, Option<String>);
    }

    /// Counts live producers: each producer's items hold one.
    struct Live(Arc<AtomicUsize>);

    impl Live {
        fn new(count: &Arc<AtomicUsize>) -> Self {
            count.fetch_add(1, Ordering::SeqCst);
            Live(count.clone())
        }
    }

    impl Drop for Live {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn producer(
        live: &Arc<AtomicUsize>,
        n: u64,
        size: u64,
        fail_at: Option<u64>,
    ) -> Stream<Vec<u8>> {
        let guard = Live::new(live);
        let items = futures_util::stream::iter(0..n).then(move |i| {
            let _held = &guard;
            async move {
                if i % 7 == 3 {
                    tokio::task::yield_now().await;
                }
                if Some(i) == fail_at {
                    Err("producer failed")
                } else {
                    Ok(vec![i as u8; size as usize])
                }
            }
        });
        Stream::try_new(items)
    }

    async fn read(mut data: Stream<Vec<u8>>, take: u64) -> (u64, Option<String>) {
        let mut got = 0;
        while got < take {
            match data.next().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => return (got, Some(e.to_string())),
                None => return (got, None),
            }
        }
        (got, None)
    }

    struct Impl(Arc<AtomicUsize>);

    impl Streamer for Impl {
        async fn produce(&self, n: u64, size: u64, fail_at: Option<u64>) -> Stream<Vec<u8>> {
            producer(&self.0, n, size, fail_at)
        }
        async fn consume(&self, data: Stream<Vec<u8>>, take: u64) -> (u64, Option<String>) {
            read(data, take).await
        }
    }

    /// What reading `take` items of a producer of `n` failing at `fail_at` gives.
    fn expected(n: u64, fail_at: Option<u64>, take: u64) -> (u64, bool) {
        let limit = fail_at.map_or(n, |f| f.min(n));
        let failed = fail_at.is_some_and(|f| f < n) && take > limit;
        (take.min(limit), failed)
    }

    async fn run(seed: u64) -> Result<String, String> {
        let mut rng = Rng::new(seed);
        let codec = AnyCodec::ALL[rng.below(AnyCodec::ALL.len() as u64) as usize];
        let max_latency = rng.range(0, 20);
        let bandwidth = rng
            .chance(30)
            .then(|| rng.range(200_000, 20_000_000) as f64);
        let window = 1usize << rng.range(10, 18);
        let cut = rng
            .chance(25)
            .then(|| Duration::from_millis(rng.range(0, 200)));
        let live = Arc::new(AtomicUsize::new(0));
        let (a, b) = farcall::transport::memory();
        let link = |t, salt: u64| {
            let mut jitter = Rng::new(seed ^ salt);
            let mut link = farcall::transport::delayed_by(t, move |_| {
                Duration::from_millis(jitter.below(max_latency + 1))
            });
            if let Some(rate) = bandwidth {
                link = link.bandwidth(rate);
            }
            link
        };
        let builder = || {
            Connection::builder()
                .codec(codec)
                .stream_window(window)
                .max_stream_window(window * 8)
        };
        let server = builder()
            .root(StreamerServer::new(Impl(live.clone())))
            .connect(link(a, 1));
        let client = builder().connect(link(b, 2));
        let about = format!(
            "codec {codec:?}, latency <= {max_latency} ms, bandwidth {bandwidth:?}, window {window}, cut {cut:?}"
        );
        let root: StreamerClient = client
            .root()
            .await
            .map_err(|e| format!("{about}: root: {e}"))?;
        let mut ops = Vec::new();
        for _ in 0..rng.range(1, 6) {
            let n = rng.range(0, 200);
            let size = rng.range(0, 4096);
            let fail_at = rng.chance(20).then(|| rng.range(0, n + 5));
            let take = match rng.below(4) {
                0 => 0,
                1 => rng.range(0, n),
                _ => n + 10,
            };
            let root = root.clone();
            let live = live.clone();
            let to_server = rng.chance(50);
            ops.push(tokio::spawn(async move {
                let got = if to_server {
                    root.consume(producer(&live, n, size, fail_at), take).await
                } else {
                    match root.produce(n, size, fail_at).await {
                        Ok(data) => Ok(read(data, take).await),
                        Err(e) => Err(e),
                    }
                };
                (n, fail_at, take, got)
            }));
        }
        if let Some(at) = cut {
            tokio::time::sleep(at).await;
            client.abort().await;
        }
        for op in ops {
            let (n, fail_at, take, got) = tokio::time::timeout(Duration::from_secs(60), op)
                .await
                .map_err(|_| format!("{about}: a stream op hung"))?
                .map_err(|e| format!("{about}: op panicked: {e}"))?;
            let (want, fails) = expected(n, fail_at, take);
            match got {
                Ok((read, error)) if cut.is_none() => {
                    let failed = error.is_some();
                    if read != want || failed != fails {
                        return Err(format!(
                            "{about}: n {n} fail_at {fail_at:?} take {take}: read {read} error {error:?}, expected {want} failed {fails}"
                        ));
                    }
                }
                Ok((read, _)) => {
                    if read > want {
                        return Err(format!("{about}: read {read} of at most {want}"));
                    }
                }
                Err(e) if cut.is_some() && matches!(e, RpcError::Disconnected(_)) => {}
                Err(e) => return Err(format!("{about}: unexpected error {e}")),
            }
        }
        drop(root);
        // Every producer is dropped, and on a healthy link every table is empty.
        let settled = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let producers_gone = live.load(Ordering::SeqCst) == 0;
                let tables = if cut.is_some() {
                    true
                } else {
                    let (s, c) = (server.stats().await, client.stats().await);
                    matches!((s, c), (Ok(s), Ok(c)) if s.is_zero() && c.is_zero())
                };
                if producers_gone && tables {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if settled.is_err() {
            return Err(format!(
                "{about}: did not settle: {} producers live, server {:?}, client {:?}",
                live.load(Ordering::SeqCst),
                server.stats().await,
                client.stats().await
            ));
        }
        Ok(about)
    }

    #[test]
    fn random_stream_schedules() {
        let seeds: Vec<u64> = match env_u64("FARCALL_STREAM_SEED") {
            Some(seed) => vec![seed],
            None => {
                let base = env_u64("FARCALL_SEED_BASE").unwrap_or(0);
                let count = env_u64("FARCALL_STREAM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
                (base..base + count).collect()
            }
        };
        let mut failed = Vec::new();
        for seed in seeds.iter().copied() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            if let Err(e) = rt.block_on(run(seed)) {
                failed.push(format!("seed {seed}: {e}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {} stream schedules failed (replay with FARCALL_STREAM_SEED=<seed>):\n{}",
            failed.len(),
            seeds.len(),
            failed.join("\n")
        );
    }
}
