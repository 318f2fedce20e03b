//! Streams against a scripted Cap'n Web peer: a `Stream` going out is written into a
//! pipe the server opens on the peer, within a window of acknowledged writes; a
//! pipe the peer opens is read as a `Stream`, its writes acknowledged as the reader
//! takes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{call, read, reject_text, Peer};
use crate::{ByteStream, Callback, Connection, Stream, StreamSender};

#[crate::remote]
trait Pipes {
    async fn add(&self, a: i64, b: i64) -> i64;
    /// The numbers below `n`.
    async fn count(&self, n: u64) -> Stream<u64>;
    async fn sum(&self, numbers: Stream<u64>) -> Result<u64, String>;
    async fn length(&self, data: ByteStream) -> Result<usize, String>;
    /// Reads one item and drops the stream.
    async fn first(&self, numbers: Stream<u64>) -> Option<u64>;
    /// Keeps the stream unread until `drain`.
    async fn hold(&self, numbers: Stream<u64>);
    async fn drain(&self) -> Result<u64, String>;
    /// Drops the stream unread.
    async fn ignore(&self, numbers: Stream<u64>);
    /// A stream of what `put` puts, one item at a time.
    async fn feed(&self) -> Stream<u64>;
    /// Puts `n` into the stream `feed` made (waiting for room); false once its
    /// consumer is gone.
    async fn put(&self, n: u64) -> bool;
    /// A struct holding a stream of the numbers below `n`, for property paths.
    async fn pair(&self, n: u64) -> Pair;
    /// `k` streams of the numbers below `n`.
    async fn many(&self, k: u64, n: u64) -> Vec<Stream<u64>>;
    /// A stream of `k` streams, the `i`th of the numbers below `i + 1`.
    async fn nested(&self, k: u64) -> Stream<Stream<u64>>;
    /// Gives `f` a stream of the numbers below `n`; returns what it answered.
    async fn give(&self, f: Callback<Stream<u64>, u64>, n: u64) -> u64;
    /// Sums the stream on a task of its own, which reports to the test.
    async fn sum_later(&self, numbers: Stream<u64>);
    /// The stream `hold` kept, unread, passed on.
    async fn pass(&self) -> Option<Stream<u64>>;
    /// The numbers below `n`, then a failure.
    async fn broken(&self, n: u64) -> Stream<u64>;
    /// `count(n)` of a server on a farcall connection of its own, passed on.
    async fn relay(&self, n: u64) -> Stream<u64>;
    /// `sum` on a server on a farcall connection of its own, of this stream.
    async fn relay_sum(&self, numbers: Stream<u64>) -> Result<u64, String>;
    /// A stream of `n` objects.
    async fn objects(&self, n: u64) -> Stream<PipesClient>;
    /// Gives `f` `n` objects; the error's text if the call failed.
    async fn hand(&self, f: Callback<Vec<PipesClient>>, n: u64) -> Option<String>;
    /// Writes the numbers below `n` into `out` (a `WritableStream`), then fails
    /// it with `why` if given; returns how many it took.
    async fn write_into(&self, n: u64, out: StreamSender<u64>, why: Option<String>) -> u64;
    /// A sender whose stream is summed on a task of its own (reported as
    /// `sum_later`'s).
    async fn collector(&self) -> StreamSender<u64>;
    /// `out`, handed back.
    async fn bounce(&self, out: StreamSender<u64>) -> StreamSender<u64>;
    /// Writes `n` into each sender the stream brings; returns how many came.
    async fn fan(&self, outs: Stream<StreamSender<u64>>, n: u64) -> u64;
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Pair {
    name: String,
    numbers: Stream<u64>,
}

/// What the server's methods share with the test.
#[derive(Default)]
struct Shared {
    held: Mutex<Option<Stream<u64>>>,
    feeding: Mutex<Option<StreamSender<u64>>>,
    sums: Mutex<Option<mpsc::UnboundedSender<Result<u64, String>>>>,
    /// Both ends of the connections to `backend`s.
    backends: Mutex<Vec<Connection>>,
}

#[derive(Default, Clone)]
struct P(Arc<Shared>);

impl P {
    /// A server on a farcall connection of its own, in the codec farcall picks by
    /// default (not Cap'n Web's).
    async fn backend(&self) -> PipesClient {
        let (a, b) = crate::transport::memory();
        let server = Connection::builder()
            .root(PipesServer::new(P::default()))
            .connect(a);
        let client = Connection::builder().connect(b);
        let root = client.root().await.expect("the backend's root");
        self.0.backends.lock().unwrap().extend([server, client]);
        root
    }
}

async fn sum_of(mut numbers: Stream<u64>) -> Result<u64, String> {
    let mut sum = 0;
    while let Some(n) = numbers.next().await {
        sum += n.map_err(|e| e.to_string())?;
    }
    Ok(sum)
}

impl Pipes for P {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn objects(&self, n: u64) -> Stream<PipesClient> {
        let objects: Vec<_> = (0..n)
            .map(|_| PipesClient::from_local(P::default()))
            .collect();
        Stream::iter(objects)
    }
    async fn hand(&self, f: Callback<Vec<PipesClient>>, n: u64) -> Option<String> {
        let objects = (0..n)
            .map(|_| PipesClient::from_local(P::default()))
            .collect();
        f.call(objects).await.err().map(|e| e.to_string())
    }
    async fn count(&self, n: u64) -> Stream<u64> {
        Stream::iter(0..n)
    }
    async fn sum(&self, numbers: Stream<u64>) -> Result<u64, String> {
        sum_of(numbers).await
    }
    async fn length(&self, data: ByteStream) -> Result<usize, String> {
        let mut data = data.into_reader();
        let mut all = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut data, &mut all)
            .await
            .map_err(|e| e.to_string())?;
        Ok(all.len())
    }
    async fn first(&self, mut numbers: Stream<u64>) -> Option<u64> {
        numbers.next().await.and_then(Result::ok)
    }
    async fn hold(&self, numbers: Stream<u64>) {
        *self.0.held.lock().unwrap() = Some(numbers);
    }
    async fn drain(&self) -> Result<u64, String> {
        let held = self.0.held.lock().unwrap().take();
        let Some(mut numbers) = held else {
            return Ok(0);
        };
        let mut count = 0;
        while let Some(n) = numbers.next().await {
            n.map_err(|e| format!("after {count}: {e}"))?;
            count += 1;
        }
        Ok(count)
    }
    async fn ignore(&self, numbers: Stream<u64>) {
        drop(numbers);
    }
    async fn feed(&self) -> Stream<u64> {
        let (tx, stream) = Stream::channel(1);
        *self.0.feeding.lock().unwrap() = Some(tx);
        stream
    }
    async fn put(&self, n: u64) -> bool {
        let tx = self.0.feeding.lock().unwrap().clone();
        match tx {
            Some(tx) => tx.send(n).await.is_ok(),
            None => false,
        }
    }
    async fn pair(&self, n: u64) -> Pair {
        Pair {
            name: "pair".into(),
            numbers: Stream::iter(0..n),
        }
    }
    async fn many(&self, k: u64, n: u64) -> Vec<Stream<u64>> {
        (0..k).map(|_| Stream::iter(0..n)).collect()
    }
    async fn nested(&self, k: u64) -> Stream<Stream<u64>> {
        Stream::iter((0..k).map(|i| Stream::iter(0..=i)))
    }
    async fn give(&self, f: Callback<Stream<u64>, u64>, n: u64) -> u64 {
        f.call(Stream::iter(0..n)).await.unwrap_or(u64::MAX)
    }
    async fn sum_later(&self, numbers: Stream<u64>) {
        let sums = self.0.sums.lock().unwrap().clone();
        tokio::spawn(async move {
            let sum = sum_of(numbers).await;
            if let Some(sums) = sums {
                let _ = sums.send(sum);
            }
        });
    }
    async fn pass(&self) -> Option<Stream<u64>> {
        self.0.held.lock().unwrap().take()
    }
    async fn broken(&self, n: u64) -> Stream<u64> {
        let items = (0..n).map(Ok).chain([Err("disk on fire")]);
        Stream::try_new(futures_util::stream::iter(items))
    }
    async fn relay(&self, n: u64) -> Stream<u64> {
        self.backend()
            .await
            .count(n)
            .await
            .expect("the backend's stream")
    }
    async fn write_into(&self, n: u64, out: StreamSender<u64>, why: Option<String>) -> u64 {
        for i in 0..n {
            if out.send(i).await.is_err() {
                return i;
            }
        }
        if let Some(why) = why {
            let _ = out.fail(why).await;
        }
        n
    }
    async fn collector(&self) -> StreamSender<u64> {
        let (tx, numbers) = Stream::channel(4);
        self.sum_later(numbers).await;
        tx
    }
    async fn bounce(&self, out: StreamSender<u64>) -> StreamSender<u64> {
        out
    }
    async fn fan(&self, mut outs: Stream<StreamSender<u64>>, n: u64) -> u64 {
        let mut count = 0;
        while let Some(Ok(out)) = outs.next().await {
            let _ = out.send(n).await;
            count += 1;
        }
        count
    }
    async fn relay_sum(&self, numbers: Stream<u64>) -> Result<u64, String> {
        self.backend()
            .await
            .sum(numbers)
            .await
            .map_err(|e| e.to_string())
    }
}

fn peer() -> Peer {
    peer_of(P::default())
}

fn peer_of(p: P) -> Peer {
    Peer::with(Connection::builder().root(PipesServer::new(p)))
}

fn write(pipe: i64, chunk: Value) -> Value {
    json!(["stream", ["pipeline", pipe, ["write"], [chunk]]])
}

/// Receives `n` messages, in the order they came.
async fn recv_n(peer: &mut Peer, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(peer.recv().await);
    }
    got
}

/// Sends a call and pulls it: the next message must be its result (nothing the
/// server should not send came before it).
async fn probe(peer: &mut Peer) {
    peer.send(call(0, "add", json!([20, 22])));
    let id = peer.pushes;
    peer.send(json!(["pull", id]));
    peer.expect(json!(["resolve", id, 42])).await;
    peer.send(json!(["release", id, 1]));
}

#[tokio::test]
async fn a_stream_goes_out_as_a_pipe_the_server_writes_and_closes() {
    let mut peer = peer();
    peer.send(call(0, "count", json!([3])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["pipe"])).await;
    peer.expect(json!(["resolve", 1, ["readable", 1]])).await;
    peer.send(json!(["release", 1, 1]));
    // Import 1 is the pipe; each write and the close take the next ids.
    for (id, n) in [(2, 0), (3, 1), (4, 2)] {
        peer.expect(json!(["stream", ["pipeline", 1, ["write"], [n]]]))
            .await;
        peer.send(json!(["resolve", id, ["undefined"]]));
    }
    peer.expect(json!(["stream", ["pipeline", 1, ["close"], []]]))
        .await;
    peer.expect(json!(["release", 1, 1])).await;
    peer.send(json!(["resolve", 5, ["undefined"]]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_stream_going_out_waits_for_the_peer_to_acknowledge_its_writes() {
    let mut peer = peer();
    peer.send(call(0, "count", json!([1000])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["pipe"])).await;
    peer.expect(json!(["resolve", 1, ["readable", 1]])).await;
    // A window of 64 writes, then nothing until acknowledgements.
    let first = recv_n(&mut peer, 64).await;
    for (i, m) in first.iter().enumerate() {
        assert_eq!(m, &json!(["stream", ["pipeline", 1, ["write"], [i]]]));
    }
    probe(&mut peer).await;
    // A quarter of the window acknowledged: as many more writes.
    for id in 2..2 + 16 {
        peer.send(json!(["resolve", id, ["undefined"]]));
    }
    let next = recv_n(&mut peer, 16).await;
    assert_eq!(next[0], json!(["stream", ["pipeline", 1, ["write"], [64]]]));
    assert_eq!(
        next[15],
        json!(["stream", ["pipeline", 1, ["write"], [79]]])
    );
    probe(&mut peer).await;
    // The page cancels its reader: the next write fails, the producer stops and
    // the pipe is aborted and released.
    peer.send(json!(["reject", 18, ["error", "Error", "cancelled"]]));
    let abort = peer.recv().await;
    assert_eq!(abort[1][2], json!(["abort"]), "{abort}");
    peer.expect(json!(["release", 1, 1])).await;
    peer.send(json!(["release", 1, 1]));
    // As the page does: the writes it still had fail, the abort is answered.
    for id in 19..=81 {
        peer.send(json!(["reject", id, ["error", "Error", "cancelled"]]));
    }
    peer.send(json!(["resolve", 82, ["undefined"]]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_pipe_from_the_peer_is_read_as_a_stream() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "sum", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    peer.send(write(1, json!(5)));
    peer.send(write(1, json!(7)));
    peer.send(json!(["push", ["pipeline", 1, ["close"], []]]));
    peer.send(json!(["pull", 5]));
    let mut got = recv_n(&mut peer, 4).await;
    got.sort_by_key(|m| m[1].as_i64());
    assert_eq!(
        got,
        [
            json!(["resolve", 2, 12]),
            json!(["resolve", 3, ["undefined"]]),
            json!(["resolve", 4, ["undefined"]]),
            json!(["resolve", 5, ["undefined"]]),
        ]
    );
    peer.send(json!(["release", 5, 1]));
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn bytes_written_to_a_pipe_are_a_byte_stream() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "length", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    // Written compactly, as the `capnweb` package writes it (taken without a
    // tree), and with spaces (taken the general way): one byte stream.
    peer.send(write(1, json!(["bytes", "aGVsbG8="])));
    peer.pushes += 1;
    let spaced = r#"["stream", ["pipeline", 1, ["write"], [["bytes", "IQ=="]]]]"#;
    peer.to_server.send(spaced.to_owned()).unwrap();
    // The `capnweb` package closes a pipe with a stream message, which needs no
    // pull or release.
    peer.send(json!(["stream", ["pipeline", 1, ["close"], []]]));
    peer.send(json!(["release", 1, 1]));
    let mut got = recv_n(&mut peer, 4).await;
    got.sort_by_key(|m| m[1].as_i64());
    assert_eq!(
        got,
        [
            json!(["resolve", 2, 6]),
            json!(["resolve", 3, ["undefined"]]),
            json!(["resolve", 4, ["undefined"]]),
            json!(["resolve", 5, ["undefined"]]),
        ]
    );
    peer.send(json!(["release", 2, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn an_aborted_or_abandoned_pipe_fails_the_stream() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "sum", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    peer.send(write(1, json!(1)));
    peer.send(json!([
        "push",
        ["pipeline", 1, ["abort"], [["error", "Error", "boom"]]]
    ]));
    let mut got = recv_n(&mut peer, 2).await;
    got.sort_by_key(|m| m[1].as_i64());
    assert_eq!(got[0][0], "reject");
    assert!(reject_text(&got[0]).contains("boom"), "{}", got[0]);
    // The write was taken before the abort, or (the reader not started yet)
    // discarded by it.
    let taken = got[1] == json!(["resolve", 3, ["undefined"]]);
    let discarded = got[1][0] == "reject" && reject_text(&got[1]).contains("aborted");
    assert!(taken || discarded, "{}", got[1]);
    peer.send(json!(["release", 4, 1]));
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", 1, 1]));

    // A writer that goes away without `close()`.
    peer.send(json!(["pipe"]));
    peer.send(call(0, "sum", json!([["readable", 5]])));
    peer.send(json!(["pull", 6]));
    peer.send(json!(["release", 5, 1]));
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("without closing"), "{reject}");
    peer.send(json!(["release", 6, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn writes_after_the_reader_is_gone_fail() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "first", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    peer.send(write(1, json!(9)));
    let mut got = recv_n(&mut peer, 2).await;
    got.sort_by_key(|m| m[1].as_i64());
    assert_eq!(
        got,
        [
            json!(["resolve", 2, 9]),
            json!(["resolve", 3, ["undefined"]])
        ]
    );
    // The reader dropped the stream after one item: the next write is refused.
    probe(&mut peer).await;
    peer.send(write(1, json!(10)));
    let reject = peer.recv().await;
    assert_eq!(reject[1], json!(peer.pushes));
    assert!(reject_text(&reject).contains("reader is gone"), "{reject}");
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_reader_that_does_not_read_holds_the_writer_back() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "hold", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, ["undefined"]])).await;
    peer.send(json!(["release", 2, 1]));
    for n in 0..100 {
        peer.send(write(1, json!(n)));
    }
    // Not read: no write is acknowledged.
    probe(&mut peer).await;
    peer.send(call(0, "drain", json!([])));
    let drain = peer.pushes;
    peer.send(json!(["pull", drain]));
    let acks = recv_n(&mut peer, 100).await;
    assert!(
        acks.iter()
            .all(|m| m[0] == "resolve" && m[2] == json!(["undefined"])),
        "{acks:?}"
    );
    peer.send(json!(["push", ["pipeline", 1, ["close"], []]]));
    peer.send(json!(["release", 1, 1]));
    let close = peer.pushes;
    let mut got = recv_n(&mut peer, 1).await;
    got.sort_by_key(|m| m[1].as_i64());
    assert_eq!(got, [json!(["resolve", drain, 100])]);
    peer.send(json!(["release", close, 1]));
    peer.send(json!(["release", drain, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn hostile_stream_messages_get_a_clear_answer() {
    let mut peer = peer();
    // A write to something that is not a pipe is rejected; the session goes on.
    peer.send(write(0, json!(1)));
    let reject = peer.recv().await;
    assert_eq!(reject[1], json!(1));
    assert!(reject_text(&reject).contains("pipes"), "{reject}");
    probe(&mut peer).await;
    // The readable end of a pipe that does not exist ends the session, with why.
    peer.send(call(0, "sum", json!([["readable", 99]])));
    let abort = peer.recv().await;
    assert_eq!(abort[0], "abort");
    assert!(
        abort[1][2].as_str().unwrap().contains("readable"),
        "{abort}"
    );
}

#[tokio::test]
async fn a_writer_ignoring_acknowledgements_is_cut_off() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "hold", json!([["readable", 1]])));
    let big = "x".repeat(1 << 20);
    for _ in 0..40 {
        peer.send(write(1, json!(big)));
    }
    let mut last = peer.recv().await;
    while last[0] != "abort" {
        last = peer.recv().await;
    }
    assert!(
        last[1][2].as_str().unwrap().contains("acknowledgements"),
        "{last}"
    );
}

#[tokio::test]
async fn too_many_pipes_end_the_session() {
    let mut peer = peer();
    // The limit is 1024 (`translate/streams.rs`).
    for _ in 0..=1024 {
        peer.send(json!(["pipe"]));
    }
    let abort = peer.recv().await;
    assert_eq!(abort[0], "abort");
    assert!(abort[1][2].as_str().unwrap().contains("pipes"), "{abort}");
}

/// What the scripted page read from the pipes the server opened on it.
#[derive(Debug, Default)]
struct Read {
    /// The items written to each pipe, by its id.
    items: HashMap<i64, Vec<Value>>,
    /// How each pipe ended: `close`, or `abort` with its reason.
    ended: HashMap<i64, Value>,
    /// The server's other messages, in order.
    others: Vec<Value>,
}

impl Read {
    fn reason(&self, pipe: i64) -> &str {
        self.ended[&pipe][1][0][2].as_str().unwrap_or_default()
    }
}

/// Plays a page reading every pipe the server opens, as the `capnweb` package
/// does: each write and end is acknowledged as it comes, until `n` pipes have
/// ended and been released.
async fn read_pipes(peer: &mut Peer, n: usize) -> Read {
    let mut read = Read::default();
    let mut released = 0;
    while read.ended.len() < n || released < n {
        let message = peer.recv().await;
        let id = peer.imports;
        match message[0].as_str() {
            Some("pipe") => {
                read.items.insert(id, Vec::new());
            }
            Some("stream") => {
                let [_, pipe, method, args] = message[1].as_array().unwrap().as_slice() else {
                    panic!("{message}");
                };
                let pipe = pipe.as_i64().unwrap();
                assert!(
                    read.items.contains_key(&pipe) && !read.ended.contains_key(&pipe),
                    "{message} to a pipe that is not open"
                );
                match method[0].as_str() {
                    Some("write") => read.items.get_mut(&pipe).unwrap().push(args[0].clone()),
                    _ => {
                        read.ended.insert(pipe, json!([method[0], args]));
                    }
                }
                peer.send(json!(["resolve", id, ["undefined"]]));
            }
            Some("release") if read.ended.contains_key(&message[1].as_i64().unwrap()) => {
                released += 1;
            }
            _ => read.others.push(message),
        }
    }
    read
}

fn numbers(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(Value::from).collect()
}

#[tokio::test]
async fn no_write_follows_the_abort_of_a_stream_whose_reader_cancelled() {
    let mut peer = peer();
    // The page keeps the result (a promise it still holds), so the stream's
    // source outlives the stream: what the producer makes after the reader
    // cancelled must go nowhere.
    peer.send(call(0, "feed", json!([])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["pipe"])).await;
    peer.expect(json!(["resolve", 1, ["readable", 1]])).await;
    peer.send(call(0, "put", json!([7])));
    peer.send(json!(["pull", 2]));
    let got = peer.recv_set(2).await;
    assert!(got.contains(&json!(["resolve", 2, true])), "{got:?}");
    assert!(got.contains(&write(1, json!(7))), "{got:?}");
    // The page's reader cancels: its pending write fails.
    peer.send(json!(["reject", 2, ["error", "Error", "cancelled"]]));
    let abort = peer.recv().await;
    assert_eq!(abort[1][2], json!(["abort"]), "{abort}");
    peer.expect(json!(["release", 1, 1])).await;
    // Two more items: the second is taken once the first has gone to the sink.
    for (id, n) in [(3, 8), (4, 9)] {
        peer.send(call(0, "put", json!([n])));
        peer.send(json!(["pull", id]));
        peer.expect(json!(["resolve", id, true])).await;
    }
    probe(&mut peer).await;
    peer.send(json!(["resolve", 3, ["undefined"]]));
    // Once the page lets go of the result, the producer stops.
    peer.send(json!(["release", 1, 1]));
    for id in 2..=4 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
    peer.send(call(0, "put", json!([10])));
    let put = peer.pushes;
    peer.send(json!(["pull", put]));
    peer.expect(json!(["resolve", put, false])).await;
}

#[tokio::test]
async fn a_stream_read_through_a_property_path_goes_out_as_a_pipe() {
    let mut peer = peer();
    peer.send(call(0, "pair", json!([3])));
    peer.send(read(1, json!(["numbers"])));
    peer.send(json!(["pull", 2]));
    let got = read_pipes(&mut peer, 1).await;
    assert_eq!(got.others, [json!(["resolve", 2, ["readable", 1]])]);
    assert_eq!(got.items[&1], numbers(0..3));
    assert_eq!(got.ended[&1], json!(["close", []]));
    // A stream is read once: read again, it is a pipe aborted with why.
    peer.send(read(1, json!(["numbers"])));
    peer.send(json!(["pull", 3]));
    let got = read_pipes(&mut peer, 1).await;
    assert_eq!(got.others, [json!(["resolve", 3, ["readable", 6]])]);
    assert_eq!(got.items[&6], numbers(0..0));
    assert!(got.reason(6).contains("already started"), "{got:?}");
    // So is the whole result, pulled now.
    peer.send(json!(["pull", 1]));
    let got = read_pipes(&mut peer, 1).await;
    assert_eq!(
        got.others,
        [json!(["resolve", 1, {"name": "pair", "numbers": ["readable", 8]}])]
    );
    assert!(got.reason(8).contains("already started"), "{got:?}");
    for id in [3, 2, 1] {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn streams_in_a_vec_and_in_a_stream_each_get_a_pipe() {
    let mut peer = peer();
    peer.send(call(0, "many", json!([3, 2])));
    peer.send(json!(["pull", 1]));
    let got = read_pipes(&mut peer, 3).await;
    assert_eq!(
        got.others,
        [json!([
            "resolve",
            1,
            [[["readable", 1], ["readable", 2], ["readable", 3]]]
        ])]
    );
    for pipe in 1..=3 {
        assert_eq!(got.items[&pipe], numbers(0..2));
        assert_eq!(got.ended[&pipe], json!(["close", []]));
    }
    peer.send(json!(["release", 1, 1]));

    // A stream of streams: each item's pipe is opened before the write that
    // carries its readable end.
    peer.send(call(0, "nested", json!([3])));
    peer.send(json!(["pull", 2]));
    let got = read_pipes(&mut peer, 4).await;
    let [outer] = got.others.as_slice() else {
        panic!("{got:?}");
    };
    let outer = outer[2][1].as_i64().unwrap();
    let inner = &got.items[&outer];
    assert_eq!(inner.len(), 3, "{got:?}");
    for (i, readable) in inner.iter().enumerate() {
        assert_eq!(readable[0], "readable", "{got:?}");
        let pipe = readable[1].as_i64().unwrap();
        assert_eq!(got.items[&pipe], numbers(0..i as u64 + 1));
        assert_eq!(got.ended[&pipe], json!(["close", []]));
    }
    assert_eq!(got.ended[&outer], json!(["close", []]));
    peer.send(json!(["release", 2, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_stream_argument_of_a_call_to_the_page_is_a_pipe_opened_before_the_call() {
    let mut peer = peer();
    peer.send(call(0, "give", json!([["export", -1], 3])));
    peer.send(json!(["pull", 1]));
    let got = read_pipes(&mut peer, 1).await;
    // The pipe is import 1, the call import 2.
    assert_eq!(
        got.others,
        [
            json!(["push", ["pipeline", -1, [], [["readable", 1]]]]),
            json!(["pull", 2])
        ]
    );
    assert_eq!(got.items[&1], numbers(0..3));
    assert_eq!(got.ended[&1], json!(["close", []]));
    peer.send(json!(["resolve", 2, 3]));
    let mut rest = vec![peer.recv().await, peer.recv().await, peer.recv().await];
    rest.sort_by_key(Value::to_string);
    assert_eq!(
        rest,
        [
            json!(["release", -1, 1]),
            json!(["release", 2, 1]),
            json!(["resolve", 1, 3])
        ]
    );
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn acknowledgements_out_of_order_still_grant_credit() {
    let mut peer = peer();
    peer.send(call(0, "count", json!([100])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["pipe"])).await;
    peer.expect(json!(["resolve", 1, ["readable", 1]])).await;
    peer.send(json!(["release", 1, 1]));
    let first = recv_n(&mut peer, 64).await;
    for id in (2..66).rev() {
        peer.send(json!(["resolve", id, ["undefined"]]));
    }
    let rest = recv_n(&mut peer, 36).await;
    let items: Vec<Value> = first
        .iter()
        .chain(&rest)
        .map(|m| m[1][3][0].clone())
        .collect();
    assert_eq!(items, numbers(0..100));
    peer.expect(json!(["stream", ["pipeline", 1, ["close"], []]]))
        .await;
    peer.expect(json!(["release", 1, 1])).await;
    for id in (66..=102).rev() {
        peer.send(json!(["resolve", id, ["undefined"]]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_close_before_the_reader_starts_is_answered_once_it_has_read() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "hold", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, ["undefined"]])).await;
    peer.send(json!(["release", 2, 1]));
    peer.send(write(1, json!(1)));
    peer.send(write(1, json!(2)));
    peer.send(json!(["stream", ["pipeline", 1, ["close"], []]]));
    // A second end is refused at once.
    peer.send(json!(["stream", ["pipeline", 1, ["abort"], []]]));
    let reject = peer.recv().await;
    assert_eq!(reject[1], 6);
    assert!(reject_text(&reject).contains("already closed"), "{reject}");
    // Nothing read yet: nothing acknowledged, the close not answered.
    probe(&mut peer).await;
    peer.send(call(0, "drain", json!([])));
    let drain = peer.pushes;
    peer.send(json!(["pull", drain]));
    let got = peer.recv_set(4).await;
    assert_eq!(
        got,
        super::sorted([
            json!(["resolve", 3, ["undefined"]]),
            json!(["resolve", 4, ["undefined"]]),
            json!(["resolve", 5, ["undefined"]]),
            json!(["resolve", drain, 2]),
        ])
    );
    peer.send(json!(["release", 1, 1]));
    peer.send(json!(["release", drain, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_reader_that_never_starts_fails_the_writes_and_the_close() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(write(1, json!(1)));
    peer.send(call(0, "ignore", json!([["readable", 1]])));
    peer.send(json!(["pull", 3]));
    let got = peer.recv_set(2).await;
    assert!(
        got.contains(&json!(["resolve", 3, ["undefined"]])),
        "{got:?}"
    );
    let reject = got.iter().find(|m| m[0] == "reject").unwrap();
    assert_eq!(reject[1], 2);
    assert!(reject_text(reject).contains("reader is gone"), "{reject}");
    peer.send(json!(["stream", ["pipeline", 1, ["close"], []]]));
    let reject = peer.recv().await;
    assert_eq!(reject[1], 4);
    assert!(reject_text(&reject).contains("reader is gone"), "{reject}");
    peer.send(json!(["release", 3, 1]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_writer_gone_without_closing_fails_the_reader_after_its_items() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "hold", json!([["readable", 1]])));
    peer.send(write(1, json!(1)));
    peer.send(write(1, json!(2)));
    peer.send(json!(["release", 1, 1]));
    // A write after the release (a peer that breaks the rules) is refused.
    peer.send(write(1, json!(3)));
    let reject = peer.recv().await;
    assert_eq!(reject[1], 5);
    assert!(reject_text(&reject).contains("closed"), "{reject}");
    peer.send(call(0, "drain", json!([])));
    peer.send(json!(["pull", 6]));
    let got = peer.recv_set(3).await;
    assert!(
        got.contains(&json!(["resolve", 3, ["undefined"]])),
        "{got:?}"
    );
    assert!(
        got.contains(&json!(["resolve", 4, ["undefined"]])),
        "{got:?}"
    );
    let drained = got.iter().find(|m| m[1] == 6).unwrap();
    assert_eq!(drained[0], "reject");
    assert!(reject_text(drained).contains("after 2"), "{drained}");
    assert!(
        reject_text(drained).contains("without closing"),
        "{drained}"
    );
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", 6, 1]));
    peer.assert_zero().await;
    // The pipe is gone: a write to it is refused as a write to nothing.
    peer.send(write(1, json!(4)));
    let reject = peer.recv().await;
    assert!(
        reject_text(&reject).contains("only writes to pipes"),
        "{reject}"
    );
}

#[tokio::test]
async fn a_readable_end_is_taken_once() {
    // Even after the first reader let it go.
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "ignore", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, ["undefined"]])).await;
    probe(&mut peer).await;
    peer.send(call(0, "ignore", json!([["readable", 1]])));
    assert!(peer.aborted().await.contains("readable"));

    // Twice in one message.
    let mut peer = peer_of(P::default());
    peer.send(json!(["pipe"]));
    peer.send(call(0, "sum", json!([["readable", 1], ["readable", 1]])));
    assert!(peer.aborted().await.contains("readable"));

    // Of a push.
    let mut peer = peer_of(P::default());
    peer.send(call(0, "add", json!([1, 2])));
    peer.send(call(0, "sum", json!([["readable", 1]])));
    assert!(peer.aborted().await.contains("readable"));
}

#[tokio::test]
async fn a_refused_stream_message_gives_back_what_it_carried() {
    let mut peer = peer();
    // A write to the root, carrying an object of the page's.
    peer.send(json!([
        "stream",
        ["pipeline", 0, ["write"], [["export", -1]]]
    ]));
    let got = peer.recv_set(2).await;
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    let reject = got.iter().find(|m| m[0] == "reject").unwrap();
    assert!(reject_text(reject).contains("pipes"), "{reject}");
    // A write pushed rather than streamed is refused with why.
    peer.send(json!(["pipe"]));
    peer.send(json!(["push", ["pipeline", 2, ["write"], [1]]]));
    peer.send(json!(["pull", 3]));
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("stream"), "{reject}");
    peer.send(json!(["release", 3, 1]));
    peer.send(json!(["release", 2, 1]));
    peer.assert_zero().await;
    // A result for a write (or any push) the server never made ends the session.
    peer.send(json!(["resolve", 40, ["undefined"]]));
    let abort = peer.recv().await;
    assert_eq!(abort[0], "abort", "{abort}");
    assert!(
        abort[1][2]
            .as_str()
            .unwrap_or_default()
            .contains("no push of ours"),
        "{abort}"
    );
}

#[tokio::test]
async fn a_session_that_ends_mid_stream_ends_both_ways() {
    let p = P::default();
    let (sums, mut summed) = mpsc::unbounded_channel();
    *p.0.sums.lock().unwrap() = Some(sums);
    let mut peer = peer_of(p.clone());
    // A stream going out, its producer waiting for items.
    peer.send(call(0, "feed", json!([])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["pipe"])).await;
    peer.expect(json!(["resolve", 1, ["readable", 1]])).await;
    // A stream coming in, read on a task of the server's.
    peer.send(json!(["pipe"]));
    peer.send(call(0, "sum_later", json!([["readable", 2]])));
    peer.send(json!(["pull", 3]));
    peer.send(write(2, json!(5)));
    let got = peer.recv_set(2).await;
    assert!(
        got.contains(&json!(["resolve", 4, ["undefined"]])),
        "{got:?}"
    );
    let Peer {
        conn, to_server, ..
    } = peer;
    drop(to_server);
    let within = Duration::from_secs(5);
    tokio::time::timeout(within, conn.closed())
        .await
        .expect("the session ends");
    let sum = tokio::time::timeout(within, summed.recv())
        .await
        .expect("the reader ends")
        .unwrap();
    assert!(sum.unwrap_err().contains("disconnected"));
    let feeding = p.0.feeding.lock().unwrap().take().unwrap();
    tokio::time::timeout(within, feeding.closed())
        .await
        .expect("the producer learns its consumer is gone");
}

#[tokio::test]
async fn a_stream_relayed_to_or_from_a_connection_in_another_codec_flows_whole() {
    // A gateway: the stream comes from a farcall backend (bincode), whose own
    // calls (`start`, `credit`) cannot be read in Cap'n Web's codec, so this side
    // reads it and serves it again to the page.
    let mut peer = peer();
    peer.send(call(0, "relay", json!([1000])));
    peer.send(json!(["pull", 1]));
    let got = read_pipes(&mut peer, 1).await;
    assert_eq!(got.others, [json!(["resolve", 1, ["readable", 1]])]);
    assert_eq!(got.items[&1], numbers(0..1000));
    assert_eq!(got.ended[&1], json!(["close", []]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;

    // The other way: the page's stream goes on to the backend, which sums it.
    peer.send(json!(["pipe"]));
    let pipe = peer.pushes;
    peer.send(call(0, "relay_sum", json!([["readable", pipe]])));
    let sum = peer.pushes;
    peer.send(json!(["pull", sum]));
    for n in 1..=100 {
        peer.send(write(pipe, json!(n)));
    }
    peer.send(json!(["stream", ["pipeline", pipe, ["close"], []]]));
    let got = peer.recv_set(102).await;
    assert!(got.contains(&json!(["resolve", sum, 5050])), "{got:?}");
    let acknowledged = got
        .iter()
        .filter(|m| m[0] == "resolve" && m[2] == json!(["undefined"]))
        .count();
    assert_eq!(acknowledged, 101, "every write and the close: {got:?}");
    peer.send(json!(["release", pipe, 1]));
    peer.send(json!(["release", sum, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_producer_that_fails_aborts_the_pipe_after_its_items() {
    let mut peer = peer();
    peer.send(call(0, "broken", json!([2])));
    peer.send(json!(["pull", 1]));
    let got = read_pipes(&mut peer, 1).await;
    assert_eq!(got.items[&1], numbers(0..2));
    assert_eq!(got.ended[&1][0], "abort");
    assert!(got.reason(1).contains("disk on fire"), "{got:?}");
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_stream_from_one_page_is_passed_on_to_another() {
    let p = P::default();
    let mut writer = peer_of(p.clone());
    let mut reader = peer_of(p);
    writer.send(json!(["pipe"]));
    writer.send(call(0, "hold", json!([["readable", 1]])));
    writer.send(json!(["pull", 2]));
    writer.expect(json!(["resolve", 2, ["undefined"]])).await;
    writer.send(json!(["release", 2, 1]));
    reader.send(call(0, "pass", json!([])));
    reader.send(json!(["pull", 1]));
    // Written before the other page reads, and after.
    writer.send(write(1, json!(1)));
    let reading = tokio::spawn(async move {
        let got = read_pipes(&mut reader, 1).await;
        (reader, got)
    });
    writer.send(write(1, json!(2)));
    writer.send(json!(["stream", ["pipeline", 1, ["close"], []]]));
    let got = writer.recv_set(3).await;
    assert!(got.iter().all(|m| m[0] == "resolve"), "{got:?}");
    writer.send(json!(["release", 1, 1]));
    let (mut reader, got) = reading.await.unwrap();
    assert_eq!(got.others, [json!(["resolve", 1, ["readable", 1]])]);
    assert_eq!(got.items[&1], [json!(1), json!(2)]);
    assert_eq!(got.ended[&1], json!(["close", []]));
    reader.send(json!(["release", 1, 1]));
    reader.assert_zero().await;
    writer.assert_zero().await;
}

#[tokio::test]
async fn objects_in_stream_items_and_in_calls_to_the_page_keep_max_exports() {
    let mut peer = Peer::with(
        Connection::builder()
            .max_exports(3)
            .root(PipesServer::new(P::default())),
    );
    // A batch of ten objects would give the page ten ids: the stream is aborted,
    // saying why, and everything is released.
    peer.send(call(0, "objects", json!([10])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["pipe"])).await;
    peer.expect(json!(["resolve", 1, ["readable", 1]])).await;
    let abort = peer.recv().await;
    assert_eq!(abort[1][2], json!(["abort"]), "{abort}");
    let why = abort[1][3][0][2].as_str().unwrap_or_default();
    assert!(why.contains("more than 3 objects exported"), "{abort}");
    peer.expect(json!(["release", 1, 1])).await;
    // The page answers the abort (import 2, after the pipe).
    peer.send(json!(["resolve", 2, ["undefined"]]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;

    // A call to the page carrying five objects fails in Rust the same way, and
    // nothing reaches the page but the result.
    peer.send(call(0, "hand", json!([["export", -1], 5])));
    let id = peer.pushes;
    peer.send(json!(["pull", id]));
    let mut got = peer.recv_set(2).await;
    got.sort_by_key(|m| m[0].as_str().map(str::to_owned));
    assert_eq!(got[0], json!(["release", -1, 1]), "{got:?}");
    assert_eq!(got[1][0], "resolve", "{got:?}");
    let why = got[1][2].as_str().unwrap_or_default();
    assert!(why.contains("more than 3 objects exported"), "{got:?}");
    peer.send(json!(["release", id, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn an_abort_discards_the_writes_not_yet_read() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "hold", json!([["readable", 1]])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, ["undefined"]])).await;
    peer.send(json!(["release", 2, 1]));
    // Three writes the reader has not started to take, then an abort: they are
    // refused at once, as a `WritableStream`'s abort discards its queue.
    for n in 0..3 {
        peer.send(write(1, json!(n)));
    }
    peer.send(json!([
        "stream",
        [
            "pipeline",
            1,
            ["abort"],
            [["error", "Error", "user cancelled"]]
        ]
    ]));
    let abort = peer.pushes;
    let rejected = recv_n(&mut peer, 3).await;
    for (m, id) in rejected.iter().zip(3..) {
        assert_eq!((&m[0], &m[1]), (&json!("reject"), &json!(id)), "{m}");
        assert!(reject_text(m).contains("aborted"), "{m}");
    }
    // The reader, once it reads, sees the abort and no item.
    peer.send(call(0, "drain", json!([])));
    let drain = peer.pushes;
    peer.send(json!(["pull", drain]));
    let mut got = peer.recv_set(2).await;
    got.sort_by_key(|m| m[1].as_i64());
    assert_eq!(got[0], json!(["resolve", abort, ["undefined"]]), "{got:?}");
    assert_eq!(got[1][0], "reject", "{got:?}");
    assert!(reject_text(&got[1]).contains("user cancelled"), "{got:?}");
    peer.send(json!(["release", drain, 1]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

/// `StreamSender`s as `WritableStream`s.
mod writables;
