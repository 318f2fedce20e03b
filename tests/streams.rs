//! Streams: typed and byte streams as arguments and results, their flow control,
//! their ends, and what they leave behind.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{bounded, connect, Link};
use farcall::{AnyCodec, ByteStream, Connection, RpcError, Stats, Stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub n: u64,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub name: String,
    pub lines: Stream<u64>,
    pub extra: Option<Stream<u64>>,
    pub many: Vec<Stream<u64>>,
    pub by_name: BTreeMap<String, Stream<u64>>,
}

#[farcall::remote]
pub trait Logs {
    /// `count` lines from `from`, produced by a task that awaits between lines.
    async fn tail(&self, from: u64, count: u64) -> Stream<LogLine>;
    /// Reads the upload to its end; returns its length and a checksum.
    async fn upload(&self, name: String, data: ByteStream) -> Result<(u64, u64), String>;
    /// Echoes each message back upper-cased, as it comes.
    async fn chat(&self, mine: Stream<String>) -> Stream<String>;
    /// Sums every stream inside the bundle.
    async fn bundle(&self, bundle: Bundle) -> u64;
    /// Returns streams inside a structure.
    async fn make_bundle(&self, n: u64) -> Bundle;
    /// A stream that the server pushes from a channel, counting what it pushed in
    /// `pushed`; the sender is kept to see when the consumer is gone.
    async fn firehose(&self, item_size: usize) -> Stream<Bytes>;
    /// Items, then an error.
    async fn failing(&self, ok_items: u64) -> Stream<u64>;
    /// Typed errors as items.
    async fn typed(&self) -> Stream<Result<u64, String>>;
    /// Reads `n` items of the stream and returns them, dropping the rest.
    async fn take(&self, data: Stream<u64>, n: usize) -> Vec<u64>;
    /// Sends the stream on to `to` (a third party), which sums it.
    async fn relay(&self, data: Stream<u64>, to: LogsClient) -> u64;
    /// Sums the stream.
    async fn sum(&self, data: Stream<u64>) -> u64;
    /// One-way: counts the bytes of `data` into the server's counter.
    #[farcall(oneway)]
    async fn drain(&self, data: ByteStream);
    async fn ping(&self) -> u64;
    /// Another reference to this object (for pipelining).
    async fn sub(&self) -> LogsClient;
}

#[derive(Clone, Default)]
struct Server {
    pushed: Arc<AtomicU64>,
    drained: Arc<AtomicU64>,
    drained_done: Arc<Notify>,
    closed_seen: Arc<Notify>,
}

impl Logs for Server {
    async fn tail(&self, from: u64, count: u64) -> Stream<LogLine> {
        let (tx, stream) = Stream::channel(4);
        tokio::spawn(async move {
            for n in from..from + count {
                tokio::task::yield_now().await;
                let line = LogLine {
                    n,
                    text: format!("line {n}"),
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        stream
    }

    async fn upload(&self, _name: String, data: ByteStream) -> Result<(u64, u64), String> {
        let mut reader = data.into_reader();
        let mut buf = vec![0u8; 8192];
        let (mut len, mut sum) = (0u64, 0u64);
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok((len, sum));
            }
            len += n as u64;
            sum = buf[..n]
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        }
    }

    async fn chat(&self, mut mine: Stream<String>) -> Stream<String> {
        let (tx, theirs) = Stream::channel(2);
        tokio::spawn(async move {
            while let Some(Ok(text)) = mine.next().await {
                if tx.send(text.to_uppercase()).await.is_err() {
                    return;
                }
            }
        });
        theirs
    }

    async fn bundle(&self, b: Bundle) -> u64 {
        let mut total = sum(b.lines).await;
        if let Some(extra) = b.extra {
            total += sum(extra).await;
        }
        for s in b.many {
            total += sum(s).await;
        }
        for (_, s) in b.by_name {
            total += sum(s).await;
        }
        total
    }

    async fn make_bundle(&self, n: u64) -> Bundle {
        Bundle {
            name: "made".into(),
            lines: Stream::iter(0..n),
            extra: Some(Stream::iter(vec![100])),
            many: vec![Stream::iter(vec![1, 2]), Stream::iter(vec![3])],
            by_name: BTreeMap::from([("k".to_string(), Stream::iter(vec![1000]))]),
        }
    }

    async fn firehose(&self, item_size: usize) -> Stream<Bytes> {
        let (tx, stream) = Stream::channel(1);
        let pushed = self.pushed.clone();
        let closed_seen = self.closed_seen.clone();
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![1u8; item_size]);
            // Up to 100 MB, as fast as the consumer lets it.
            for _ in 0..(100 << 20) / item_size {
                if tx.send(chunk.clone()).await.is_err() {
                    closed_seen.notify_one();
                    return;
                }
                pushed.fetch_add(item_size as u64, Ordering::SeqCst);
            }
        });
        stream
    }

    async fn failing(&self, ok_items: u64) -> Stream<u64> {
        let items = futures_util::stream::iter(
            (0..ok_items)
                .map(Ok)
                .chain(std::iter::once(Err("disk on fire")))
                .chain(std::iter::once(Ok(99))),
        );
        Stream::try_new(items)
    }

    async fn typed(&self) -> Stream<Result<u64, String>> {
        Stream::iter(vec![Ok(1), Err("odd".to_string()), Ok(3)])
    }

    async fn take(&self, mut data: Stream<u64>, n: usize) -> Vec<u64> {
        let mut got = Vec::new();
        while got.len() < n {
            match data.next().await {
                Some(Ok(x)) => got.push(x),
                _ => break,
            }
        }
        got
    }

    async fn relay(&self, data: Stream<u64>, to: LogsClient) -> u64 {
        to.sum(data).await.unwrap_or(u64::MAX)
    }

    async fn sum(&self, data: Stream<u64>) -> u64 {
        sum(data).await
    }

    async fn drain(&self, data: ByteStream) {
        let n = data.to_vec().await.map(|v| v.len()).unwrap_or(0);
        self.drained.fetch_add(n as u64, Ordering::SeqCst);
        self.drained_done.notify_one();
    }

    async fn ping(&self) -> u64 {
        7
    }

    async fn sub(&self) -> LogsClient {
        LogsClient::from_local(self.clone())
    }
}

async fn sum(mut s: Stream<u64>) -> u64 {
    let mut total = 0;
    while let Some(x) = s.next().await {
        total += x.expect("item");
    }
    total
}

struct Pair {
    server: Connection,
    client: Connection,
    logs: LogsClient,
    imp: Server,
}

async fn pair_with(
    link: Link,
    codec: AnyCodec,
    server: farcall::Builder,
    client: farcall::Builder,
) -> Pair {
    let imp = Server::default();
    let (server, client) = connect(
        link,
        codec,
        server.root(LogsServer::new(imp.clone())),
        client,
    )
    .await;
    let logs: LogsClient = bounded("root", client.root()).await.expect("root");
    Pair {
        server,
        client,
        logs,
        imp,
    }
}

async fn pair(link: Link) -> Pair {
    pair_with(
        link,
        AnyCodec::default(),
        Connection::builder(),
        Connection::builder(),
    )
    .await
}

/// Waits until both sides' tables are empty.
async fn settled(p: &Pair) {
    common::tables_return_to_zero(&p.server, &p.client).await;
}

const BOTH: [Link; 2] = [Link::Memory, Link::Tcp];

#[tokio::test]
async fn tail_from_server_to_client() {
    for link in BOTH {
        let p = pair(link).await;
        let lines: Vec<LogLine> = bounded("tail", async {
            let s = p.logs.tail(10, 500).await.unwrap();
            s.map(|l| l.unwrap()).collect().await
        })
        .await;
        assert_eq!(lines.len(), 500);
        assert_eq!(
            lines[0],
            LogLine {
                n: 10,
                text: "line 10".into()
            }
        );
        assert!(lines.windows(2).all(|w| w[1].n == w[0].n + 1), "in order");
        settled(&p).await;
    }
}

#[tokio::test]
async fn upload_bytes_from_a_reader_and_through_a_writer() {
    for link in BOTH {
        let p = pair(link).await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data
            .iter()
            .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        let got = bounded(
            "upload from reader",
            p.logs.upload(
                "r".into(),
                ByteStream::from_reader(std::io::Cursor::new(data.clone())),
            ),
        )
        .await
        .unwrap();
        assert_eq!(got, (data.len() as u64, expected));

        let (mut writer, stream) = ByteStream::pipe(8);
        let upload = p.logs.upload("w".into(), stream);
        let write = async {
            for chunk in data.chunks(10_000) {
                writer.write_all(chunk).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        };
        let (got, ()) = bounded("upload through writer", async {
            tokio::join!(upload, write)
        })
        .await;
        assert_eq!(got.unwrap(), (data.len() as u64, expected));

        // A writer dropped without shutdown is not a complete upload.
        let (mut writer, stream) = ByteStream::pipe(8);
        let upload = p.logs.upload("cut".into(), stream);
        writer.write_all(b"partial").await.unwrap();
        drop(writer);
        let err = bounded("truncated upload", upload).await.unwrap_err();
        assert!(err.to_string().contains("dropped before shutdown"), "{err}");
        settled(&p).await;
    }
}

#[tokio::test]
async fn chat_both_ways_at_once() {
    for link in BOTH {
        let p = pair(link).await;
        let (tx, mine) = Stream::channel(1);
        let mut theirs = bounded("chat", p.logs.chat(mine)).await.unwrap();
        bounded("conversation", async {
            for i in 0..50 {
                tx.send(format!("hi {i}")).await.unwrap();
                assert_eq!(theirs.next().await.unwrap().unwrap(), format!("HI {i}"));
            }
            drop(tx);
            assert!(theirs.next().await.is_none());
        })
        .await;
        settled(&p).await;
    }
}

#[tokio::test]
async fn streams_inside_structures_both_ways() {
    for link in BOTH {
        let p = pair(link).await;
        let b = Bundle {
            name: "sent".into(),
            lines: Stream::iter(1..=10),
            extra: Some(Stream::iter(vec![5])),
            many: vec![Stream::iter(vec![1]), Stream::iter(vec![2, 3])],
            by_name: BTreeMap::from([("a".to_string(), Stream::iter(vec![40]))]),
        };
        assert_eq!(
            bounded("bundle", p.logs.bundle(b)).await.unwrap(),
            55 + 5 + 6 + 40
        );
        let b = bounded("make_bundle", p.logs.make_bundle(4)).await.unwrap();
        assert_eq!(b.name, "made");
        let mut total = sum(b.lines).await + sum(b.extra.unwrap()).await;
        for s in b.many {
            total += sum(s).await;
        }
        for (_, s) in b.by_name {
            total += sum(s).await;
        }
        assert_eq!(total, 6 + 100 + 6 + 1000);
        settled(&p).await;
    }
}

#[tokio::test]
async fn a_stalled_consumer_holds_at_most_its_window() {
    for link in BOTH {
        let builder = || {
            Connection::builder()
                .stream_window(64 * 1024)
                .max_stream_window(1 << 20)
        };
        let p = pair_with(link, AnyCodec::default(), builder(), builder()).await;
        let mut s = bounded("firehose", p.logs.firehose(16 * 1024))
            .await
            .unwrap();
        // Take one item, then stall while the producer tries to push 100 MB.
        bounded("first", s.next()).await.unwrap().unwrap();
        // Other calls keep flowing meanwhile, and let the producer run as far as it can.
        for _ in 0..50 {
            assert_eq!(
                bounded("ping while stalled", p.logs.ping()).await.unwrap(),
                7
            );
            tokio::task::yield_now().await;
        }
        let pushed = p.imp.pushed.load(Ordering::SeqCst);
        eprintln!("{link:?}: a stalled consumer let the producer push {pushed} bytes");
        // Window (never grown: the consumer is the bottleneck) + one item in flight
        // over it + the channel's item + the pump's item.
        let bound = 64 * 1024 + 3 * 16 * 1024 + 16 * 1024;
        assert!(
            pushed <= bound,
            "the producer got {pushed} bytes ahead of a stalled consumer"
        );
        assert_eq!(p.client.stats().await.unwrap().streams, 1);
        assert_eq!(p.server.stats().await.unwrap().streams, 1);
        // Dropping the consumer stops the producer.
        drop(s);
        bounded(
            "the producer sees the consumer gone",
            p.imp.closed_seen.notified(),
        )
        .await;
        settled(&p).await;
    }
}

#[tokio::test]
async fn consumer_drop_cancels_the_producer_both_ways() {
    for link in BOTH {
        let p = pair(link).await;
        // Client to server: the server reads 3 and drops the rest.
        let (tx, s) = Stream::channel(2);
        let feed = async {
            let mut n = 0u64;
            while tx.send(n).await.is_ok() {
                n += 1;
            }
            n
        };
        let (taken, sent) = bounded("take", async { tokio::join!(p.logs.take(s, 3), feed) }).await;
        assert_eq!(taken.unwrap(), vec![0, 1, 2]);
        assert!(sent >= 3);

        // A stream dropped before it was ever read drops its source.
        struct Tracked(Arc<AtomicUsize>);
        impl Drop for Tracked {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Tracked(dropped.clone());
        let items = futures_util::stream::iter(0..10u64).map(move |x| {
            let _ = &guard;
            x
        });
        assert_eq!(
            bounded("take 0", p.logs.take(Stream::new(items), 0))
                .await
                .unwrap(),
            Vec::<u64>::new()
        );
        bounded("source dropped", async {
            while dropped.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;

        // Server to client: dropping the tail stops the server's task.
        let mut s = bounded("firehose", p.logs.firehose(1024)).await.unwrap();
        bounded("one", s.next()).await.unwrap().unwrap();
        drop(s);
        bounded("closed seen", p.imp.closed_seen.notified()).await;
        settled(&p).await;
    }
}

#[tokio::test]
async fn producer_errors_reach_the_consumer() {
    for link in BOTH {
        let p = pair(link).await;
        let mut s = bounded("failing", p.logs.failing(3)).await.unwrap();
        for i in 0..3 {
            assert_eq!(bounded("item", s.next()).await.unwrap().unwrap(), i);
        }
        let err = bounded("error", s.next()).await.unwrap().unwrap_err();
        assert_eq!(err, RpcError::StreamFailed("disk on fire".into()));
        assert!(s.next().await.is_none(), "nothing after the error");

        let typed: Vec<_> = bounded("typed", async {
            p.logs
                .typed()
                .await
                .unwrap()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
                .await
        })
        .await;
        assert_eq!(typed, vec![Ok(1), Err("odd".to_string()), Ok(3)]);

        // A producer that panics.
        let items = futures_util::stream::iter(0..5u64).map(|x| {
            if x == 2 {
                panic!("boom");
            }
            x
        });
        let got = bounded("take", p.logs.take(Stream::new(items), 10))
            .await
            .unwrap();
        assert_eq!(got, vec![0, 1]);
        settled(&p).await;
    }
}

#[tokio::test]
async fn a_cut_connection_ends_every_stream_with_disconnected() {
    for link in BOTH {
        let p = pair(link).await;
        let mut tail = bounded("firehose", p.logs.firehose(1024)).await.unwrap();
        bounded("one", tail.next()).await.unwrap().unwrap();
        let (tx, up) = Stream::<u64>::channel(1);
        let sum = p.logs.sum(up);
        tx.send(1).await.unwrap();
        p.server.abort().await;
        let err = bounded("tail ends", async {
            loop {
                match tail.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return e,
                    None => panic!("ended without an error"),
                }
            }
        })
        .await;
        assert!(err.is_disconnected(), "{err}");
        assert!(tail.next().await.is_none());
        assert!(bounded("sum fails", sum)
            .await
            .unwrap_err()
            .is_disconnected());
        bounded("the pusher sees the consumer gone", tx.closed()).await;
        bounded("server producer stopped", p.imp.closed_seen.notified()).await;
    }
}

#[tokio::test]
async fn a_stream_forwarded_through_a_third_party() {
    for link in BOTH {
        // client -> middle (relay) -> far (sum): the far end reads from the client.
        let middle = pair(link).await;
        let far = pair(link).await;
        // The middle holds a client to the far server; the client passes its own
        // reference through the middle.
        let far_logs = far.logs.clone();
        let total = bounded(
            "relay",
            middle.logs.relay(Stream::iter(1..=1000u64), far_logs),
        )
        .await
        .unwrap();
        assert_eq!(total, 500_500);
        settled(&middle).await;
        settled(&far).await;
    }
}

#[tokio::test]
async fn every_codec() {
    for &codec in AnyCodec::ALL {
        let p = pair_with(
            Link::Memory,
            codec,
            Connection::builder(),
            Connection::builder(),
        )
        .await;
        let lines: Vec<LogLine> = bounded("tail", async {
            p.logs
                .tail(0, 100)
                .await
                .unwrap()
                .map(|l| l.unwrap())
                .collect()
                .await
        })
        .await;
        assert_eq!(lines.len(), 100, "{codec:?}");
        let data = vec![9u8; 300_000];
        let (len, _) = bounded(
            "upload",
            p.logs.upload("x".into(), ByteStream::from_bytes(data)),
        )
        .await
        .unwrap();
        assert_eq!(len, 300_000, "{codec:?}");
        assert_eq!(
            bounded("sum", p.logs.sum(Stream::iter(0..1000u64)))
                .await
                .unwrap(),
            499_500
        );
        settled(&p).await;
    }
}

#[tokio::test]
async fn one_way_methods_take_streams() {
    let p = pair(Link::Tcp).await;
    p.logs
        .drain(ByteStream::from_bytes(vec![1u8; 200_000]))
        .unwrap();
    bounded("drained", p.imp.drained_done.notified()).await;
    assert_eq!(p.imp.drained.load(Ordering::SeqCst), 200_000);
    settled(&p).await;
}

#[tokio::test]
async fn stats_count_open_streams_and_return_to_zero() {
    let p = pair(Link::Memory).await;
    let mut s = bounded("tail", p.logs.tail(0, 1000)).await.unwrap();
    assert_eq!(
        p.client.stats().await.unwrap().streams,
        0,
        "not started yet"
    );
    bounded("one", s.next()).await.unwrap().unwrap();
    assert_eq!(p.client.stats().await.unwrap().streams, 1);
    bounded("server counts it", async {
        while p.server.stats().await.unwrap().streams != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    while let Some(line) = bounded("rest", s.next()).await {
        line.unwrap();
    }
    assert_eq!(p.client.stats().await.unwrap().streams, 0);
    drop(s);
    settled(&p).await;
    assert_eq!(p.client.stats().await.unwrap(), Stats::default());
}

#[tokio::test]
async fn open_streams_are_limited_per_connection() {
    let p = pair_with(
        Link::Memory,
        AnyCodec::default(),
        Connection::builder(),
        Connection::builder().max_open_streams(2),
    )
    .await;
    let mut a = p.logs.firehose(100).await.unwrap();
    let mut b = p.logs.firehose(100).await.unwrap();
    let mut c = p.logs.firehose(100).await.unwrap();
    bounded("a", a.next()).await.unwrap().unwrap();
    bounded("b", b.next()).await.unwrap().unwrap();
    let err = bounded("c", c.next()).await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::Overloaded(_)), "{err}");
    drop(a);
    let mut d = p.logs.firehose(100).await.unwrap();
    bounded("d", d.next()).await.unwrap().unwrap();
    drop((b, c, d));
    settled(&p).await;
}

#[tokio::test]
async fn local_streams_work_without_a_connection() {
    let local = LogsClient::from_local(Server::default());
    let lines: Vec<_> = bounded("local tail", async {
        local
            .tail(0, 300)
            .await
            .unwrap()
            .map(|l| l.unwrap().n)
            .collect::<Vec<_>>()
            .await
    })
    .await;
    assert_eq!(lines, (0..300).collect::<Vec<_>>());
    assert_eq!(
        bounded("local sum", local.sum(Stream::iter(0..10_000u64)))
            .await
            .unwrap(),
        49_995_000
    );
    let got = bounded(
        "local upload",
        local.upload("l".into(), ByteStream::from_bytes(vec![3u8; 1 << 20])),
    )
    .await
    .unwrap();
    assert_eq!(got.0, 1 << 20);
    // And a stream read where it was made.
    let s = Stream::iter(vec!["a".to_string(), "b".to_string()]);
    let got: Vec<_> = bounded("read here", s.map(Result::unwrap).collect::<Vec<_>>()).await;
    assert_eq!(got, ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_small_call_completes_during_a_large_upload_on_a_slow_link() {
    // 10 Mbit/s, 10 ms each way; the upload of 20 MB would take 16 s.
    let (a, b) = farcall::transport::memory();
    let rate = 10e6 / 8.0;
    let a = farcall::transport::delayed(a, Duration::from_millis(10)).bandwidth(rate);
    let b = farcall::transport::delayed(b, Duration::from_millis(10)).bandwidth(rate);
    let imp = Server::default();
    let _server = Connection::builder().root(LogsServer::new(imp)).connect(a);
    let client = Connection::builder().connect(b);
    let logs: LogsClient = client.root().await.unwrap();
    let upload = tokio::spawn({
        let logs = logs.clone();
        async move {
            logs.upload("big".into(), ByteStream::from_bytes(vec![0u8; 20 << 20]))
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!upload.is_finished());
    let started = tokio::time::Instant::now();
    assert_eq!(logs.ping().await.unwrap(), 7);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "a ping took {took:?} behind the upload"
    );
    assert!(
        !upload.is_finished(),
        "the ping did not wait for the upload"
    );
    upload.abort();
}

#[tokio::test(start_paused = true)]
async fn the_window_grows_to_fill_a_long_fat_link() {
    // 100 Mbit/s, 50 ms round trip.
    let rate = 100e6 / 8.0;
    let (a, b) = farcall::transport::memory();
    let a = farcall::transport::delayed(a, Duration::from_millis(25)).bandwidth(rate);
    let b = farcall::transport::delayed(b, Duration::from_millis(25)).bandwidth(rate);
    let _server = Connection::builder()
        .root(LogsServer::new(Server::default()))
        .connect(a);
    let client = Connection::builder().connect(b);
    let logs: LogsClient = client.root().await.unwrap();
    let total = 50u64 << 20;
    let mut s = logs.firehose(64 * 1024).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut got = 0u64;
    while got < total {
        got += s.next().await.unwrap().unwrap().len() as u64;
    }
    let share = got as f64 / started.elapsed().as_secs_f64() / rate;
    eprintln!("one stream reached {:.1}% of the link", share * 100.0);
    assert!(
        share >= 0.8,
        "one stream reached only {:.1}% of the link",
        share * 100.0
    );
}

#[tokio::test]
async fn a_stream_from_a_pipelined_call() {
    for link in BOTH {
        let p = pair(link).await;
        // `tail` is sent on the promised result of `sub`, before it arrived.
        let lines: Vec<u64> = bounded("pipelined tail", async {
            let s = p.logs.sub().sub().tail(5, 20).await.unwrap();
            s.map(|l| l.unwrap().n).collect().await
        })
        .await;
        assert_eq!(lines, (5..25).collect::<Vec<_>>());
        settled(&p).await;
    }
}

/// A producer whose window is larger than its connection's outbound queue: its
/// batches are refused as overloaded while the slow link drains, and it waits for
/// room (no polling) instead of failing, so the upload completes intact. Paused time:
/// a pump that polled on a timer would still finish, but one that gave up or waited
/// for nothing would not.
#[tokio::test(start_paused = true)]
async fn a_producer_waits_for_room_when_the_outbound_queue_is_full() {
    let rate = 20e6 / 8.0;
    let (a, b) = farcall::transport::memory();
    let a = farcall::transport::delayed(a, Duration::from_millis(5)).bandwidth(rate);
    let b = farcall::transport::delayed(b, Duration::from_millis(5)).bandwidth(rate);
    let _server = Connection::builder()
        .stream_window(4 << 20)
        .root(LogsServer::new(Server::default()))
        .connect(a);
    // Room for one 64 KiB frame at a time in the client's outbound queue.
    let client = Connection::builder()
        .max_frame_size(64 << 10)
        .max_queued_bytes(64 << 10)
        .connect(b);
    let logs: LogsClient = bounded("root", client.root()).await.unwrap();
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = data
        .iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
    let got = bounded(
        "upload through a full queue",
        logs.upload("big".into(), ByteStream::from_bytes(data)),
    )
    .await;
    assert_eq!(got, Ok((4 << 20, expected)));
    assert_eq!(client.stats().await.unwrap().streams, 0);
}

/// A stream of objects, for a connection that may not export them all.
#[farcall::remote]
pub trait Objects {
    /// `n` objects, as a stream.
    async fn objects(&self, n: u64) -> Stream<ObjectsClient>;
}

struct Obj;

impl Objects for Obj {
    async fn objects(&self, n: u64) -> Stream<ObjectsClient> {
        let objects: Vec<_> = (0..n).map(|_| ObjectsClient::from_local(Obj)).collect();
        Stream::iter(objects)
    }
}

#[tokio::test]
async fn a_batch_the_connection_refuses_fails_the_stream_instead_of_vanishing() {
    // The producer's connection may export 4 objects: a batch of 10 is refused
    // after it left the pump. The consumer must not see a short stream end well.
    let (a, b) = farcall::transport::memory();
    let _server = Connection::builder()
        .max_exports(4)
        .root(ObjectsServer::new(Obj))
        .connect(a);
    let client: ObjectsClient = bounded("root", Connection::builder().connect(b).root())
        .await
        .unwrap();
    let mut objects = bounded("objects", client.objects(10)).await.unwrap();
    let mut got = 0;
    let mut failure = None;
    while let Some(item) = bounded("an item", objects.next()).await {
        match item {
            Ok(_) => got += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.unwrap_or_else(|| panic!("the stream ended well after {got} of 10"));
    assert!(
        matches!(&failure, RpcError::StreamFailed(why) if why.contains("objects exported")),
        "{failure:?} after {got} items"
    );
}
