//! The translator against a scripted Cap'n Web peer: hand-written messages in, the
//! server's messages checked, the connection's tables checked back at zero.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::interface::by_name;
use crate::{Callback, Connection, RemoteClient};

#[crate::remote]
trait Calc {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, String>;
    async fn child(&self, n: i64) -> CalcClient;
    async fn value(&self) -> i64;
    async fn call_me(&self, f: Callback<i64, i64>) -> i64;
    /// `f.try_call(5)`, described: `ok 10`, `app <error>` or `rpc <error>`.
    async fn try_me(&self, f: Callback<i64, Result<i64, String>>) -> String;
    async fn echo(&self, data: bytes::Bytes, extra: Option<u8>) -> (bytes::Bytes, Option<u8>);
    /// Plain fields, a nested struct, and objects (this value plus 1, 2 and 3).
    async fn team(&self) -> Team;
    /// The team, once `open` is called.
    async fn team_later(&self) -> Team;
    async fn open(&self);
    async fn value_of(&self, c: CalcClient) -> i64;
    async fn sum(&self, numbers: Vec<i64>) -> i64;
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Team {
    name: String,
    lead: CalcClient,
    stats: Stats,
    members: Vec<CalcClient>,
    ops: Ops,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Ops {
    double: Callback<i64, i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stats {
    size: u32,
    tags: Vec<String>,
}

/// A calculator holding a value; `open` lets `team_later` of any of them return.
struct C(i64, Arc<Notify>);

impl C {
    fn new(n: i64) -> Self {
        C(n, Arc::new(Notify::new()))
    }

    fn with(&self, n: i64) -> CalcClient {
        CalcClient::from_local(C(self.0 + n, self.1.clone()))
    }
}

impl Calc for C {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, String> {
        a.checked_div(b).ok_or_else(|| "division by zero".into())
    }
    async fn child(&self, n: i64) -> CalcClient {
        self.with(n)
    }
    async fn value(&self) -> i64 {
        self.0
    }
    async fn call_me(&self, f: Callback<i64, i64>) -> i64 {
        f.call(5).await.unwrap_or(-1) * 2
    }
    async fn try_me(&self, f: Callback<i64, Result<i64, String>>) -> String {
        match f.try_call(5).await {
            Ok(n) => format!("ok {n}"),
            Err(crate::CallError::App(e)) => format!("app {e}"),
            Err(crate::CallError::Rpc(e)) => format!("rpc {e}"),
        }
    }
    async fn echo(&self, data: bytes::Bytes, extra: Option<u8>) -> (bytes::Bytes, Option<u8>) {
        (data, extra)
    }
    async fn team(&self) -> Team {
        Team {
            name: "core".into(),
            lead: self.with(1),
            stats: Stats {
                size: 2,
                tags: vec!["a".into(), "b".into()],
            },
            members: vec![self.with(2), self.with(3)],
            ops: Ops {
                double: Callback::new(|x: i64| async move { x * 2 }),
            },
        }
    }
    async fn team_later(&self) -> Team {
        self.1.notified().await;
        self.team().await
    }
    async fn open(&self) {
        self.1.notify_one();
    }
    async fn value_of(&self, c: CalcClient) -> i64 {
        c.value().await.unwrap_or(-1)
    }
    async fn sum(&self, numbers: Vec<i64>) -> i64 {
        numbers.iter().sum()
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
    /// The server's pushes, pipes and stream messages so far (the id of the last).
    imports: i64,
    /// The translator's tables that still hold something (`Translator::residue`).
    residue: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Peer {
    fn new() -> Self {
        Peer::with(Connection::builder().root(CalcServer::new(C::new(0))))
    }

    fn with(builder: crate::Builder) -> Self {
        let (to_server, from_peer) = mpsc::unbounded_channel();
        let (to_peer, from_server) = mpsc::unbounded_channel();
        let (conn, residue) = super::connect_observed(&builder, Carrier { from_peer, to_peer });
        Peer {
            conn,
            to_server,
            from_server,
            pushes: 0,
            imports: 0,
            residue,
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
        let message: Value = serde_json::from_str(&text).unwrap();
        // Numbered on this side's imports table.
        if message[0] == "push" || message[0] == "pipe" || message[0] == "stream" {
            self.imports += 1;
        }
        message
    }

    async fn expect(&mut self, message: Value) {
        assert_eq!(self.recv().await, message);
    }

    /// The next `n` messages, in an order of their own (for messages the server may
    /// send in any order).
    async fn recv_set(&mut self, n: usize) -> Vec<Value> {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(self.recv().await);
        }
        got.sort_by_key(Value::to_string);
        got
    }

    /// The session's abort reason.
    async fn aborted(&mut self) -> String {
        let abort = self.recv().await;
        assert_eq!(abort[0], "abort", "{abort}");
        tokio::time::timeout(Duration::from_secs(5), self.conn.closed())
            .await
            .expect("the session ends");
        abort[1][2].as_str().unwrap_or_default().to_owned()
    }

    /// Checks the tables are empty, the connection's and the translator's, after
    /// everything sent so far was taken: a call answered after them shows they were
    /// (a plain result is not kept by the actor; the translator keeps the probe's
    /// until its release, which the next probe shows taken). What a release sets off (a stream's pump
    /// stopping, say) may still be on its way: at most 20 such calls.
    async fn assert_zero(&mut self) {
        let mut last = None;
        for _ in 0..20 {
            self.send(call(0, "add", json!([0, 0])));
            let id = self.pushes;
            self.send(json!(["pull", id]));
            self.expect(json!(["resolve", id, 0])).await;
            // Recorded once the probe's result was taken: the probe is kept.
            let mut residue = self.residue.lock().unwrap().clone();
            let probe = [
                format!("answers kept: [{id}]"),
                "answers: 1".to_owned(),
                // Its result, `0`.
                "bytes of kept results: 1".to_owned(),
            ];
            residue.retain(|r| !probe.contains(r));
            self.send(json!(["release", id, 1]));
            let stats = self.conn.stats().await.unwrap();
            if stats.is_zero() && residue.is_empty() {
                return;
            }
            last = Some((stats, residue));
        }
        panic!("the tables are not back at zero: {last:?}");
    }
}

fn call(target: i64, method: &str, args: Value) -> Value {
    json!(["push", ["pipeline", target, [method], args]])
}

fn read(target: i64, path: Value) -> Value {
    json!(["push", ["pipeline", target, path]])
}

fn path_call(target: i64, path: Value, args: Value) -> Value {
    json!(["push", ["pipeline", target, path, args]])
}

/// Values sorted as `recv_set` sorts messages.
fn sorted<const N: usize>(mut values: [Value; N]) -> [Value; N] {
    values.sort_by_key(Value::to_string);
    values
}

fn reject_text(message: &Value) -> &str {
    message[2][2].as_str().unwrap_or_default()
}

mod hostile;
mod promises;
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
async fn a_javascript_throw_is_the_application_error_of_a_fallible_callback() {
    let mut peer = Peer::new();
    for (k, (settle, described)) in [
        (json!(["resolve", 1, 10]), "ok 10"),
        (
            json!(["reject", 2, ["error", "RangeError", "nope"]]),
            "app nope",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let export = -(k as i64) - 1;
        peer.send(call(0, "try_me", json!([["export", export]])));
        let id = peer.pushes;
        peer.send(json!(["pull", id]));
        peer.expect(json!(["push", ["pipeline", export, [], [5]]]))
            .await;
        peer.expect(json!(["pull", k + 1])).await;
        peer.send(settle);
        let seen = peer.recv_set(3).await;
        assert!(
            seen.contains(&json!(["resolve", id, described])),
            "{seen:?}"
        );
        assert!(seen.contains(&json!(["release", export, 1])), "{seen:?}");
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn unsupported_pushes_are_rejected_and_the_session_goes_on() {
    let mut peer = Peer::new();
    peer.send(json!(["push", ["pipeline", 0, ["someField"]]]));
    peer.send(json!(["pull", 1]));
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("properties"), "{reject}");
    peer.send(call(
        0,
        "add",
        json!([["export", -1], ["url", "https://example.com/"]]),
    ));
    peer.send(json!(["pull", 2]));
    // What it carried is given back at once.
    peer.expect(json!(["release", -1, 1])).await;
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("`url`"), "{reject}");
    peer.send(call(0, "add", json!([1, 1])));
    peer.send(json!(["pull", 3]));
    peer.expect(json!(["resolve", 3, 2])).await;
}

#[tokio::test]
async fn properties_of_a_result_are_read_at_depth() {
    let mut peer = Peer::new();
    peer.send(call(0, "team", json!([])));
    // Before the team returns: the reads wait for it.
    peer.send(read(1, json!(["stats", "tags", "1"])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, "b"])).await;
    // After: an index as a number, a whole struct, a name.
    peer.send(read(1, json!(["stats", "tags", 0])));
    peer.send(read(1, json!(["stats"])));
    peer.send(read(1, json!(["name"])));
    for id in [3, 4, 5] {
        peer.send(json!(["pull", id]));
    }
    peer.expect(json!(["resolve", 3, "a"])).await;
    peer.expect(json!(["resolve", 4, {"size": 2, "tags": [["a", "b"]]}]))
        .await;
    peer.expect(json!(["resolve", 5, "core"])).await;
    for id in 1..=5 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_missing_property_is_undefined_and_reading_through_it_throws() {
    let mut peer = Peer::new();
    peer.send(call(0, "team", json!([])));
    peer.send(read(1, json!(["stats", "nope"])));
    peer.send(read(1, json!(["stats", "tags", "9"])));
    peer.send(read(1, json!(["nope", "deeper"])));
    for id in [2, 3, 4] {
        peer.send(json!(["pull", id]));
    }
    peer.expect(json!(["resolve", 2, ["undefined"]])).await;
    peer.expect(json!(["resolve", 3, ["undefined"]])).await;
    let reject = peer.recv().await;
    assert_eq!(reject[0], "reject");
    assert_eq!(reject[2][1], "TypeError");
    assert!(
        reject_text(&reject).contains("(reading 'deeper')"),
        "{reject}"
    );
    for id in 1..=4 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_capability_read_is_a_stub_to_call_and_release() {
    let mut peer = Peer::new();
    peer.send(call(0, "team", json!([])));
    peer.send(read(1, json!(["lead"])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, ["export", -1]])).await;
    peer.send(json!(["release", 2, 1]));
    peer.send(call(-1, "value", json!([])));
    peer.send(json!(["pull", 3]));
    peer.expect(json!(["resolve", 3, 1])).await;
    peer.send(json!(["release", 3, 1]));
    // Released by the peer, the lead is still the kept team's.
    peer.send(json!(["release", -1, 1]));
    peer.send(path_call(1, json!(["lead", "value"]), json!([])));
    peer.send(json!(["pull", 4]));
    peer.expect(json!(["resolve", 4, 1])).await;
    peer.send(json!(["release", 4, 1]));
    // One object read twice: two ids, each released once.
    peer.send(read(1, json!(["members", "1"])));
    peer.send(read(1, json!(["members", 1])));
    peer.send(json!(["pull", 5]));
    peer.send(json!(["pull", 6]));
    peer.expect(json!(["resolve", 5, ["export", -2]])).await;
    peer.expect(json!(["resolve", 6, ["export", -3]])).await;
    peer.send(call(-3, "value", json!([])));
    peer.send(json!(["pull", 7]));
    peer.expect(json!(["resolve", 7, 3])).await;
    let stats = peer.conn.stats().await.unwrap();
    assert_eq!(stats.exports, 4, "the team's lead, members and function");
    for id in [5, 6, 7] {
        peer.send(json!(["release", id, 1]));
    }
    peer.send(json!(["release", -2, 1]));
    peer.send(json!(["release", -3, 1]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_call_through_a_path_goes_to_the_object_it_reaches() {
    let mut peer = Peer::new();
    peer.send(call(0, "team_later", json!([])));
    // Before the team returns.
    peer.send(path_call(1, json!(["lead", "add"]), json!([2, 3])));
    peer.send(path_call(1, json!(["members", "0", "child"]), json!([10])));
    peer.send(call(3, "value", json!([])));
    peer.send(path_call(1, json!(["ops", "double"]), json!([21])));
    for id in [2, 4, 5] {
        peer.send(json!(["pull", id]));
    }
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 6]));
    assert_eq!(
        peer.recv_set(4).await,
        sorted([
            json!(["resolve", 2, 5]),
            json!(["resolve", 4, 12]),
            json!(["resolve", 5, 42]),
            json!(["resolve", 6, ["undefined"]]),
        ])
    );
    // After it returned and was pulled.
    peer.send(json!(["pull", 1]));
    let team = peer.recv().await;
    assert_eq!(team[2]["members"][0][1], json!(["export", -3]), "{team}");
    peer.send(path_call(1, json!(["members", "1", "value"]), json!([])));
    peer.send(json!(["pull", 7]));
    peer.expect(json!(["resolve", 7, 3])).await;
    // A plain value is no function.
    peer.send(path_call(1, json!(["stats", "size"]), json!([])));
    peer.send(json!(["pull", 8]));
    let reject = peer.recv().await;
    assert_eq!(reject[2][1], "TypeError");
    assert_eq!(reject_text(&reject), "'stats.size' is not a function.");
    for id in 2..=8 {
        peer.send(json!(["release", id, 1]));
    }
    for id in 1..=4 {
        peer.send(json!(["release", -id, 1]));
    }
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_path_on_a_rejected_answer_rejects_alike() {
    let mut peer = Peer::new();
    peer.send(call(0, "div", json!([1, 0])));
    peer.send(read(1, json!(["x"])));
    peer.send(path_call(1, json!(["x", "y"]), json!([["export", -1]])));
    peer.send(call(0, "nope", json!([])));
    peer.send(read(4, json!(["x", "y"])));
    for id in [2, 3, 5] {
        peer.send(json!(["pull", id]));
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(peer.recv().await);
    }
    // The call's argument is given back: it is not called.
    assert!(seen.contains(&json!(["release", -1, 1])), "{seen:?}");
    let rejected = |id: i64| {
        let reject = seen
            .iter()
            .find(|m| m[0] == "reject" && m[1] == id)
            .unwrap_or_else(|| panic!("a reject of {id} in {seen:?}"));
        reject_text(reject).to_owned()
    };
    assert_eq!(rejected(2), "division by zero");
    assert_eq!(rejected(3), "division by zero");
    assert!(rejected(5).contains("not found"), "{seen:?}");
    for id in 1..=5 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn paths_on_our_objects_and_map_are_refused() {
    let mut peer = Peer::new();
    peer.send(read(0, json!(["someField"])));
    peer.send(path_call(0, json!(["child", "value"]), json!([])));
    peer.send(call(0, "child", json!([1])));
    // On a stub returned: the path reaches an object, which has no properties.
    peer.send(path_call(3, json!(["value", "x"]), json!([])));
    peer.send(read(3, json!(["value"])));
    peer.send(json!(["push", ["remap", 3, [], [], []]]));
    for id in [1, 2, 4, 5, 6] {
        peer.send(json!(["pull", id]));
    }
    let rejects = peer.recv_set(5).await;
    for (id, says) in [
        (1, "cannot be read"),
        (2, "property paths"),
        (4, "property paths"),
        (5, "cannot be read"),
        (6, "`.map()`"),
    ] {
        let reject = rejects
            .iter()
            .find(|m| m[1] == id)
            .expect("each is rejected");
        assert_eq!(reject[0], "reject", "{reject}");
        assert!(reject_text(reject).contains(says), "{reject}");
    }
    for id in 1..=6 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn releasing_a_waiting_push_drops_it_and_what_it_carried() {
    let mut peer = Peer::new();
    peer.send(call(0, "team_later", json!([])));
    peer.send(path_call(
        1,
        json!(["lead", "value_of"]),
        json!([["export", -1]]),
    ));
    peer.send(json!(["pull", 2]));
    peer.send(json!(["release", 2, 1]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 3]));
    peer.expect(json!(["resolve", 3, ["undefined"]])).await;
    // The team returned: nothing more comes for the dropped push.
    peer.send(json!(["pull", 1]));
    let team = peer.recv().await;
    assert_eq!(team[0], "resolve", "{team}");
    peer.send(json!(["release", 1, 1]));
    peer.send(json!(["release", 3, 1]));
    for id in 1..=4 {
        peer.send(json!(["release", -id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_released_answer_stays_for_the_pushes_waiting_on_it() {
    let mut peer = Peer::new();
    peer.send(call(0, "team_later", json!([])));
    peer.send(path_call(1, json!(["members", "1", "value"]), json!([])));
    peer.send(json!(["pull", 2]));
    // `using` the promise only to pipeline on it: released before it returned.
    peer.send(json!(["release", 1, 1]));
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 3]));
    assert_eq!(
        peer.recv_set(2).await,
        sorted([
            json!(["resolve", 2, 3]),
            json!(["resolve", 3, ["undefined"]])
        ])
    );
    // Gone once the push ran: its result and objects.
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", 3, 1]));
    peer.assert_zero().await;
    // Released already.
    peer.send(json!(["pull", 1]));
    let reason = peer.aborted().await;
    assert!(reason.contains("not a pending push"), "{reason}");
}

#[tokio::test]
async fn a_released_waiting_push_still_runs_for_the_pushes_on_it() {
    let mut peer = Peer::new();
    peer.send(call(0, "team_later", json!([])));
    peer.send(path_call(1, json!(["lead", "child"]), json!([1])));
    peer.send(call(2, "value", json!([])));
    peer.send(json!(["pull", 3]));
    // The child's promise is released before anything returned: the call on it
    // still gets its answer.
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", 1, 1]));
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 4]));
    assert_eq!(
        peer.recv_set(2).await,
        sorted([
            json!(["resolve", 3, 2]),
            json!(["resolve", 4, ["undefined"]])
        ])
    );
    peer.send(json!(["release", 3, 1]));
    peer.send(json!(["release", 4, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn releasing_a_chain_of_waiting_pushes_drops_them_all() {
    let mut peer = Peer::new();
    peer.send(call(0, "team_later", json!([])));
    peer.send(path_call(1, json!(["lead", "child"]), json!([1])));
    peer.send(call(2, "value_of", json!([["export", -1]])));
    peer.send(json!(["release", 2, 1]));
    // The last push naming 2 goes: both go, with what they carried.
    peer.send(json!(["release", 3, 1]));
    peer.expect(json!(["release", -1, 1])).await;
    let stats = peer.conn.stats().await.unwrap();
    assert_eq!(stats.answers, 1, "only the team, still running");
    peer.send(json!(["pull", 2]));
    let reason = peer.aborted().await;
    assert!(
        reason.contains("pull of 2, which is not a pending push"),
        "{reason}"
    );
}

#[tokio::test]
async fn pushes_naming_a_waiting_push_wait_for_it_and_others_do_not() {
    let mut peer = Peer::new();
    peer.send(call(0, "team_later", json!([])));
    // The lead's child, made through a path: a waiting push.
    peer.send(path_call(1, json!(["lead", "child"]), json!([1])));
    // On it, and with it as an argument: they wait for it.
    peer.send(call(2, "value", json!([])));
    peer.send(call(0, "value_of", json!([["pipeline", 2]])));
    peer.send(json!(["pull", 3]));
    peer.send(json!(["pull", 4]));
    // Not involved: answered while the others wait, and the call it makes lets
    // the team return.
    peer.send(call(0, "add", json!([1, 2])));
    peer.send(json!(["pull", 5]));
    peer.expect(json!(["resolve", 5, 3])).await;
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 6]));
    assert_eq!(
        peer.recv_set(3).await,
        sorted([
            json!(["resolve", 3, 2]),
            json!(["resolve", 4, 2]),
            json!(["resolve", 6, ["undefined"]]),
        ])
    );
    for id in (1..=6).rev() {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_flood_of_waiting_pushes_ends_the_session() {
    let mut peer = Peer::with(
        Connection::builder()
            .max_inflight_calls(4)
            .root(CalcServer::new(C::new(0))),
    );
    peer.send(call(0, "team_later", json!([])));
    for _ in 0..4 {
        peer.send(read(1, json!(["name"])));
    }
    // The fifth is one too many.
    peer.send(read(1, json!(["name"])));
    let reason = peer.aborted().await;
    assert!(
        reason.ends_with(": more than 4 pushes and promises waiting (pushes for the results they depend on, promises to settle)"),
        "{reason}"
    );
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
        (
            r#"["push", ["pipeline", 0, ["add", {"a": 1}], []]]"#,
            "neither a name nor a number",
        ),
        (
            r#"["push", ["pipeline", 0, [null]]]"#,
            "neither a name nor a number",
        ),
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
    let builder = Connection::builder().root(CalcServer::new(C::new(0)));
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
