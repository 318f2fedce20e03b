//! Streams against a scripted Cap'n Web peer: a `Stream` going out is written into a
//! pipe the server opens on the peer, within a window of acknowledged writes; a
//! pipe the peer opens is read as a `Stream`, its writes acknowledged as the reader
//! takes them.

use std::sync::Mutex;

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{call, reject_text, Peer};
use crate::{ByteStream, Connection, Stream};

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
    async fn drain(&self) -> u64;
}

#[derive(Default)]
struct P {
    held: Mutex<Option<Stream<u64>>>,
}

impl Pipes for P {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn count(&self, n: u64) -> Stream<u64> {
        Stream::iter(0..n)
    }
    async fn sum(&self, mut numbers: Stream<u64>) -> Result<u64, String> {
        let mut sum = 0;
        while let Some(n) = numbers.next().await {
            sum += n.map_err(|e| e.to_string())?;
        }
        Ok(sum)
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
        *self.held.lock().unwrap() = Some(numbers);
    }
    async fn drain(&self) -> u64 {
        let held = self.held.lock().unwrap().take();
        let Some(mut numbers) = held else { return 0 };
        let mut count = 0;
        while let Some(Ok(_)) = numbers.next().await {
            count += 1;
        }
        count
    }
}

fn peer() -> Peer {
    Peer::with(Connection::builder().root(PipesServer::new(P::default())))
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
    peer.send(write(1, json!(["bytes", "aGVsbG8="])));
    peer.send(write(1, json!(["bytes", "IQ=="])));
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
    assert_eq!(got[1], json!(["resolve", 3, ["undefined"]]));
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
