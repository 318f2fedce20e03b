//! The translator against a scripted Cap'n Web peer: hand-written messages in, the
//! server's messages checked, the connection's tables checked back at zero.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::interface::by_name;
use crate::{Callback, Connection, RemoteClient};

#[crate::remote]
trait Calc {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, String>;
    async fn child(&self, n: i64) -> CalcClient;
    async fn value(&self) -> i64;
    async fn call_me(&self, f: Callback<i64, i64>) -> i64;
    async fn echo(&self, data: bytes::Bytes, extra: Option<u8>) -> (bytes::Bytes, Option<u8>);
}

struct C(i64);

impl Calc for C {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, String> {
        a.checked_div(b).ok_or_else(|| "division by zero".into())
    }
    async fn child(&self, n: i64) -> CalcClient {
        CalcClient::from_local(C(self.0 + n))
    }
    async fn value(&self) -> i64 {
        self.0
    }
    async fn call_me(&self, f: Callback<i64, i64>) -> i64 {
        f.call(5).await.unwrap_or(-1) * 2
    }
    async fn echo(&self, data: bytes::Bytes, extra: Option<u8>) -> (bytes::Bytes, Option<u8>) {
        (data, extra)
    }
}

/// The server's end of a pair of message channels.
struct Carrier {
    from_peer: mpsc::UnboundedReceiver<String>,
    to_peer: mpsc::UnboundedSender<String>,
}

impl Stream for Carrier {
    type Item = io::Result<String>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.from_peer.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<String> for Carrier {
    type Error = io::Error;
    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, message: String) -> io::Result<()> {
        let _ = self.to_peer.send(message);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The scripted JavaScript side.
struct Peer {
    conn: Connection,
    to_server: mpsc::UnboundedSender<String>,
    from_server: mpsc::UnboundedReceiver<String>,
    /// Pushes sent so far (the id of the last).
    pushes: i64,
}

impl Peer {
    fn new() -> Self {
        Peer::with(Connection::builder().root(CalcServer::new(C(0))))
    }

    fn with(builder: crate::Builder) -> Self {
        let (to_server, from_peer) = mpsc::unbounded_channel();
        let (to_peer, from_server) = mpsc::unbounded_channel();
        let conn = super::connect(&builder, Carrier { from_peer, to_peer });
        Peer {
            conn,
            to_server,
            from_server,
            pushes: 0,
        }
    }

    fn send(&mut self, message: Value) {
        // Pipes and stream writes are numbered like pushes.
        if message[0] == "push" || message[0] == "pipe" || message[0] == "stream" {
            self.pushes += 1;
        }
        self.to_server.send(message.to_string()).unwrap();
    }

    async fn recv(&mut self) -> Value {
        let text = tokio::time::timeout(Duration::from_secs(5), self.from_server.recv())
            .await
            .expect("a message from the server within 5 s")
            .expect("the server's channel is open");
        serde_json::from_str(&text).unwrap()
    }

    async fn expect(&mut self, message: Value) {
        assert_eq!(self.recv().await, message);
    }

    /// Checks the tables are empty, after everything sent so far was taken: a call
    /// answered after them shows they were (a plain result is not kept).
    async fn assert_zero(&mut self) {
        self.send(call(0, "add", json!([0, 0])));
        let id = self.pushes;
        self.send(json!(["pull", id]));
        self.expect(json!(["resolve", id, 0])).await;
        let stats = self.conn.stats().await.unwrap();
        assert!(stats.is_zero(), "{stats:?}");
    }
}

fn call(target: i64, method: &str, args: Value) -> Value {
    json!(["push", ["pipeline", target, [method], args]])
}

fn reject_text(message: &Value) -> &str {
    message[2][2].as_str().unwrap_or_default()
}

mod streams;

#[tokio::test]
async fn a_call_resolves_and_its_release_empties_the_tables() {
    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([1, 2])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["resolve", 1, 3])).await;
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn values_bytes_and_left_out_arguments() {
    let mut peer = Peer::new();
    peer.send(call(0, "echo", json!([["bytes", "aGkh"]])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["resolve", 1, [[["bytes", "aGkh"], null]]]))
        .await;
    peer.send(call(0, "echo", json!([["bytes", "AA=="], 7])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, [[["bytes", "AA=="], 7]]]))
        .await;
}

#[tokio::test]
async fn errors_are_rejections_with_their_text() {
    let mut peer = Peer::new();
    peer.send(call(0, "div", json!([1, 0])));
    peer.send(json!(["pull", 1]));
    let reject = peer.recv().await;
    assert_eq!(reject[0], "reject");
    assert_eq!(reject[2][0], "error");
    assert_eq!(reject_text(&reject), "division by zero");
    peer.send(json!(["release", 1, 1]));

    peer.send(call(0, "nope", json!([])));
    peer.send(json!(["pull", 2]));
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("not found"), "{reject}");
    peer.send(json!(["release", 2, 1]));

    peer.send(call(0, "add", json!(["one", 2])));
    peer.send(json!(["pull", 3]));
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("add"), "{reject}");
    peer.send(json!(["release", 3, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_returned_stub_is_called_and_released() {
    let mut peer = Peer::new();
    peer.send(call(0, "child", json!([4])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["resolve", 1, ["export", -1]])).await;
    peer.send(json!(["release", 1, 1]));
    peer.send(call(-1, "value", json!([])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, 4])).await;
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", -1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn calls_pipelined_on_a_result_need_no_round_trip() {
    let mut peer = Peer::new();
    peer.send(call(0, "child", json!([1])));
    peer.send(call(1, "child", json!([2])));
    peer.send(call(2, "value", json!([])));
    peer.send(json!(["pull", 3]));
    peer.expect(json!(["resolve", 3, 3])).await;
    for id in [3, 2, 1] {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_function_passed_in_is_a_callback_the_server_calls() {
    let mut peer = Peer::new();
    peer.send(call(0, "call_me", json!([["export", -1]])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["push", ["pipeline", -1, [], [5]]]))
        .await;
    peer.expect(json!(["pull", 1])).await;
    peer.send(json!(["resolve", 1, 50]));
    peer.expect(json!(["release", 1, 1])).await;
    // The callback is dropped after the call: its release and the result follow.
    let mut rest = vec![peer.recv().await, peer.recv().await];
    rest.sort_by_key(|m| m[0].as_str().map(str::to_owned));
    assert_eq!(
        rest,
        [json!(["release", -1, 1]), json!(["resolve", 1, 100])]
    );
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_javascript_exception_fails_the_callback_call() {
    let mut peer = Peer::new();
    peer.send(call(0, "call_me", json!([["export", -1]])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["push", ["pipeline", -1, [], [5]]]))
        .await;
    peer.expect(json!(["pull", 1])).await;
    peer.send(json!(["reject", 1, ["error", "TypeError", "boom"]]));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(peer.recv().await);
    }
    assert!(seen.contains(&json!(["release", 1, 1])), "{seen:?}");
    assert!(seen.contains(&json!(["release", -1, 1])), "{seen:?}");
    assert!(seen.contains(&json!(["resolve", 1, -2])), "{seen:?}");
}

#[tokio::test]
async fn unsupported_pushes_are_rejected_and_the_session_goes_on() {
    let mut peer = Peer::new();
    peer.send(json!(["push", ["pipeline", 0, ["someField"]]]));
    peer.send(json!(["pull", 1]));
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("properties"), "{reject}");
    peer.send(json!([
        "push",
        ["pipeline", 0, ["add"], [["promise", -1], 1]]
    ]));
    peer.send(json!(["pull", 2]));
    // The promise is given back at once.
    peer.expect(json!(["release", -1, 1])).await;
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("promises"), "{reject}");
    peer.send(call(0, "add", json!([1, 1])));
    peer.send(json!(["pull", 3]));
    peer.expect(json!(["resolve", 3, 2])).await;
}

#[tokio::test]
async fn malformed_input_aborts_with_a_reason() {
    for (bad, says) in [
        ("not json", "malformed message"),
        (
            r#"["push", ["pipeline", 0, ["add"], [[1, 2], 3]]]"#,
            "bad RPC message",
        ),
        (r#"["release", -9, 1]"#, "not exported"),
        (r#"["frobnicate"]"#, "unknown message type"),
        (
            &format!("{}1{}", "[".repeat(300), "]".repeat(300)),
            "nesting deeper than 256",
        ),
    ] {
        let peer = &mut Peer::new();
        peer.to_server.send(bad.to_owned()).unwrap();
        let abort = peer.recv().await;
        assert_eq!(abort[0], "abort", "{bad}");
        let reason = abort[1][2].as_str().unwrap();
        assert!(reason.contains(says), "{bad}: {reason}");
        tokio::time::timeout(Duration::from_secs(5), peer.conn.closed())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_http_batch_answers_what_it_pulled() {
    let builder = Connection::builder().root(CalcServer::new(C(0)));
    let request = [
        call(0, "child", json!([1])),
        call(1, "value", json!([])),
        json!(["pull", 2]),
        call(0, "add", json!([2, 2])),
        json!(["pull", 3]),
    ]
    .map(|m| m.to_string())
    .join("\n");
    let response = super::batch(&builder, &request, Duration::from_secs(5)).await;
    assert_eq!(response, "[\"resolve\",2,1]\n[\"resolve\",3,4]");
    let response = super::batch(&builder, "nope", Duration::from_secs(5)).await;
    assert!(response.starts_with("[\"abort\""), "{response}");
}

#[test]
fn names_hash_as_the_macro_hashes_them() {
    for method in <CalcClient as RemoteClient>::INTERFACE.methods {
        let id = by_name::method_id(method.name);
        assert!(by_name::is_wildcard(id));
        assert_eq!(
            by_name::resolve(id, <CalcClient as RemoteClient>::INTERFACE.methods).map(|m| m.name),
            Some(method.name)
        );
        assert_eq!(id >> 12, method.id >> 12, "{}", method.name);
    }
}
