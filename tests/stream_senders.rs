//! A `StreamSender` passed across: the side that receives it writes into a stream
//! the other side reads, with flow control, ends, failures and release to zero.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bounded, connect, Link};
use farcall::{
    AnyCodec, ByteStream, ByteWriter, CallError, Connection, RpcError, Stream, StreamSender,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};

#[farcall::remote]
pub trait Feeds {
    /// Writes `0..n` into `out`, awaiting a timer every few items; returns how many
    /// were taken (fewer if the reader went away).
    async fn count(&self, n: u64, out: StreamSender<u64>) -> u64;
    /// Keeps `out` and writes `0, 1, ...` into it from a task until the reader goes
    /// (at most a million); returns at once.
    async fn subscribe(&self, out: StreamSender<u64>);
    /// Writes `0..ok`, then panics.
    async fn panics_after(&self, ok: u64, out: StreamSender<u64>) -> u64;
    /// Writes `0..ok` and then fails the stream with `why`.
    async fn failing(&self, ok: u64, why: String, out: StreamSender<u64>);
    /// A sender the caller writes into; the server sums what arrives.
    async fn collector(&self) -> StreamSender<u64>;
    /// The sum of the collector's stream, once it ended (or why it failed).
    async fn collected(&self) -> Result<u64, String>;
    /// Hands `out` on to `to`, which writes `0..n` into it.
    async fn relay(&self, n: u64, out: StreamSender<u64>, to: FeedsClient) -> u64;
    /// Writes `n` bytes (byte `i` is `i % 251`) into `out`, awaiting now and then;
    /// shuts it down unless `truncate`.
    async fn save(&self, n: usize, out: ByteWriter, truncate: bool) -> Result<(), String>;
    /// `out`, handed back.
    async fn bounce(&self, out: StreamSender<u64>) -> StreamSender<u64>;
    /// Writes `n` into each sender in `outs` and each `more` brings; returns how
    /// many there were.
    async fn fan(
        &self,
        outs: Vec<Option<StreamSender<u64>>>,
        more: Stream<StreamSender<u64>>,
        n: u64,
    ) -> u64;
}

#[derive(Clone)]
struct Server {
    /// Items the subscription task got into its sender.
    pushed: Arc<AtomicU64>,
    /// Told when a subscription task saw its reader gone.
    reader_gone: Arc<Notify>,
    collected: watch::Sender<Option<Result<u64, String>>>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            pushed: Arc::default(),
            reader_gone: Arc::default(),
            collected: watch::channel(None).0,
        }
    }
}

impl Feeds for Server {
    async fn count(&self, n: u64, out: StreamSender<u64>) -> u64 {
        for i in 0..n {
            if i % 7 == 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if out.send(i).await.is_err() {
                return i;
            }
        }
        n
    }

    async fn panics_after(&self, ok: u64, out: StreamSender<u64>) -> u64 {
        for i in 0..ok {
            tokio::task::yield_now().await;
            out.send(i).await.unwrap();
        }
        panic!("a bug in the producer after {ok} items");
    }

    async fn subscribe(&self, out: StreamSender<u64>) {
        let (pushed, gone) = (self.pushed.clone(), self.reader_gone.clone());
        tokio::spawn(async move {
            for i in 0..1_000_000 {
                if out.send(i).await.is_err() {
                    break;
                }
                pushed.fetch_add(1, Ordering::SeqCst);
            }
            gone.notify_one();
        });
    }

    async fn failing(&self, ok: u64, why: String, out: StreamSender<u64>) {
        for i in 0..ok {
            tokio::task::yield_now().await;
            if out.send(i).await.is_err() {
                return;
            }
        }
        let _ = out.fail(why).await;
    }

    async fn collector(&self) -> StreamSender<u64> {
        let (tx, mut items) = Stream::channel(4);
        let collected = self.collected.clone();
        collected.send_replace(None);
        tokio::spawn(async move {
            let mut sum = 0;
            let outcome = loop {
                match items.next().await {
                    Some(Ok(n)) => sum += n,
                    Some(Err(e)) => break Err(e.to_string()),
                    None => break Ok(sum),
                }
            };
            collected.send_replace(Some(outcome));
        });
        tx
    }

    async fn collected(&self) -> Result<u64, String> {
        let mut seen = self.collected.subscribe();
        let outcome = seen.wait_for(Option::is_some).await.expect("kept");
        outcome.clone().expect("checked")
    }

    async fn relay(&self, n: u64, out: StreamSender<u64>, to: FeedsClient) -> u64 {
        to.count(n, out).await.unwrap_or(0)
    }

    async fn save(&self, n: usize, mut out: ByteWriter, truncate: bool) -> Result<(), String> {
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        for (k, piece) in data.chunks(10_000).enumerate() {
            if k % 3 == 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            out.write_all(piece).await.map_err(|e| e.to_string())?;
        }
        if !truncate {
            out.shutdown().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn bounce(&self, out: StreamSender<u64>) -> StreamSender<u64> {
        out
    }

    async fn fan(
        &self,
        outs: Vec<Option<StreamSender<u64>>>,
        mut more: Stream<StreamSender<u64>>,
        n: u64,
    ) -> u64 {
        let mut count = 0;
        for out in outs.into_iter().flatten() {
            out.send(n).await.unwrap();
            count += 1;
        }
        while let Some(out) = more.next().await {
            out.unwrap().send(n).await.unwrap();
            count += 1;
        }
        count
    }
}

struct Pair {
    server: Connection,
    client: Connection,
    feeds: FeedsClient,
    imp: Server,
}

async fn pair_with(link: Link, codec: AnyCodec, builder: fn() -> farcall::Builder) -> Pair {
    let imp = Server::default();
    let (server, client) = connect(
        link,
        codec,
        builder().root(FeedsServer::new(imp.clone())),
        builder(),
    )
    .await;
    let feeds: FeedsClient = bounded("root", client.root()).await.expect("root");
    Pair {
        server,
        client,
        feeds,
        imp,
    }
}

async fn pair(link: Link) -> Pair {
    pair_with(link, AnyCodec::default(), Connection::builder).await
}

/// Waits until both sides' tables are empty.
async fn settled(p: &Pair) {
    common::tables_return_to_zero(&p.server, &p.client).await;
}

/// Reads a stream to its end: its items, and the error it ended with, if any.
async fn drain(mut s: Stream<u64>) -> (Vec<u64>, Option<RpcError>) {
    let mut items = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(n) => items.push(n),
            Err(e) => {
                assert!(s.next().await.is_none(), "nothing after an error");
                return (items, Some(e));
            }
        }
    }
    (items, None)
}

const BOTH: [Link; 2] = [Link::Memory, Link::Tcp];

#[tokio::test]
async fn a_handler_that_awaits_writes_into_the_callers_stream_in_every_codec() {
    for &codec in AnyCodec::ALL {
        for link in BOTH {
            let p = pair_with(link, codec, Connection::builder).await;
            let (tx, items) = Stream::channel(8);
            // The call returns once the server wrote everything (each `send`
            // waited for room), while this side reads.
            let (sent, (got, error)) = bounded("count", async {
                tokio::join!(p.feeds.count(500, tx), drain(items))
            })
            .await;
            assert_eq!(sent.unwrap(), 500, "{codec:?} {link:?}");
            assert!(error.is_none(), "{codec:?} {link:?}: {error:?}");
            assert_eq!(got, (0..500).collect::<Vec<_>>(), "{codec:?} {link:?}");
            settled(&p).await;
        }
    }
}

#[tokio::test]
async fn the_stream_ends_only_when_every_sender_here_and_there_is_gone() {
    let p = pair(Link::Memory).await;
    let (tx, mut items) = Stream::channel(8);
    // Two clones handed to two calls, and one kept.
    let (a, b) = bounded("two writers", async {
        tokio::join!(p.feeds.count(50, tx.clone()), p.feeds.count(30, tx.clone()))
    })
    .await;
    assert_eq!((a.unwrap(), b.unwrap()), (50, 30));
    let mut got = Vec::new();
    for _ in 0..80 {
        got.push(bounded("item", items.next()).await.unwrap().unwrap());
    }
    // The remote writers are done, but this side's sender still holds it open.
    tx.send(1000).await.unwrap();
    assert_eq!(
        bounded("own item", items.next()).await.unwrap().unwrap(),
        1000
    );
    drop(tx);
    assert!(bounded("end", items.next()).await.is_none());
    got.sort_unstable();
    let mut want: Vec<u64> = (0..50).chain(0..30).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    settled(&p).await;
}

#[tokio::test]
async fn a_failing_writer_fails_the_readers_stream_after_its_items() {
    for link in BOTH {
        let p = pair(link).await;
        let (tx, items) = Stream::channel(2);
        let (call, (got, error)) = bounded("failing", async {
            tokio::join!(p.feeds.failing(3, "disk full".into(), tx), drain(items))
        })
        .await;
        call.unwrap();
        assert_eq!(got, [0, 1, 2]);
        match error {
            Some(RpcError::StreamFailed(why)) => assert_eq!(why, "disk full"),
            other => panic!("{link:?}: expected StreamFailed(disk full), got {other:?}"),
        }
        settled(&p).await;
    }
}

#[tokio::test]
async fn a_reader_that_goes_away_stops_the_remote_writer() {
    for link in BOTH {
        let p = pair(link).await;
        let (tx, mut items) = Stream::channel(4);
        bounded("subscribe", p.feeds.subscribe(tx)).await.unwrap();
        for want in 0..20 {
            assert_eq!(bounded("item", items.next()).await.unwrap().unwrap(), want);
        }
        drop(items);
        bounded(
            "the writer sees its reader gone",
            p.imp.reader_gone.notified(),
        )
        .await;
        let pushed = p.imp.pushed.load(Ordering::SeqCst);
        assert!(pushed < 1_000_000, "{link:?}: the writer never stopped");
        settled(&p).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_reader_holds_the_remote_writer_back() {
    // Windows of 8 items (u64s cost 8 bytes each), never grown.
    fn small() -> farcall::Builder {
        Connection::builder()
            .stream_window(64)
            .max_stream_window(64)
    }
    let p = pair_with(Link::Memory, AnyCodec::default(), small).await;
    let (tx, mut items) = Stream::channel(4);
    bounded("subscribe", p.feeds.subscribe(tx)).await.unwrap();
    assert_eq!(bounded("first", items.next()).await.unwrap().unwrap(), 0);
    // The paused clock moves only once every task is idle: the writer is then
    // blocked on its `send`.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pushed = p.imp.pushed.load(Ordering::SeqCst);
    // This side's local stream (a local window of 64 KiB: 8192 u64s, its channel
    // of 4 and its pump's item), the forwarder's item, the link's window (8) and
    // the pump's batch (8), the remote channel (16) and the pump's item, and the
    // one read: far below the million the writer would push unchecked.
    assert!(
        pushed <= 8192 + 4 + 1 + 1 + 8 + 8 + 16 + 1 + 1,
        "pushed {pushed}"
    );
    // Reading on lets it go on, in order.
    for want in 1..10_000 {
        assert_eq!(bounded("item", items.next()).await.unwrap().unwrap(), want);
    }
    drop(items);
    bounded(
        "the writer sees its reader gone",
        p.imp.reader_gone.notified(),
    )
    .await;
    settled(&p).await;
}

#[tokio::test]
async fn a_cut_link_fails_the_readers_stream_and_frees_the_writer() {
    for link in BOTH {
        let p = pair(link).await;
        let (tx, mut items) = Stream::channel(4);
        bounded("subscribe", p.feeds.subscribe(tx)).await.unwrap();
        for _ in 0..5 {
            bounded("item", items.next()).await.unwrap().unwrap();
        }
        p.server.abort().await;
        // `drain` also checks nothing follows the error.
        let (_, error) = bounded("the stream ends", drain(items)).await;
        let error = error.unwrap_or_else(|| panic!("{link:?}: ended as if whole"));
        assert!(
            matches!(&error, RpcError::StreamFailed(why) if why.contains("broke")),
            "{link:?}: {error}"
        );
        bounded(
            "the writer sees its reader gone",
            p.imp.reader_gone.notified(),
        )
        .await;
    }
}

#[tokio::test]
async fn a_returned_sender_writes_into_the_servers_stream() {
    for link in BOTH {
        let p = pair(link).await;
        let tx = bounded("collector", p.feeds.collector()).await.unwrap();
        for n in 1..=100 {
            bounded("send", tx.send(n)).await.unwrap();
        }
        assert!(!tx.is_closed());
        drop(tx);
        assert_eq!(
            bounded("collected", p.feeds.collected()).await.unwrap(),
            5050
        );
        settled(&p).await;

        let tx = bounded("collector", p.feeds.collector()).await.unwrap();
        tx.send(5).await.unwrap();
        bounded("fail", tx.fail("cancelled by the user"))
            .await
            .unwrap();
        let failed = bounded("collected", p.feeds.collected()).await;
        assert!(
            matches!(&failed, Err(CallError::App(why)) if why.contains("cancelled by the user")),
            "{failed:?}"
        );
        settled(&p).await;
    }
}

#[tokio::test]
async fn a_sender_handed_on_to_a_third_party() {
    // client -> relay server -> counting server: the third writes into the
    // client's stream through the relay.
    let (w_server, w_client) = connect(
        Link::Memory,
        AnyCodec::default(),
        Connection::builder().root(FeedsServer::new(Server::default())),
        Connection::builder(),
    )
    .await;
    let far: FeedsClient = bounded("root", w_client.root()).await.unwrap();
    let p = pair(Link::Tcp).await;
    let (tx, items) = Stream::channel(4);
    let (n, (got, error)) = bounded("relay", async {
        tokio::join!(p.feeds.relay(300, tx, far.clone()), drain(items))
    })
    .await;
    assert_eq!(n.unwrap(), 300);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    drop(far);
    settled(&p).await;
    common::tables_return_to_zero(&w_server, &w_client).await;
}

#[tokio::test]
async fn a_sender_handed_back_and_senders_inside_values_and_streams_in_every_codec() {
    for &codec in AnyCodec::ALL {
        let p = pair_with(Link::Memory, codec, Connection::builder).await;
        let (tx, items) = Stream::channel(4);
        // Back where it came from: writing into it reaches this side's stream.
        let back = bounded("bounce", p.feeds.bounce(tx.clone())).await.unwrap();
        for n in 0..20 {
            bounded("send", back.send(n)).await.unwrap();
        }
        drop(back);
        let outs = vec![Some(tx.clone()), None, Some(tx.clone())];
        let more = Stream::iter([tx.clone(), tx.clone()]);
        let fanned = bounded("fan", p.feeds.fan(outs, more, 100)).await;
        assert_eq!(fanned.unwrap(), 4, "{codec:?}");
        drop(tx);
        let (mut got, error) = bounded("drain", drain(items)).await;
        assert!(error.is_none(), "{codec:?}: {error:?}");
        got.sort_unstable();
        let mut want: Vec<u64> = (0..20).chain([100; 4]).collect();
        want.sort_unstable();
        assert_eq!(got, want, "{codec:?}");
        settled(&p).await;
    }
}

/// A small deterministic generator (splitmix64): schedules are reproducible from
/// the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn random_writers_and_readers_against_a_model() {
    let base: u64 = std::env::var("FARCALL_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let runs: u64 = std::env::var("FARCALL_SENDER_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in base..base + runs {
        let outcome = tokio::spawn(one_schedule(seed)).await;
        if let Err(e) = outcome {
            panic!("schedule with seed {seed} failed (FARCALL_SEED_BASE={seed} FARCALL_SENDER_SCHEDULES=1 reproduces it): {e}");
        }
    }
}

/// One schedule: a few writers of random lengths and failures into one reader
/// that reads a random number of items, then drops or drains the stream. The
/// model: each writer's items arrive in its order; a reader that drains sees all
/// of them, or stops at the first failure; every call ends and the tables return
/// to zero.
async fn one_schedule(seed: u64) {
    let mut rng = Rng(seed);
    let link = if rng.below(2) == 0 {
        Link::Memory
    } else {
        Link::Tcp
    };
    let codec = AnyCodec::ALL[rng.below(AnyCodec::ALL.len() as u64) as usize];
    let p = pair_with(link, codec, Connection::builder).await;
    let (tx, mut items) = Stream::channel(1 + rng.below(8) as usize);
    let writers = 1 + rng.below(3);
    let mut lengths = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..writers {
        let n = rng.below(200);
        lengths.push(n);
        let (feeds, out) = (p.feeds.clone(), tx.clone());
        calls.push(tokio::spawn(async move { feeds.count(n, out).await }));
    }
    let fails = rng.below(4) == 0;
    let failing = fails.then(|| {
        let (feeds, out) = (p.feeds.clone(), tx.clone());
        tokio::spawn(async move { feeds.failing(5, "chosen failure".into(), out).await })
    });
    drop(tx);
    let total: u64 = lengths.iter().sum();
    let read_all = rng.below(3) != 0;
    let limit = if read_all {
        u64::MAX
    } else {
        rng.below(total + 1)
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reading = {
        let seen = seen.clone();
        async move {
            let mut failed = None;
            while (seen.lock().unwrap().len() as u64) < limit {
                match items.next().await {
                    Some(Ok(n)) => seen.lock().unwrap().push(n),
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            failed
        }
    };
    let failed = bounded(&format!("seed {seed}: reading"), reading).await;
    for call in calls {
        let sent = bounded(&format!("seed {seed}: a writer's call ends"), call)
            .await
            .unwrap()
            .unwrap();
        assert!(sent <= 200, "seed {seed}");
    }
    if let Some(f) = failing {
        bounded(&format!("seed {seed}: the failing call ends"), f)
            .await
            .unwrap()
            .unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    // Items of one writer arrive in order; with several writers the values
    // interleave, so check counts: no value appears more often than the writers
    // that write it.
    let mut counts = std::collections::HashMap::new();
    for n in &seen {
        *counts.entry(*n).or_insert(0u64) += 1;
    }
    for (n, c) in &counts {
        let writers_of_n =
            lengths.iter().filter(|&&len| *n < len).count() as u64 + u64::from(fails && *n < 5);
        assert!(*c <= writers_of_n, "seed {seed}: {n} arrived {c} times");
    }
    match failed {
        Some(RpcError::StreamFailed(why)) => {
            assert!(fails, "seed {seed}: failed without a failing writer: {why}");
            assert_eq!(why, "chosen failure", "seed {seed}");
        }
        Some(other) => panic!("seed {seed}: unexpected error {other}"),
        None if read_all && !fails => {
            assert_eq!(seen.len() as u64, total, "seed {seed}: items lost");
        }
        None => {}
    }
    settled(&p).await;
}

#[tokio::test]
async fn a_byte_writer_passed_across_fills_the_pipe_this_side_reads() {
    for &codec in AnyCodec::ALL {
        for link in BOTH {
            let p = pair_with(link, codec, Connection::builder).await;
            let (writer, data) = ByteStream::pipe(4);
            let (saved, read) = bounded("save", async {
                tokio::join!(p.feeds.save(200_000, writer, false), data.to_vec())
            })
            .await;
            saved.unwrap();
            let read = read.unwrap_or_else(|e| panic!("{codec:?} {link:?}: {e}"));
            assert_eq!(read.len(), 200_000, "{codec:?} {link:?}");
            assert!(read.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            settled(&p).await;
        }
    }
}

#[tokio::test]
async fn a_byte_writer_dropped_there_without_shutdown_fails_the_stream_here() {
    let p = pair(Link::Tcp).await;
    let (writer, data) = ByteStream::pipe(4);
    let (saved, read) = bounded("save", async {
        tokio::join!(p.feeds.save(50_000, writer, true), data.to_vec())
    })
    .await;
    saved.unwrap();
    match read {
        Err(RpcError::StreamFailed(why)) => assert!(why.contains("shutdown"), "{why}"),
        other => panic!(
            "a truncated upload was taken whole: {:?}",
            other.map(|v| v.len())
        ),
    }
    settled(&p).await;

    // A reader that goes away: the writer there gets `BrokenPipe`.
    let (writer, data) = ByteStream::pipe(1);
    drop(data);
    let saved = bounded("save", p.feeds.save(10_000_000, writer, false)).await;
    match saved {
        Err(CallError::App(why)) => assert!(why.contains("gone"), "{why}"),
        other => panic!("the writer went on without a reader: {other:?}"),
    }
    settled(&p).await;
}

#[tokio::test]
async fn a_writer_that_panics_fails_the_readers_stream_instead_of_ending_it() {
    for link in BOTH {
        let p = pair(link).await;
        for capacity in [1, 64] {
            let (tx, items) = Stream::channel(capacity);
            let (call, (got, error)) = bounded("panics_after", async {
                tokio::join!(p.feeds.panics_after(3, tx), drain(items))
            })
            .await;
            assert!(call.is_err(), "{link:?}: the call reports the panic");
            assert_eq!(got, [0, 1, 2], "{link:?}");
            match error {
                Some(RpcError::StreamFailed(why)) => assert!(why.contains("panicked"), "{why}"),
                other => {
                    panic!("{link:?}: a panicking writer ended the stream as whole: {other:?}")
                }
            }
            settled(&p).await;
        }
    }
    // A local one too: the reader of a channel whose producer task panicked.
    let (tx, items) = Stream::<u64>::channel(1);
    let task = tokio::spawn(async move {
        tx.send(7).await.unwrap();
        panic!("the producer task fails");
    });
    let (got, error) = bounded("local", drain(items)).await;
    assert!(task.await.is_err());
    assert_eq!(got, [7]);
    assert!(
        matches!(error, Some(RpcError::StreamFailed(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_sender_whose_call_never_got_there_fails_the_readers_stream() {
    let p = pair(Link::Tcp).await;
    p.server.abort().await;
    let (tx, items) = Stream::channel(4);
    let call = bounded("count", p.feeds.count(5, tx)).await;
    assert!(call.is_err(), "{call:?}");
    let (got, error) = bounded("drain", drain(items)).await;
    assert!(got.is_empty());
    match error {
        Some(RpcError::StreamFailed(why)) => assert!(why.contains("never reached"), "{why}"),
        other => panic!("an empty stream taken for a whole one: {other:?}"),
    }
    // A sender of which this side keeps a clone is not failed: it may still write.
    let (tx, mut items) = Stream::channel(4);
    let _ = bounded("count", p.feeds.count(5, tx.clone())).await;
    tx.send(9).await.unwrap();
    drop(tx);
    assert_eq!(bounded("own item", items.next()).await.unwrap().unwrap(), 9);
    assert!(bounded("end", items.next()).await.is_none());
}
