//! `StreamSender`s against a scripted Cap'n Web peer: the peer's `WritableStream`
//! (`["writable", e]`) written by a Rust sender, and a Rust sender sent out as a
//! `WritableStream` the peer writes into.

use super::*;

/// A peer whose server reports what `sum_later` (and `collector`) summed.
fn summing() -> (Peer, mpsc::UnboundedReceiver<Result<u64, String>>) {
    let p = P::default();
    let (sums, summed) = mpsc::unbounded_channel();
    *p.0.sums.lock().unwrap() = Some(sums);
    (peer_of(p), summed)
}

async fn summed(rx: &mut mpsc::UnboundedReceiver<Result<u64, String>>) -> Result<u64, String> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("summed within 5 s")
        .expect("the server reports")
}

#[tokio::test]
async fn a_writable_of_the_peers_is_written_closed_and_released_after() {
    let mut peer = peer();
    peer.send(call(0, "write_into", json!([3, ["writable", -1]])));
    peer.send(json!(["pull", 1]));
    // The writes (imports 1 to 3), the close (4), the call's result; the
    // release of the writable only after the close.
    let got = recv_n(&mut peer, 6).await;
    let writes: Vec<&Value> = got.iter().filter(|m| m[0] == "stream").collect();
    assert_eq!(
        writes,
        [
            &json!(["stream", ["pipeline", -1, ["write"], [0]]]),
            &json!(["stream", ["pipeline", -1, ["write"], [1]]]),
            &json!(["stream", ["pipeline", -1, ["write"], [2]]]),
            &json!(["stream", ["pipeline", -1, ["close"], []]]),
        ]
    );
    assert!(got.contains(&json!(["resolve", 1, 3])), "{got:?}");
    let close = got
        .iter()
        .position(|m| m[1][2] == json!(["close"]))
        .unwrap();
    let release = got.iter().position(|m| m[0] == "release").unwrap();
    assert_eq!(got[release], json!(["release", -1, 1]));
    assert!(close < release, "released before it was closed: {got:?}");
    for id in 1..=4 {
        peer.send(json!(["resolve", id, ["undefined"]]));
    }
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_writer_that_fails_aborts_the_peers_writable_with_why() {
    let mut peer = peer();
    peer.send(call(
        0,
        "write_into",
        json!([1, ["writable", -1], "disk full"]),
    ));
    peer.send(json!(["pull", 1]));
    let got = recv_n(&mut peer, 4).await;
    let abort = got
        .iter()
        .find(|m| m[0] == "stream" && m[1][2] == json!(["abort"]))
        .unwrap_or_else(|| panic!("no abort: {got:?}"));
    assert_eq!(abort[1][3][0][2], json!("disk full"), "{abort}");
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    for id in 1..=2 {
        peer.send(json!(["resolve", id, ["undefined"]]));
    }
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_writable_that_errors_stops_the_rust_writer() {
    let mut peer = peer();
    // 1000 numbers: the window lets 64 writes out; the page's stream errors on the
    // first, so the writer finds its reader gone.
    peer.send(call(0, "write_into", json!([1000, ["writable", -1]])));
    peer.send(json!(["pull", 1]));
    let first = recv_n(&mut peer, 64).await;
    assert!(first.iter().all(|m| m[0] == "stream"), "{first:?}");
    peer.send(json!(["reject", 1, ["error", "Error", "quota exceeded"]]));
    // The stream is aborted and released; the call returns how far it got.
    let mut rest = Vec::new();
    let mut result = None;
    for _ in 0..200 {
        let m = peer.recv().await;
        if m[0] == "resolve" && m[1] == 1 {
            result = m[2].as_u64();
        }
        rest.push(m);
        if result.is_some() && rest.iter().any(|m| m[0] == "release") {
            break;
        }
    }
    let taken = result.expect("the call returns");
    assert!(taken < 1000, "the writer never saw its reader gone");
    assert!(rest.contains(&json!(["release", -1, 1])), "{rest:?}");
    // As the page does: what it still had fails, the abort is answered.
    let last = peer.imports;
    for id in 2..=last {
        peer.send(json!(["reject", id, ["error", "Error", "quota exceeded"]]));
    }
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_returned_sender_is_a_writable_the_peer_writes_and_closes() {
    let (mut peer, mut sums) = summing();
    peer.send(call(0, "collector", json!([])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["resolve", 1, ["writable", -1]])).await;
    peer.send(json!(["release", 1, 1]));
    peer.send(write(-1, json!(5)));
    peer.send(write(-1, json!(7)));
    peer.send(json!(["stream", ["pipeline", -1, ["close"], []]]));
    let got = peer.recv_set(3).await;
    assert_eq!(
        got,
        [
            json!(["resolve", 2, ["undefined"]]),
            json!(["resolve", 3, ["undefined"]]),
            json!(["resolve", 4, ["undefined"]]),
        ]
    );
    assert_eq!(summed(&mut sums).await, Ok(12));
    peer.send(json!(["release", -1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_peer_that_aborts_or_drops_its_writer_fails_the_rust_stream() {
    let (mut peer, mut sums) = summing();
    // Aborted with a reason.
    peer.send(call(0, "collector", json!([])));
    peer.send(json!(["pull", 1]));
    peer.expect(json!(["resolve", 1, ["writable", -1]])).await;
    peer.send(json!(["release", 1, 1]));
    peer.send(write(-1, json!(5)));
    peer.send(json!([
        "push",
        [
            "pipeline",
            -1,
            ["abort"],
            [["error", "Error", "user cancelled"]]
        ]
    ]));
    peer.send(json!(["pull", 3]));
    let why = summed(&mut sums).await.unwrap_err();
    assert!(why.contains("user cancelled"), "{why}");
    let got = peer.recv_set(2).await;
    assert!(
        got.contains(&json!(["resolve", 3, ["undefined"]])),
        "{got:?}"
    );
    peer.send(json!(["release", 3, 1]));
    peer.send(json!(["release", -1, 1]));
    peer.assert_zero().await;
    // Released without a close: the page went away.
    peer.send(call(0, "collector", json!([])));
    let id = peer.pushes;
    peer.send(json!(["pull", id]));
    let resolve = peer.recv().await;
    let writable = resolve[2][1].as_i64().unwrap();
    assert_eq!(resolve[2][0], "writable", "{resolve}");
    peer.send(json!(["release", id, 1]));
    peer.send(write(writable, json!(1)));
    // The write is taken (the reader has credit), then the page goes.
    peer.expect(json!(["resolve", id + 1, ["undefined"]])).await;
    peer.send(json!(["release", writable, 1]));
    let why = summed(&mut sums).await.unwrap_err();
    assert!(why.contains("without closing"), "{why}");
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_writable_handed_to_a_method_that_keeps_nothing_is_closed_empty() {
    let mut peer = peer();
    peer.send(call(0, "write_into", json!([0, ["writable", -1]])));
    peer.send(json!(["pull", 1]));
    let got = peer.recv_set(3).await;
    assert_eq!(
        got,
        [
            json!(["release", -1, 1]),
            json!(["resolve", 1, 0]),
            json!(["stream", ["pipeline", -1, ["close"], []]]),
        ]
    );
    peer.send(json!(["resolve", 1, ["undefined"]]));
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn malformed_writables_end_only_their_session() {
    let mut peer = peer();
    peer.send(call(0, "write_into", json!([1, ["writable", 3]])));
    let why = peer.aborted().await;
    assert!(why.contains("writable"), "{why}");
    // A writable where the method wants a number: refused (not read as a
    // number), and released.
    let mut peer = super::peer();
    peer.send(call(0, "add", json!([["writable", -1], 1])));
    peer.send(json!(["pull", 1]));
    let got = peer.recv_set(2).await;
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    assert!(got.iter().any(|m| m[0] == "reject"), "{got:?}");
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_refused_message_gives_its_writable_back() {
    let mut peer = peer();
    // A form this server does not take, next to the writable: the push is
    // refused and the writable released, leaving nothing behind.
    peer.send(call(
        0,
        "write_into",
        json!([1, ["writable", -1], ["url", "https://example.com/"]]),
    ));
    peer.send(json!(["pull", 1]));
    let got = peer.recv_set(2).await;
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    assert!(got.iter().any(|m| m[0] == "reject"), "{got:?}");
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
    // The same writable in two calls at once: the first sender to attach writes
    // into it; the second finds it taken (what it had buffered goes nowhere).
    // Both references come back, after the close.
    peer.send(call(0, "write_into", json!([2, ["writable", -2]])));
    let first = peer.pushes;
    peer.send(call(0, "write_into", json!([2, ["writable", -2]])));
    let second = peer.pushes;
    peer.send(json!(["pull", first]));
    peer.send(json!(["pull", second]));
    let mut got = Vec::new();
    let released = |got: &Vec<Value>| -> u64 {
        got.iter()
            .filter(|m| m[0] == "release" && m[1] == -2)
            .map(|m| m[2].as_u64().unwrap())
            .sum()
    };
    while got.len() < 20
        && !(released(&got) == 2 && got.iter().filter(|m| m[0] == "resolve").count() == 2)
    {
        got.push(peer.recv().await);
    }
    assert_eq!(released(&got), 2, "{got:?}");
    let writes: Vec<&Value> = got.iter().filter(|m| m[0] == "stream").collect();
    assert_eq!(
        writes,
        [
            &json!(["stream", ["pipeline", -2, ["write"], [0]]]),
            &json!(["stream", ["pipeline", -2, ["write"], [1]]]),
            &json!(["stream", ["pipeline", -2, ["close"], []]]),
        ],
        "{got:?}"
    );
    let close = got
        .iter()
        .position(|m| m[1][2] == json!(["close"]))
        .unwrap();
    let last_release = got.iter().rposition(|m| m[0] == "release").unwrap();
    assert!(
        close < last_release,
        "released before it was closed: {got:?}"
    );
    for id in peer.imports - 2..=peer.imports {
        peer.send(json!(["resolve", id, ["undefined"]]));
    }
    peer.send(json!(["release", first, 1]));
    peer.send(json!(["release", second, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn streams_are_refused_over_http_batch_with_the_reason() {
    let p = P::default();
    let (sums, mut summed_rx) = mpsc::unbounded_channel();
    *p.0.sums.lock().unwrap() = Some(sums);
    let builder = Connection::builder().root(PipesServer::new(p));
    let ask = |body: &'static str| {
        let builder = builder.clone();
        async move {
            let response =
                crate::capnweb::batch(&builder, body, crate::capnweb::BATCH_TIMEOUT).await;
            response
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .collect::<Vec<_>>()
        }
    };
    // A writable argument: the call is rejected, saying why, and the writable
    // given back.
    let got =
        ask("[\"push\",[\"pipeline\",0,[\"write_into\"],[1,[\"writable\",-1]]]]\n[\"pull\",1]")
            .await;
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    let reject = got.iter().find(|m| m[0] == "reject").expect("rejected");
    assert!(reject_text(reject).contains("HTTP batch"), "{reject}");
    // A readable argument likewise.
    let got =
        ask("[\"pipe\"]\n[\"push\",[\"pipeline\",0,[\"sum\"],[[\"readable\",1]]]]\n[\"pull\",2]")
            .await;
    let reject = got.iter().find(|m| m[0] == "reject").expect("rejected");
    assert!(reject_text(reject).contains("HTTP batch"), "{reject}");
    // A stream or a sender in a result: an error in its place, no pipe opened.
    for method in ["count", "collector"] {
        let body = if method == "count" {
            "[\"push\",[\"pipeline\",0,[\"count\"],[3]]]\n[\"pull\",1]"
        } else {
            "[\"push\",[\"pipeline\",0,[\"collector\"],[]]]\n[\"pull\",1]"
        };
        let got = ask(body).await;
        assert_eq!(got.len(), 1, "{method}: {got:?}");
        assert_eq!(got[0][0], "resolve", "{method}: {got:?}");
        assert_eq!(got[0][2][0], "error", "{method}: {got:?}");
        assert!(
            got[0][2][2].as_str().unwrap().contains("HTTP batch"),
            "{method}: {got:?}"
        );
    }
    // The collector's reader learns its writer never reached the page, rather
    // than taking an empty stream for a whole one.
    let why = summed(&mut summed_rx).await.unwrap_err();
    assert!(why.contains("never reached"), "{why}");
}

/// Receives until `done` holds of what came (at most `max` messages),
/// acknowledging each stream message as a page's writable does.
async fn acknowledging(peer: &mut Peer, max: usize, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < max && !done(&got) {
        let m = peer.recv().await;
        if m[0] == "stream" {
            let id = peer.imports;
            peer.send(json!(["resolve", id, ["undefined"]]));
        }
        got.push(m);
    }
    got
}

#[tokio::test]
async fn a_writable_where_a_stream_is_expected_is_refused_and_given_back() {
    let mut peer = peer();
    peer.send(call(0, "sum", json!([["writable", -1]])));
    peer.send(json!(["pull", 1]));
    // Nothing is written into it, nor closed: it is released without `close()`,
    // which aborts it on the page.
    let got = peer.recv_set(2).await;
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    assert!(got.iter().any(|m| m[0] == "reject" && m[1] == 1), "{got:?}");
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_promise_resolving_to_a_writable_is_written_once_it_settles() {
    let mut peer = peer();
    peer.send(call(0, "write_into", json!([2, ["promise", -1]])));
    peer.send(json!(["pull", 1]));
    peer.send(json!(["resolve", -1, ["writable", -2]]));
    let got = acknowledging(&mut peer, 12, |got| {
        got.contains(&json!(["resolve", 1, 2])) && got.contains(&json!(["release", -2, 1]))
    })
    .await;
    let writes: Vec<&Value> = got.iter().filter(|m| m[0] == "stream").collect();
    assert_eq!(
        writes,
        [
            &json!(["stream", ["pipeline", -2, ["write"], [0]]]),
            &json!(["stream", ["pipeline", -2, ["write"], [1]]]),
            &json!(["stream", ["pipeline", -2, ["close"], []]]),
        ],
        "{got:?}"
    );
    assert!(got.contains(&json!(["release", -1, 1])), "{got:?}");
    peer.send(json!(["release", 1, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_writable_handed_back_is_a_writable_of_ours_into_the_peers() {
    let mut peer = peer();
    peer.send(call(0, "bounce", json!([["writable", -1]])));
    peer.send(json!(["pull", 1]));
    let back = peer.recv().await;
    assert_eq!(back[2][0], "writable", "{back}");
    let ours = back[2][1].as_i64().unwrap();
    peer.send(json!(["release", 1, 1]));
    // What the peer writes into ours reaches its own, closed after.
    peer.send(write(ours, json!(5)));
    peer.send(write(ours, json!(7)));
    peer.send(json!(["stream", ["pipeline", ours, ["close"], []]]));
    let got = acknowledging(&mut peer, 12, |got| {
        got.contains(&json!(["release", -1, 1]))
    })
    .await;
    let writes: Vec<&Value> = got.iter().filter(|m| m[0] == "stream").collect();
    assert_eq!(
        writes,
        [
            &json!(["stream", ["pipeline", -1, ["write"], [5]]]),
            &json!(["stream", ["pipeline", -1, ["write"], [7]]]),
            &json!(["stream", ["pipeline", -1, ["close"], []]]),
        ],
        "{got:?}"
    );
    peer.send(json!(["release", ours, 1]));
    peer.assert_zero().await;
}

#[tokio::test]
async fn writables_written_into_a_pipe_are_senders_the_reader_writes_into() {
    let mut peer = peer();
    peer.send(json!(["pipe"]));
    peer.send(call(0, "fan", json!([["readable", 1], 9])));
    peer.send(json!(["pull", 2]));
    peer.send(write(1, json!(["writable", -1])));
    peer.send(write(1, json!(["writable", -2])));
    peer.send(json!(["stream", ["pipeline", 1, ["close"], []]]));
    peer.send(json!(["release", 1, 1]));
    let got = acknowledging(&mut peer, 20, |got| {
        got.contains(&json!(["resolve", 2, 2]))
            && got.contains(&json!(["release", -1, 1]))
            && got.contains(&json!(["release", -2, 1]))
    })
    .await;
    for w in [-1, -2] {
        let to_w: Vec<&Value> = got
            .iter()
            .filter(|m| m[0] == "stream" && m[1][1] == w)
            .collect();
        assert_eq!(
            to_w,
            [
                &json!(["stream", ["pipeline", w, ["write"], [9]]]),
                &json!(["stream", ["pipeline", w, ["close"], []]]),
            ],
            "{got:?}"
        );
    }
    peer.send(json!(["release", 2, 1]));
    peer.assert_zero().await;
}

/// A small deterministic generator (splitmix64), so a failing schedule is
/// reproduced from the seed it prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// How a page ends the writable a Rust collector gave it.
#[derive(Debug, Clone, Copy)]
enum PageEnd {
    Close,
    Abort,
    Release,
}

#[tokio::test]
async fn random_pages_writing_into_rust_collectors_against_a_model() {
    let base: u64 = std::env::var("FARCALL_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in base..base + 40 {
        let outcome = tokio::spawn(page_schedule(seed)).await;
        if let Err(e) = outcome {
            panic!("schedule {seed} failed (FARCALL_SEED_BASE={seed} reproduces it): {e}");
        }
    }
}

/// One schedule: a page asks for a few collectors, writes random numbers into
/// them interleaved, ends each one way or another (and sometimes writes after the
/// end), then checks what Rust summed against the model and that every table is
/// back at zero.
async fn page_schedule(seed: u64) {
    let mut rng = Rng(seed);
    let (mut peer, mut sums) = summing();
    let count = 1 + rng.below(3) as usize;
    let mut writables = Vec::new();
    for _ in 0..count {
        peer.send(call(0, "collector", json!([])));
        let id = peer.pushes;
        peer.send(json!(["pull", id]));
        let resolve = peer.recv().await;
        assert_eq!(resolve[0], "resolve", "seed {seed}: {resolve}");
        writables.push(resolve[2][1].as_i64().expect("a writable id"));
        peer.send(json!(["release", id, 1]));
    }
    // Per writable: the sum written so far, and whether it has ended.
    let mut sum = vec![0u64; count];
    let mut ended: Vec<Option<PageEnd>> = vec![None; count];
    let mut expected_replies = 0;
    for _ in 0..rng.below(40) {
        let k = rng.below(count as u64) as usize;
        match rng.below(10) {
            0 if ended[k].is_none() => {
                let end = [PageEnd::Close, PageEnd::Abort, PageEnd::Release][rng.below(3) as usize];
                ended[k] = Some(end);
                match end {
                    PageEnd::Close => {
                        peer.send(json!(["stream", ["pipeline", writables[k], ["close"], []]]));
                        expected_replies += 1;
                    }
                    PageEnd::Abort => {
                        let why = json!(["error", "Error", format!("seed {seed} gave up")]);
                        peer.send(json!([
                            "stream",
                            ["pipeline", writables[k], ["abort"], [why]]
                        ]));
                        expected_replies += 1;
                    }
                    PageEnd::Release => peer.send(json!(["release", writables[k], 1])),
                }
            }
            // A write after the end of a writable the page still holds is
            // refused; after its release it would name nothing, so not then.
            _ if matches!(ended[k], Some(PageEnd::Release)) => {}
            _ => {
                let n = rng.below(100);
                peer.send(write(writables[k], json!(n)));
                expected_replies += 1;
                if ended[k].is_none() {
                    sum[k] += n;
                }
            }
        }
    }
    // Every writable still open ends now, closed.
    for k in 0..count {
        if ended[k].is_none() {
            ended[k] = Some(PageEnd::Close);
            peer.send(json!(["stream", ["pipeline", writables[k], ["close"], []]]));
            expected_replies += 1;
        }
    }
    // Each stream message is answered (resolved, or rejected when refused).
    let replies = recv_n(&mut peer, expected_replies).await;
    assert!(
        replies
            .iter()
            .all(|m| m[0] == "resolve" || m[0] == "reject"),
        "seed {seed}: {replies:?}"
    );
    // What each Rust reader got: the sum of the writes before a close; a failure
    // saying why after an abort or a release without close. Readers finish in
    // any order, so compare as sets.
    let mut got = Vec::new();
    for _ in 0..count {
        got.push(summed(&mut sums).await);
    }
    let mut want_sums: Vec<u64> = (0..count)
        .filter(|&k| matches!(ended[k], Some(PageEnd::Close)))
        .map(|k| sum[k])
        .collect();
    let mut got_sums: Vec<u64> = got.iter().filter_map(|r| r.clone().ok()).collect();
    want_sums.sort_unstable();
    got_sums.sort_unstable();
    assert_eq!(got_sums, want_sums, "seed {seed}: {got:?}, ends {ended:?}");
    for why in got.iter().filter_map(|r| r.clone().err()) {
        assert!(
            why.contains("gave up") || why.contains("without closing"),
            "seed {seed}: {why}"
        );
    }
    for k in 0..count {
        if !matches!(ended[k], Some(PageEnd::Release)) {
            peer.send(json!(["release", writables[k], 1]));
        }
    }
    peer.assert_zero().await;
}

#[tokio::test]
async fn a_function_where_a_stream_or_a_writer_is_expected_is_not_called() {
    // A page passing a function (or any object of its own) where a
    // `ReadableStream` or a `WritableStream` belongs: the stream's calls have ids
    // of their own, so the translator refuses them instead of calling it.
    for (method, args) in [
        ("sum", json!([["export", -1]])),
        ("write_into", json!([2, ["export", -1]])),
    ] {
        let mut peer = peer();
        peer.send(call(0, method, args));
        peer.send(json!(["pull", 1]));
        let got = peer.recv_set(2).await;
        assert!(
            got.contains(&json!(["release", -1, 1])),
            "{method}: {got:?}"
        );
        assert!(
            got.iter().all(|m| m[0] != "push" && m[0] != "stream"),
            "{method}: the page's function was called: {got:?}"
        );
        let result = got.iter().find(|m| m[1] == 1).expect("the call ends");
        assert!(
            result[0] == "reject" || result[0] == "resolve",
            "{method}: {result}"
        );
        peer.send(json!(["release", 1, 1]));
        peer.assert_zero().await;
    }
}
