//! The translator against a peer that does what a `capnweb` client would not:
//! ids reused or out of range, answers named by themselves, promises resolving to
//! this side's own objects and answers, releases while things wait. Each case ends
//! with the session gone or every table back at zero, and nothing hangs.

use serde_json::{json, Value};

use super::{call, path_call, read, reject_text, sorted, CalcServer, Peer, C};
use crate::Connection;

fn promise(id: i64) -> Value {
    json!(["promise", id])
}

#[tokio::test]
async fn a_promise_resolving_to_a_waiting_answer_waits_for_it() {
    let mut peer = Peer::new();
    peer.send(call(0, "team_later", json!([])));
    // The lead's child, through a path: it waits for the team.
    peer.send(path_call(1, json!(["lead", "child"]), json!([1])));
    peer.send(call(0, "value_of", json!([promise(-1)])));
    peer.send(json!(["pull", 3]));
    peer.send(json!(["resolve", -1, ["pipeline", 2]]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.send(call(0, "open", json!([])));
    peer.send(json!(["pull", 4]));
    assert_eq!(
        peer.recv_set(2).await,
        sorted([
            json!(["resolve", 3, 2]),
            json!(["resolve", 4, ["undefined"]])
        ])
    );
    for id in 1..=4 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_promise_resolving_to_our_root_or_a_running_answer() {
    let mut peer = Peer::new();
    peer.send(call(0, "value_of", json!([promise(-1)])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["resolve", -1, ["import", 0]]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.expect(json!(["resolve", 1, 0])).await;
    peer.send(call(0, "child", json!([6])));
    peer.send(call(0, "value_of", json!([promise(-2)])));
    peer.send(json!(["pull", 3]));
    peer.send(json!(["resolve", -2, ["pipeline", 2]]));
    peer.expect(json!(["release", -2, 1])).await;
    peer.expect(json!(["resolve", 3, 6])).await;
    for id in 1..=3 {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_push_naming_its_own_answer_does_not_hang() {
    let mut peer = Peer::new();
    // Directly, and through a promise.
    peer.send(call(0, "value_of", json!([["pipeline", 1]])));
    peer.send(json!(["pull", 1]));
    peer.send(call(0, "value_of", json!([promise(-1)])));
    peer.send(json!(["pull", 2]));
    peer.send(json!(["resolve", -1, ["pipeline", 2]]));
    // The actor finds no such answer yet: the argument is a broken object.
    assert_eq!(
        peer.recv_set(3).await,
        sorted([
            json!(["release", -1, 1]),
            json!(["resolve", 1, -1]),
            json!(["resolve", 2, -1])
        ])
    );
    for id in [1, 2] {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_by_name_call_with_a_promise_on_an_answer_released_meanwhile() {
    let mut peer = Peer::new();
    peer.send(call(0, "child", json!([4])));
    peer.send(call(1, "add", json!([promise(-1), 1])));
    peer.send(json!(["pull", 2]));
    // Only pipelined on: released at once, as `using` does.
    peer.send(json!(["release", 1, 1]));
    peer.send(json!(["resolve", -1, 5]));
    peer.expect(json!(["release", -1, 1])).await;
    peer.expect(json!(["resolve", 2, 6])).await;
    peer.send(json!(["release", 2, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_rejected_promise_lets_go_of_our_objects_the_push_named() {
    let mut peer = Peer::new();
    peer.send(call(0, "child", json!([4])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["resolve", 1, ["export", -1]])).await;
    peer.send(json!(["release", 1, 1]));
    // On the child, with the child and a promise resolving to it as arguments.
    peer.send(call(-1, "add", json!([["import", -1], promise(-2)])));
    peer.send(json!(["pull", 2]));
    peer.send(call(0, "value_of", json!([promise(-3)])));
    peer.send(json!(["pull", 3]));
    peer.send(json!(["resolve", -3, ["import", -1]]));
    peer.expect(json!(["release", -3, 1])).await;
    peer.expect(json!(["resolve", 3, 4])).await;
    // Let go of by the peer while a push naming it waits.
    peer.send(json!(["release", -1, 1]));
    peer.send(json!(["reject", -2, ["error", "Error", "no"]]));
    assert_eq!(
        peer.recv_set(2).await,
        sorted([
            json!(["release", -2, 1]),
            json!(["reject", 2, ["error", "Error", "no"]])
        ])
    );
    for id in [2, 3] {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_promise_twice_in_one_push_or_beside_a_refused_form() {
    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([promise(-1), promise(-1)])));
    let reason = peer.aborted().await;
    assert!(reason.contains("passed twice"), "{reason}");

    let mut peer = Peer::new();
    peer.send(call(0, "add", json!([promise(-1), ["url", "https://x/"]])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["release", -1, 1])).await;
    let reject = peer.recv().await;
    assert!(reject_text(&reject).contains("`url`"), "{reject}");
    // Settled after all: nothing waits.
    peer.send(json!(["resolve", -1, ["export", -2]]));
    peer.expect(json!(["release", -2, 1])).await;
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn reads_of_a_whole_result_and_through_a_read_stub() {
    let mut peer = Peer::new();
    peer.send(call(0, "child", json!([5])));
    // An empty path: the result itself.
    peer.send(read(1, json!([])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["resolve", 2, ["export", -1]])).await;
    // By name on that read: the object it reached.
    peer.send(call(2, "value", json!([])));
    peer.send(json!(["pull", 3]));
    peer.expect(json!(["resolve", 3, 5])).await;
    for id in [3, 2, 1] {
        peer.send(json!(["release", id, 1]));
    }
    peer.send(json!(["release", -1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn pushes_never_released_end_the_session_at_the_answers_limit() {
    let limited = || {
        Peer::with(
            Connection::builder()
                .max_answers(4)
                .root(CalcServer::new(C::new(0))),
        )
    };
    // Plain results, which the actor itself keeps no longer: the translator does.
    let mut peer = limited();
    for id in 1..=4 {
        peer.send(call(0, "add", json!([id, 0])));
        peer.send(json!(["pull", id]));
        peer.expect(json!(["resolve", id, id])).await;
    }
    peer.send(call(0, "add", json!([5, 0])));
    let reason = peer.aborted().await;
    assert!(reason.contains("more than 4 pushes held"), "{reason}");
    // Released as they come, any number goes.
    let mut peer = limited();
    for id in 1..=8 {
        peer.send(call(0, "add", json!([id, 0])));
        peer.send(json!(["pull", id]));
        peer.expect(json!(["resolve", id, id])).await;
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn reading_one_object_over_and_over_stops_at_the_exports_limit() {
    let mut peer = Peer::with(
        Connection::builder()
            .max_exports(3)
            .root(CalcServer::new(C::new(0))),
    );
    peer.send(call(0, "child", json!([1])));
    // Each read gives the peer a fresh id for the same object, which the actor
    // counts once: the translator counts the ids.
    for id in 2..=4 {
        peer.send(read(1, json!([])));
        peer.send(json!(["pull", id]));
        peer.expect(json!(["resolve", id, ["export", -(id - 1)]]))
            .await;
    }
    peer.send(read(1, json!([])));
    peer.send(json!(["pull", 5]));
    let reject = peer.recv().await;
    assert_eq!(reject[0], "reject", "{reject}");
    assert!(
        reject_text(&reject).contains("more than 3 objects exported"),
        "{reject}"
    );
    // Once the peer lets go of one, it may have another.
    peer.send(json!(["release", -1, 1]));
    peer.send(read(1, json!([])));
    peer.send(json!(["pull", 6]));
    peer.expect(json!(["resolve", 6, ["export", -4]])).await;
    for id in 1..=6 {
        peer.send(json!(["release", id, 1]));
    }
    for id in 2..=4 {
        peer.send(json!(["release", -id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn objects_in_a_rejection_are_given_back() {
    let mut peer = Peer::new();
    // A promise of the peer's rejecting with a value that holds one of its objects.
    peer.send(call(0, "add", json!([promise(-1), 1])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["reject", -1, {"cause": ["export", -2]}]));
    let got = peer.recv_set(3).await;
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    assert!(got.contains(&json!(["release", -2, 1])), "{got:?}");
    // A function Rust called throwing one (`call_me` answers -1 then).
    peer.send(call(0, "call_me", json!([["export", -3]])));
    peer.send(json!(["pull", 2]));
    peer.expect(json!(["push", ["pipeline", -3, [], [5]]]))
        .await;
    peer.expect(json!(["pull", 1])).await;
    peer.send(json!(["reject", 1, ["export", -4]]));
    assert_eq!(
        peer.recv_set(4).await,
        sorted([
            json!(["release", -4, 1]),
            json!(["release", -3, 1]),
            json!(["release", 1, 1]),
            json!(["resolve", 2, -2]),
        ])
    );
    for id in [1, 2] {
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_resolution_nesting_to_the_limit_is_refused_with_a_reason() {
    let mut peer = Peer::new();
    // As deep as a resolve message lets a value be: put inside an array argument,
    // deeper than a payload may be.
    let mut deep = json!(1);
    for _ in 0..254 {
        deep = json!({ "a": deep });
    }
    peer.send(call(0, "sum", json!([[[promise(-1)]]])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["resolve", -1, deep]));
    peer.expect(json!(["release", -1, 1])).await;
    let reject = peer.recv().await;
    assert_eq!(reject[0], "reject", "{reject}");
    assert!(
        reject_text(&reject).contains("nests deeper than 256 levels"),
        "{reject}"
    );
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn results_never_released_are_limited_in_bytes() {
    // 32 x 64 KiB: 2 MiB of results may wait for their release.
    let builder = Connection::builder()
        .max_queued_bytes(64 << 10)
        .root(CalcServer::new(C::new(0)));
    let mut peer = Peer::with(builder);
    let chunk = "A".repeat(300_000);
    // A well-behaved page: pulled, read and released, any number of times.
    for _ in 0..12 {
        peer.send(call(0, "echo", json!([["bytes", chunk]])));
        let id = peer.pushes;
        peer.send(json!(["pull", id]));
        let got = peer.recv().await;
        assert_eq!(got[0], "resolve", "{}", &got.to_string()[..80]);
        peer.send(json!(["release", id, 1]));
    }
    peer.assert_zero().await;
    // One that never pulls nor releases: once its results hold more than the
    // limit, the session ends saying why.
    let mut sent = 0;
    let why = loop {
        peer.send(call(0, "echo", json!([["bytes", chunk]])));
        sent += 1;
        assert!(sent < 20, "no limit after {sent} results of 225 KB kept");
        // A probe: answered while under the limit.
        peer.send(call(0, "add", json!([1, 1])));
        let id = peer.pushes;
        peer.send(json!(["pull", id]));
        let got = peer.recv().await;
        if got[0] == "abort" {
            break got[1][2].as_str().unwrap_or_default().to_owned();
        }
        assert_eq!(got, json!(["resolve", id, 2]));
        peer.send(json!(["release", id, 1]));
    };
    assert!(why.contains("not released"), "{why}");
    assert!(sent >= 8, "ended after {sent}: the limit is 2 MiB");
}
