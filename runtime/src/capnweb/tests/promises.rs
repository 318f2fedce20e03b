//! The peer's promises passed as values, against a scripted Cap'n Web peer: a push
//! with `["promise", -n]` among its arguments runs once each settles, with its value
//! (or rejects with its error); the server releases each promise once settled, or
//! when the push goes; the peer settles them unpulled, as the `capnweb` package does.

use serde_json::{json, Value};

use super::{call, path_call, read, reject_text, sorted, CalcServer, Peer, C};
use crate::Connection;

fn promise(id: i64) -> Value {
    json!(["promise", id])
}

#[tokio::test]
async fn a_call_runs_once_its_promise_resolves_with_the_value() {
    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([promise(-1), 2])));
    peer.send(json!(["pull", 1]));
    // A call on its result waits with it.
    peer.send(call(0, "child", json!([promise(-2)])));
    peer.send(call(2, "value", json!([])));
    peer.send(json!(["pull", 3]));
    // Meanwhile others run: this one is answered first.
    peer.send(call(0, "add", json!([1, 1])));
    peer.send(json!(["pull", 4]));
    peer.expect(json!(["resolve", 4, 2])).await;
    peer.send(json!(["resolve", -1, 40]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.expect(json!(["resolve", 1, 42])).await;
    peer.send(json!(["resolve", -2, 7]));
    peer.expect(json!(["release", -2, 1])).await;
    peer.expect(json!(["resolve", 3, 7])).await;
    for id in 1..=4 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_rejected_promise_rejects_the_push_and_gives_back_what_it_carried() {
    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([promise(-1), promise(-2)])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["reject", -1, ["error", "RangeError", "no number"]]));
    assert_eq!(
        peer.recv_set(3).await,
        sorted([
            json!(["release", -1, 1]),
            // The other promise: nothing waits for it any more.
            json!(["release", -2, 1]),
            json!(["reject", 1, ["error", "RangeError", "no number"]]),
        ])
    );
    // Its settlement, coming anyway, means nothing.
    peer.send(json!(["resolve", -2, 2]));

    // An object of the peer's among the arguments goes back too.
    peer.send(call(0, "add", json!([["export", -3], promise(-4)])));
    peer.send(json!(["pull", 2]));
    peer.send(json!(["reject", -4, "not an Error"]));
    let got = peer.recv_set(3).await;
    assert!(got.contains(&json!(["release", -3, 1])), "{got:?}");
    assert!(got.contains(&json!(["release", -4, 1])), "{got:?}");
    let reject = got.iter().find(|m| m[0] == "reject").expect("a reject");
    assert_eq!(reject_text(reject), "not an Error", "{reject}");
    for id in [1, 2] {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn promises_at_any_depth_and_in_resolutions_are_all_awaited() {
    let mut peer = Peer::new();
    peer.send(call(0, "sum", json!([[[1, promise(-1), promise(-2), 4]]])));
    peer.send(json!(["pull", 1]));
    // Out of order, and the first resolves to a further promise.
    peer.send(json!(["resolve", -2, 3]));
    peer.expect(json!(["release", -2, 1])).await;
    peer.send(json!(["resolve", -1, promise(-3)]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.send(call(0, "add", json!([0, 5])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, 5])).await;
    peer.send(json!(["resolve", -3, 2]));
    peer.expect(json!(["release", -3, 1])).await;
    peer.expect(json!(["resolve", 1, 10])).await;
    for id in [1, 2] {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn objects_arrive_through_promises_and_are_released_once() {
    let mut peer = Peer::new();
    // One of the peer's.
    peer.send(call(0, "value_of", json!([promise(-1)])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["resolve", -1, ["export", -2]]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.expect(json!(["push", ["pipeline", -2, ["value"], []]]))
        .await;
    peer.expect(json!(["pull", 1])).await;
    peer.send(json!(["resolve", 1, 9]));
    assert_eq!(
        peer.recv_set(3).await,
        sorted([
            json!(["release", 1, 1]),
            json!(["release", -2, 1]),
            json!(["resolve", 1, 9]),
        ])
    );
    peer.send(json!(["release", 1, 1]));

    // One of ours, which the peer lets go of while the push still waits.
    peer.send(call(0, "child", json!([4])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, ["export", -1]])).await;
    peer.send(json!(["release", 2, 1]));
    peer.send(call(0, "team_later", json!([])));
    peer.send(path_call(
        3,
        json!(["lead", "value_of"]),
        json!([promise(-3)]),
    ));
    peer.send(json!(["pull", 4]));
    peer.send(json!(["resolve", -3, ["import", -1]]));
    peer.expect(json!(["release", -3, 1])).await;
    peer.send(json!(["release", -1, 1]));
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 5]));
    assert_eq!(
        peer.recv_set(2).await,
        sorted([
            json!(["resolve", 4, 4]),
            json!(["resolve", 5, ["undefined"]]),
        ])
    );
    for id in 3..=5 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_push_released_before_its_promise_settles_gives_it_back() {
    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([promise(-1), ["export", -2]])));
    peer.send(call(1, "value", json!([])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["release", 2, 1]));
    peer.send(json!(["release", 1, 1]));
    assert_eq!(
        peer.recv_set(2).await,
        sorted([json!(["release", -1, 1]), json!(["release", -2, 1])])
    );
    // Settled after all: nothing waits, and what it carries goes back.
    peer.send(json!(["resolve", -1, ["export", -3]]));
    peer.expect(json!(["release", -3, 1])).await;
    peer.assert_zero().await;
    // A promise never settled, in a session that ends: nothing is left.
    peer.send(call(0, "value_of", json!([promise(-4)])));
    drop(peer.to_server);
    tokio::time::timeout(std::time::Duration::from_secs(5), peer.conn.closed())
        .await
        .expect("the session ends");
}

#[tokio::test]
async fn a_handler_awaiting_a_later_call_is_not_held_up_by_a_pending_promise() {
    let mut peer = Peer::new();
    // Returns once `open` is called.
    peer.send(call(0, "team_later", json!([])));
    peer.send(read(1, json!(["name"])));
    peer.send(json!(["pull", 2]));
    peer.send(call(0, "add", json!([promise(-1), 1])));
    peer.send(json!(["pull", 3]));
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 4]));
    assert_eq!(
        peer.recv_set(2).await,
        sorted([
            json!(["resolve", 2, "core"]),
            json!(["resolve", 4, ["undefined"]]),
        ])
    );
    peer.send(json!(["resolve", -1, 41]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.expect(json!(["resolve", 3, 42])).await;
    for id in 1..=4 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_promise_in_a_result_to_rust_is_awaited_too() {
    let mut peer = Peer::new();
    peer.send(call(0, "call_me", json!([["export", -1]])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["push", ["pipeline", -1, [], [5]]]))
        .await;
    peer.expect(json!(["pull", 1])).await;
    peer.send(json!(["resolve", 1, promise(-2)]));
    peer.send(json!(["resolve", -2, 50]));
    assert_eq!(
        peer.recv_set(4).await,
        sorted([
            json!(["release", -2, 1]),
            json!(["release", 1, 1]),
            json!(["release", -1, 1]),
            json!(["resolve", 1, 100]),
        ])
    );
    peer.send(json!(["release", 1, 1]));

    // A rejection fails the call Rust made (`call_me` answers -1 then).
    peer.send(call(0, "call_me", json!([["export", -3]])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["push", ["pipeline", -3, [], [5]]]))
        .await;
    peer.expect(json!(["pull", 2])).await;
    peer.send(json!(["resolve", 2, promise(-4)]));
    peer.send(json!(["reject", -4, ["error", "Error", "no"]]));
    assert_eq!(
        peer.recv_set(4).await,
        sorted([
            json!(["release", -4, 1]),
            json!(["release", 2, 1]),
            json!(["release", -3, 1]),
            json!(["resolve", 2, -2]),
        ])
    );
    peer.send(json!(["release", 2, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn settling_a_promise_twice_or_one_never_sent() {
    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([promise(-1), 1])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["resolve", -1, 1]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.expect(json!(["resolve", 1, 2])).await;
    // Settled already: ignored, what it carries given back.
    peer.send(json!(["resolve", -1, ["export", -2]]));
    peer.expect(json!(["release", -2, 1])).await;
    peer.send(json!(["reject", -1, "again"]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;

    for (bad, says) in [
        (
            json!(["resolve", -9, 1]),
            "a settlement of -9, which is no promise",
        ),
        (
            json!(["reject", -9, "x"]),
            "a settlement of -9, which is no promise",
        ),
        (
            json!(["resolve", 9, 1]),
            "a settlement of 9, which is no push of ours",
        ),
        (call(0, "add", json!([promise(1), 1])), "non-negative id"),
    ] {
        let mut peer = Peer::new();
        peer.send(bad.clone());
        let reason = peer.aborted().await;
        assert!(reason.contains(says), "{bad}: {reason}");
    }
    // An id reused while its promise is pending.
    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([promise(-1), 1])));
    peer.send(call(0, "add", json!([promise(-1), 2])));
    let reason = peer.aborted().await;
    assert!(reason.contains("still pending"), "{reason}");
}

#[tokio::test]
async fn a_flood_of_promises_ends_the_session() {
    let limited = || {
        Peer::with(
            Connection::builder()
                .max_inflight_calls(4)
                .root(CalcServer::new(C::new(0))),
        )
    };
    let over = "more than 4 pushes and promises waiting";
    // A push and two promises, then a push and one more: five.
    let mut peer = limited();
    peer.send(call(0, "add", json!([promise(-1), promise(-2)])));
    peer.send(call(0, "add", json!([promise(-3), 1])));
    let reason = peer.aborted().await;
    assert!(reason.contains(over), "{reason}");
    // A resolution bringing four more in place of one.
    let mut peer = limited();
    peer.send(call(0, "sum", json!([[[promise(-1)]]])));
    peer.send(call(0, "add", json!([1, 1])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, 2])).await;
    let more = json!([[promise(-2), promise(-3), promise(-4), promise(-5)]]);
    peer.send(json!(["resolve", -1, more]));
    peer.expect(json!(["release", -1, 1])).await;
    let reason = peer.aborted().await;
    assert!(reason.contains(over), "{reason}");
}

#[tokio::test]
async fn an_http_batch_refuses_at_once_what_waits_for_a_promise_it_never_settled() {
    let builder = Connection::builder().root(CalcServer::new(C::new(0)));
    let request = [
        call(0, "add", json!([promise(-1), 2])),
        json!(["pull", 1]),
        call(0, "add", json!([promise(-2), 2])),
        json!(["pull", 2]),
        json!(["resolve", -1, 1]),
    ]
    .map(|m| m.to_string())
    .join("\n");
    // Long enough that a response within it shows nothing waited for it.
    let wait = std::time::Duration::from_secs(60);
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::capnweb::batch(&builder, &request, wait),
    )
    .await
    .expect("the batch answers without waiting for its timeout");
    let mut lines: Vec<Value> = response
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.sort_by_key(Value::to_string);
    assert_eq!(lines.len(), 4, "{response}");
    assert_eq!(
        lines[0],
        json!([
            "reject",
            2,
            [
                "error",
                "Error",
                "the request ended before promise -2 settled"
            ]
        ])
    );
    assert_eq!(
        &lines[1..],
        [
            json!(["release", -1, 1]),
            json!(["release", -2, 1]),
            json!(["resolve", 1, 3])
        ]
    );
}
