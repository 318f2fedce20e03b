//! Callbacks and capabilities: passed by reference in both directions, nested in data,
//! coming home, crossing three parties, released, revoked, and leak-free.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{bounded, connect, setups, Link};
use farcall::{CallError, Callback, Connection, RemoteClient, RpcError, Stats};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[farcall::remote]
pub trait Token {
    async fn name(&self) -> String;
}

struct NamedToken {
    name: String,
    drops: Arc<AtomicUsize>,
}

impl Token for NamedToken {
    async fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for NamedToken {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Capabilities nested in data.
#[derive(Serialize, Deserialize)]
pub struct Bag {
    pub callbacks: HashMap<String, Callback<u32, u32>>,
    pub tokens: Vec<TokenClient>,
    pub maybe: Option<TokenClient>,
}

#[farcall::remote]
pub trait Hub {
    /// Does nothing: a round trip to let releases arrive.
    async fn noop(&self);
    /// Calls `cb(x)` and returns its answer.
    async fn call_me(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String>;
    /// Calls a two-argument callback with an application error.
    async fn call_fallible(
        &self,
        cb: Callback<(u32, String), Result<u32, String>>,
        a: u32,
        s: String,
    ) -> String;
    /// Returns a closure adding `base`.
    async fn adder(&self, base: u32) -> Callback<u32, u32>;
    /// Sends `0..n` one-way through `cb`, then `n` as a call.
    async fn ping_many(&self, cb: Callback<u32>, n: u32) -> Result<(), String>;
    /// Keeps `cb`; returns how many distinct callbacks are kept.
    async fn keep(&self, cb: Callback<u32, u32>) -> usize;
    /// Forgets `cb`; returns whether it was kept.
    async fn forget(&self, cb: Callback<u32, u32>) -> bool;
    /// Drops every kept callback.
    async fn forget_all(&self);
    /// Calls every kept callback with `x`.
    async fn call_kept(&self, x: u32) -> Vec<Result<u32, String>>;
    /// One of the kept callbacks, if any.
    async fn fetch(&self) -> Option<Callback<u32, u32>>;
    /// Releases `cb` explicitly, then tries to call it.
    async fn release_then_call(&self, cb: Callback<u32, u32>) -> String;
    /// The hub's own token (the same object every time).
    async fn token(&self) -> TokenClient;
    /// Whether `t` is the hub's own token, arriving as the local object.
    async fn is_my_token(&self, t: TokenClient) -> bool;
    /// Returns `t` as received.
    async fn echo(&self, t: TokenClient) -> TokenClient;
    /// A new token object; its drop is counted.
    async fn child(&self, name: String) -> TokenClient;
    /// Calls into everything in the bag and returns it.
    async fn open_bag(&self, bag: Bag) -> Result<(Vec<String>, Bag), String>;
}

#[derive(Clone)]
struct HubImpl(Arc<HubState>);

struct HubState {
    kept: Mutex<HashSet<Callback<u32, u32>>>,
    token: TokenClient,
    drops: Arc<AtomicUsize>,
}

impl HubImpl {
    fn new() -> Self {
        let drops = Arc::new(AtomicUsize::new(0));
        let token = TokenClient::from_local(NamedToken {
            name: "hub".into(),
            drops: drops.clone(),
        });
        HubImpl(Arc::new(HubState {
            kept: Mutex::new(HashSet::new()),
            token,
            drops,
        }))
    }
}

impl Hub for HubImpl {
    async fn noop(&self) {}
    async fn call_me(&self, cb: Callback<u32, u32>, x: u32) -> Result<u32, String> {
        cb.call(x).await.map_err(|e| e.to_string())
    }
    async fn call_fallible(
        &self,
        cb: Callback<(u32, String), Result<u32, String>>,
        a: u32,
        s: String,
    ) -> String {
        match cb.try_call((a, s)).await {
            Ok(v) => format!("ok {v}"),
            Err(CallError::App(e)) => format!("app {e}"),
            Err(CallError::Rpc(e)) => format!("rpc {e}"),
        }
    }
    async fn adder(&self, base: u32) -> Callback<u32, u32> {
        Callback::new(move |x: u32| async move { base + x })
    }
    async fn ping_many(&self, cb: Callback<u32>, n: u32) -> Result<(), String> {
        for i in 0..n {
            cb.send(&i).map_err(|e| e.to_string())?;
        }
        cb.call(n).await.map_err(|e| e.to_string())
    }
    async fn keep(&self, cb: Callback<u32, u32>) -> usize {
        let mut kept = self.0.kept.lock().unwrap();
        kept.insert(cb);
        kept.len()
    }
    async fn forget(&self, cb: Callback<u32, u32>) -> bool {
        self.0.kept.lock().unwrap().remove(&cb)
    }
    async fn forget_all(&self) {
        self.0.kept.lock().unwrap().clear();
    }
    async fn call_kept(&self, x: u32) -> Vec<Result<u32, String>> {
        let kept: Vec<_> = self.0.kept.lock().unwrap().iter().cloned().collect();
        let mut results = Vec::new();
        for cb in kept {
            results.push(cb.call(x).await.map_err(|e| e.to_string()));
        }
        results
    }
    async fn fetch(&self) -> Option<Callback<u32, u32>> {
        self.0.kept.lock().unwrap().iter().next().cloned()
    }
    async fn release_then_call(&self, cb: Callback<u32, u32>) -> String {
        cb.release();
        match cb.call(1).await {
            Ok(v) => format!("unexpected {v}"),
            Err(e) => format!("{e:?}"),
        }
    }
    async fn token(&self) -> TokenClient {
        self.0.token.clone()
    }
    async fn is_my_token(&self, t: TokenClient) -> bool {
        t.client().is_local() && t == self.0.token
    }
    async fn echo(&self, t: TokenClient) -> TokenClient {
        t
    }
    async fn child(&self, name: String) -> TokenClient {
        TokenClient::from_local(NamedToken {
            name,
            drops: self.0.drops.clone(),
        })
    }
    async fn open_bag(&self, bag: Bag) -> Result<(Vec<String>, Bag), String> {
        let mut seen = Vec::new();
        let mut keys: Vec<_> = bag.callbacks.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let v = bag.callbacks[&key]
                .call(1)
                .await
                .map_err(|e| e.to_string())?;
            seen.push(format!("{key}={v}"));
        }
        for t in bag.tokens.iter().chain(bag.maybe.iter()) {
            seen.push(t.name().await.map_err(|e| e.to_string())?);
        }
        Ok((seen, bag))
    }
}

struct Setup {
    server: Connection,
    client: Connection,
    hub: HubClient,
    state: Arc<HubState>,
}

async fn setup(link: Link, codec: farcall::AnyCodec) -> Setup {
    let imp = HubImpl::new();
    let state = imp.0.clone();
    let (server, client) = connect(
        link,
        codec,
        Connection::builder().root(HubServer::new(imp)),
        Connection::builder(),
    )
    .await;
    let hub = client.root().await.unwrap();
    Setup {
        server,
        client,
        hub,
        state,
    }
}

/// Waits (a bounded number of round trips) until both sides' tables are as expected:
/// releases travel one way after the call that caused them.
async fn settle(s: &Setup, client: Stats, server: Stats) {
    for _ in 0..100 {
        let (c, v) = (
            s.client.stats().await.unwrap(),
            s.server.stats().await.unwrap(),
        );
        if (c, v) == (client, server) {
            return;
        }
        s.hub
            .forget(Callback::new(|x: u32| async move { x }))
            .await
            .unwrap();
    }
    panic!(
        "tables did not settle: client {:?} server {:?}",
        s.client.stats().await.unwrap(),
        s.server.stats().await.unwrap()
    );
}

fn stats(exports: usize, imports: usize) -> Stats {
    let mut s = Stats::default();
    s.exports = exports;
    s.imports = imports;
    s
}

#[tokio::test]
async fn callbacks_run_where_they_were_created() {
    for (codec, link) in setups() {
        bounded("callback argument", async {
            let s = setup(link, codec).await;
            let calls = Arc::new(AtomicUsize::new(0));
            let counter = calls.clone();
            let cb = Callback::new(move |x: u32| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    x * 10
                }
            });
            assert_eq!(s.hub.call_me(cb.clone(), 4).await, Ok(40));
            assert_eq!(s.hub.call_me(cb, 5).await, Ok(50));
            assert_eq!(
                calls.load(Ordering::SeqCst),
                2,
                "the closure ran here, on the client"
            );

            let fallible = Callback::new(|(a, s): (u32, String)| async move {
                if s == "bad" {
                    Err(format!("refused {a}"))
                } else {
                    Ok(a + s.len() as u32)
                }
            });
            assert_eq!(
                s.hub
                    .call_fallible(fallible.clone(), 1, "abc".into())
                    .await
                    .unwrap(),
                "ok 4"
            );
            assert_eq!(
                s.hub
                    .call_fallible(fallible, 7, "bad".into())
                    .await
                    .unwrap(),
                "app refused 7"
            );
        })
        .await;
    }
}

#[tokio::test]
async fn a_method_can_return_a_closure() {
    for (codec, link) in setups() {
        bounded("returned closure", async {
            let s = setup(link, codec).await;
            let add_ten = s.hub.adder(10).await.unwrap();
            assert!(!add_ten.client().is_local());
            assert_eq!(add_ten.call(5).await.unwrap(), 15);
            assert_eq!(add_ten.call(6).await.unwrap(), 16);
        })
        .await;
    }
}

#[tokio::test]
async fn calls_through_one_callback_arrive_in_order() {
    for (codec, link) in setups() {
        bounded("callback order", async {
            let s = setup(link, codec).await;
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let cb = Callback::new(move |x: u32| {
                log.lock().unwrap().push(x);
                async {}
            });
            s.hub.ping_many(cb, 200).await.unwrap();
            assert_eq!(*seen.lock().unwrap(), (0..=200).collect::<Vec<_>>());
        })
        .await;
    }
}

#[tokio::test]
async fn capabilities_travel_nested_in_data() {
    for (codec, link) in setups() {
        bounded("nested caps", async {
            let s = setup(link, codec).await;
            let mine = TokenClient::from_local(NamedToken {
                name: "client-token".into(),
                drops: Arc::new(AtomicUsize::new(0)),
            });
            let theirs = s.hub.child("hub-child".into()).await.unwrap();
            let bag = Bag {
                callbacks: HashMap::from([
                    (
                        "double".to_string(),
                        Callback::new(|x: u32| async move { x * 2 }),
                    ),
                    (
                        "triple".to_string(),
                        Callback::new(|x: u32| async move { x * 3 }),
                    ),
                ]),
                tokens: vec![mine.clone(), theirs.clone()],
                maybe: Some(mine.clone()),
            };
            let (seen, back) = s.hub.open_bag(bag).await.unwrap();
            assert_eq!(
                seen,
                [
                    "double=2",
                    "triple=3",
                    "client-token",
                    "hub-child",
                    "client-token"
                ]
            );
            // Everything comes back as what it was: ours local, theirs remote.
            assert_eq!(back.tokens[0], mine);
            assert!(back.tokens[0].client().is_local());
            assert_eq!(back.tokens[1], theirs);
            assert_eq!(back.maybe.as_ref(), Some(&mine));
            assert_eq!(back.callbacks["double"].call(21).await.unwrap(), 42);
        })
        .await;
    }
}

#[tokio::test]
async fn a_local_implementation_behaves_like_a_remote_one() {
    let drops = Arc::new(AtomicUsize::new(0));
    let local = TokenClient::from_local(NamedToken {
        name: "here".into(),
        drops: drops.clone(),
    });
    assert!(local.client().is_local());
    assert!(local.client().connection().is_none());
    assert_eq!(bounded("local call", local.name()).await.unwrap(), "here");
    let cb = Callback::new(|(a, b): (u32, u32)| async move { a * b });
    assert_eq!(
        bounded("local callback", cb.call((6, 7))).await.unwrap(),
        42
    );
    drop(local);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the last handle frees the object"
    );
}

#[tokio::test]
async fn a_capability_coming_home_is_the_original_object() {
    for (codec, link) in setups() {
        bounded("coming home", async {
            let s = setup(link, codec).await;
            // The hub's object, given to the client and passed back: the hub sees its own.
            let token = s.hub.token().await.unwrap();
            assert!(!token.client().is_local());
            assert!(s.hub.is_my_token(token.clone()).await.unwrap());
            // Another of its objects is not mistaken for it.
            let other = s.hub.child("other".into()).await.unwrap();
            assert!(!s.hub.is_my_token(other).await.unwrap());
            // The client's object, sent to the hub and returned: the client gets its own
            // local object back, and calling it does not cross the wire.
            let mine = TokenClient::from_local(NamedToken {
                name: "mine".into(),
                drops: Arc::new(AtomicUsize::new(0)),
            });
            let back = s.hub.echo(mine.clone()).await.unwrap();
            assert_eq!(back, mine);
            assert!(back.client().is_local() && back.client().connection().is_none());
            s.server.abort().await;
            assert_eq!(
                back.name().await.unwrap(),
                "mine",
                "works with the connection gone"
            );
        })
        .await;
    }
}

#[tokio::test]
async fn three_parties_a_callback_and_an_object_pass_through_the_host() {
    for (codec, link) in setups() {
        bounded("three parties", async {
            let hub = HubImpl::new();
            let builder = Connection::builder().root(HubServer::new(hub.clone()));
            let (_ha, a) = connect(link, codec, builder.clone(), Connection::builder()).await;
            let (_hb, b) = connect(link, codec, builder, Connection::builder()).await;
            let hub_a: HubClient = a.root().await.unwrap();
            let hub_b: HubClient = b.root().await.unwrap();

            // A hands the host a callback; B fetches it and calls it; A's closure runs.
            let (ran_tx, mut ran_rx) = mpsc::unbounded_channel();
            let cb_a = Callback::new(move |x: u32| {
                let _ = ran_tx.send(x);
                async move { x + 1000 }
            });
            assert_eq!(hub_a.keep(cb_a).await.unwrap(), 1);
            let via_host = hub_b.fetch().await.unwrap().expect("kept");
            assert_eq!(via_host.call(7).await.unwrap(), 1007);
            assert_eq!(ran_rx.recv().await, Some(7), "A's closure ran");

            // An object the host gave A, passed by A back to the host, is the host's own.
            let token = hub_a.token().await.unwrap();
            assert!(hub_a.is_my_token(token.clone()).await.unwrap());
            // And B passing the host its own object is recognised too.
            let token_b = hub_b.token().await.unwrap();
            assert!(hub_b.is_my_token(token_b).await.unwrap());
        })
        .await;
    }
}

#[tokio::test]
async fn the_same_callback_twice_is_one_identity() {
    for (codec, link) in setups() {
        bounded("identity", async {
            let s = setup(link, codec).await;
            let cb = Callback::new(|x: u32| async move { x });
            let other = Callback::new(|x: u32| async move { x });
            assert_eq!(s.hub.keep(cb.clone()).await.unwrap(), 1);
            assert_eq!(
                s.hub.keep(cb.clone()).await.unwrap(),
                1,
                "same identity, one entry"
            );
            assert_eq!(s.hub.keep(other.clone()).await.unwrap(), 2);
            assert!(
                s.hub.forget(cb.clone()).await.unwrap(),
                "removed by identity"
            );
            assert!(!s.hub.forget(cb).await.unwrap());
            assert!(s.hub.forget(other).await.unwrap());
            // Received twice, the handles compare and hash equal.
            let t1 = s.hub.token().await.unwrap();
            let t2 = s.hub.token().await.unwrap();
            assert_eq!(t1, t2);
            assert_eq!(HashSet::from([t1.clone(), t2]).len(), 1);
        })
        .await;
    }
}

#[tokio::test]
async fn dropping_the_last_handle_releases_the_export() {
    for (codec, link) in setups() {
        bounded("release on drop", async {
            let s = setup(link, codec).await;
            let cb = Callback::new(|x: u32| async move { x });
            s.hub.keep(cb.clone()).await.unwrap();
            s.hub.keep(cb.clone()).await.unwrap();
            // The client exports the callback once; the hub imports it once.
            settle(&s, stats(1, 0), stats(0, 1)).await;
            s.hub.forget_all().await.unwrap();
            // The client still holds the hub's root import only.
            settle(&s, stats(0, 0), stats(0, 0)).await;
            drop(cb);
            let token = s.hub.token().await.unwrap();
            settle(&s, stats(0, 1), stats(1, 0)).await;
            drop(token);
            settle(&s, stats(0, 0), stats(0, 0)).await;
        })
        .await;
    }
}

#[tokio::test]
async fn an_explicitly_released_handle_fails_clearly() {
    for (codec, link) in setups() {
        bounded("explicit release", async {
            let s = setup(link, codec).await;
            let cb = Callback::new(|x: u32| async move { x });
            let outcome = s.hub.release_then_call(cb).await.unwrap();
            assert_eq!(outcome, "Released");
            settle(&s, stats(0, 0), stats(0, 0)).await;
            // On the client side too.
            let token = s.hub.token().await.unwrap();
            let clone = token.clone();
            token.release();
            assert_eq!(clone.name().await, Err(RpcError::Released));
            assert!(clone.is_closed());
        })
        .await;
    }
}

#[tokio::test]
async fn the_owner_can_revoke_what_it_handed_out() {
    for (codec, link) in setups() {
        bounded("revoke", async {
            let s = setup(link, codec).await;
            let cb = Callback::new(|x: u32| async move { x });
            s.hub.keep(cb.clone()).await.unwrap();
            assert_eq!(s.hub.call_kept(3).await.unwrap(), vec![Ok(3)]);
            cb.revoke();
            let results = s.hub.call_kept(3).await.unwrap();
            assert_eq!(results.len(), 1);
            assert!(
                results[0].as_ref().unwrap_err().contains("revoked"),
                "{results:?}"
            );
            assert_eq!(cb.call(1).await, Err(RpcError::Revoked));
        })
        .await;
    }
}

#[tokio::test]
async fn a_server_learns_that_a_callback_died_with_its_connection() {
    let hub = HubImpl::new();
    let state = hub.0.clone();
    let (_server, client) = connect(
        Link::Memory,
        Default::default(),
        Connection::builder().root(HubServer::new(hub)),
        Connection::builder(),
    )
    .await;
    let hub_client: HubClient = client.root().await.unwrap();
    hub_client
        .keep(Callback::new(|x: u32| async move { x }))
        .await
        .unwrap();
    let held = state.kept.lock().unwrap().iter().next().cloned().unwrap();
    assert!(!held.is_closed());
    client.abort().await;
    bounded("callback closed", held.closed()).await;
    assert!(held.is_closed());
    assert!(bounded("call fails", held.call(1))
        .await
        .unwrap_err()
        .is_disconnected());
}

#[tokio::test]
async fn closing_a_connection_drops_its_exports_and_breaks_its_imports() {
    for (codec, link) in setups() {
        bounded("close drops exports", async {
            let s = setup(link, codec).await;
            let children: Vec<TokenClient> =
                futures_util::future::join_all((0..5).map(|i| s.hub.child(format!("c{i}"))))
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
            assert_eq!(s.state.drops.load(Ordering::SeqCst), 0);
            s.client.abort().await;
            s.server.closed().await;
            assert_eq!(
                s.state.drops.load(Ordering::SeqCst),
                5,
                "each exported child dropped"
            );
            for child in &children {
                assert!(child.is_closed());
                assert!(child.name().await.unwrap_err().is_disconnected());
            }
        })
        .await;
    }
}

#[tokio::test]
async fn releases_racing_new_references_never_free_a_live_export() {
    for (codec, link) in setups() {
        bounded("release race", async {
            let s = setup(link, codec).await;
            // Fetch the same object many times concurrently, dropping each handle at
            // once: releases and new references cross on the wire.
            let tasks: Vec<_> = (0..500)
                .map(|_| {
                    let hub = s.hub.clone();
                    tokio::spawn(async move { hub.token().await.map(drop) })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let kept = s.hub.token().await.unwrap();
            assert_eq!(kept.name().await.unwrap(), "hub");
            drop(kept);
            settle(&s, stats(0, 0), stats(0, 0)).await;
            assert!(!s.server.is_closed() && !s.client.is_closed());
        })
        .await;
    }
}

fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

#[tokio::test]
async fn a_hundred_thousand_fresh_callbacks_leave_no_trace() {
    let s = setup(Link::Memory, Default::default()).await;
    let mut rss = Vec::new();
    for round in 0..10u32 {
        for i in 0..10_000u32 {
            let cb = Callback::new(move |x: u32| async move { x + i });
            let got = bounded("leak call", s.hub.call_me(cb, round))
                .await
                .unwrap();
            assert_eq!(got, round + i);
        }
        rss.push(rss_kib());
    }
    bounded("settle", settle(&s, stats(0, 0), stats(0, 0))).await;
    // The hub's root, still held, is not counted.
    assert_eq!(s.client.stats().await.unwrap(), Stats::default());
    assert_eq!(s.server.stats().await.unwrap(), Stats::default());
    eprintln!("RSS (KiB) after each 10,000 calls: {rss:?}");
}

#[farcall::remote]
pub trait Feed {
    async fn subscribe(&self, on_event: Callback<String>) -> bool;
    async fn unsubscribe(&self, on_event: Callback<String>) -> bool;
    async fn publish(&self, text: String) -> usize;
}

struct FeedImpl(Arc<farcall::Listeners<String>>);

impl Feed for FeedImpl {
    async fn subscribe(&self, on_event: Callback<String>) -> bool {
        self.0.add(on_event)
    }
    async fn unsubscribe(&self, on_event: Callback<String>) -> bool {
        self.0.remove(&on_event)
    }
    async fn publish(&self, text: String) -> usize {
        self.0.emit(&text)
    }
}

#[tokio::test]
async fn listeners_forget_the_handlers_of_a_client_that_left() {
    bounded("listeners", async {
        let listeners = Arc::new(farcall::Listeners::<String>::new());
        let server_builder =
            Connection::builder().root(FeedServer::new(FeedImpl(listeners.clone())));
        let mut clients = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..3 {
            let (server, client) = connect(
                Link::Memory,
                Default::default(),
                server_builder.clone(),
                Connection::builder(),
            )
            .await;
            let feed: FeedClient = client.root().await.unwrap();
            let (tx, rx) = mpsc::unbounded_channel();
            let cb = Callback::new(move |text: String| {
                let _ = tx.send(text);
                async {}
            });
            assert!(feed.subscribe(cb.clone()).await.unwrap());
            assert!(
                !feed.subscribe(cb.clone()).await.unwrap(),
                "registered once"
            );
            clients.push((server, client, feed, cb));
            inboxes.push(rx);
        }
        assert_eq!(listeners.len(), 3);
        assert_eq!(clients[0].2.publish("hello".into()).await.unwrap(), 3);
        for inbox in &mut inboxes {
            assert_eq!(inbox.recv().await.as_deref(), Some("hello"));
        }
        // One unsubscribes by identity, one disconnects.
        let (_, _, feed0, cb0) = &clients[0];
        assert!(feed0.unsubscribe(cb0.clone()).await.unwrap());
        let (server1, client1, _, _) = &clients[1];
        client1.abort().await;
        server1.closed().await;
        assert_eq!(listeners.len(), 1, "the departed client's handler is gone");
        assert_eq!(clients[2].2.publish("again".into()).await.unwrap(), 1);
        assert_eq!(inboxes[2].recv().await.as_deref(), Some("again"));
        assert!(inboxes[0].try_recv().is_err());
    })
    .await;
}

#[tokio::test]
async fn exported_callbacks_keep_an_unused_connection_open_until_released() {
    bounded("exports keep it open", async {
        let hub = HubImpl::new();
        let state = hub.0.clone();
        let (server, client) = connect(
            Link::Memory,
            Default::default(),
            Connection::builder().root(HubServer::new(hub)),
            Connection::builder(),
        )
        .await;
        let hub_client: HubClient = client.root().await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        hub_client
            .keep(Callback::new(move |x: u32| {
                let _ = tx.send(x);
                async move { x }
            }))
            .await
            .unwrap();
        drop((client, hub_client));
        // The hub still holds our callback: the connection must stay usable for it.
        let held = state.kept.lock().unwrap().iter().next().cloned().unwrap();
        assert_eq!(held.call(7).await, Ok(7));
        assert_eq!(rx.recv().await, Some(7));
        assert!(!server.is_closed());
        // Once the hub lets go, nothing uses the client's side any more.
        drop(held);
        state.kept.lock().unwrap().clear();
        server.closed().await;
    })
    .await;
}

#[farcall::remote]
pub trait Board {
    /// Keeps `cb` (as the last subscriber) and adds it to the listeners.
    async fn subscribe(&self, cb: Callback<u32>) -> usize;
    /// The last subscriber, handed on.
    async fn last(&self) -> Option<Callback<u32>>;
}

#[derive(Default)]
struct BoardState {
    listeners: farcall::Listeners<u32>,
    last: Mutex<Option<Callback<u32>>>,
}

#[derive(Clone, Default)]
struct BoardImpl(Arc<BoardState>);

impl Board for BoardImpl {
    async fn subscribe(&self, cb: Callback<u32>) -> usize {
        *self.0.last.lock().unwrap() = Some(cb.clone());
        self.0.listeners.add(cb);
        self.0.listeners.len()
    }
    async fn last(&self) -> Option<Callback<u32>> {
        self.0.last.lock().unwrap().clone()
    }
}

/// One board served to two clients over delayed memory links (5 ms each way).
async fn board() -> (Arc<BoardState>, BoardClient, BoardClient, Vec<Connection>) {
    let imp = BoardImpl::default();
    let state = imp.0.clone();
    let builder = Connection::builder().root(BoardServer::new(imp));
    let mut conns = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (a, b) = farcall::transport::memory();
        let delay = std::time::Duration::from_millis(5);
        conns.push(builder.connect(farcall::transport::delayed(a, delay)));
        let client = Connection::builder().connect(farcall::transport::delayed(b, delay));
        clients.push(client.root().await.unwrap());
        conns.push(client);
    }
    let second = clients.pop().unwrap();
    (state, clients.pop().unwrap(), second, conns)
}

#[tokio::test(start_paused = true)]
async fn a_revocation_reaches_every_holder_without_a_call() {
    let (state, first, second, _conns) = board().await;
    let cb = Callback::new(|_: u32| async {});
    assert_eq!(first.subscribe(cb.clone()).await.unwrap(), 1);
    // The server's handle, and one passed on to a third party.
    let held = state.last.lock().unwrap().clone().unwrap();
    let passed = second.last().await.unwrap().unwrap();
    assert!(!held.is_closed() && !passed.is_closed());
    assert_eq!(state.listeners.emit(&1), 1);

    cb.revoke();
    bounded("the server's handle sees it", held.closed()).await;
    bounded("the third party's handle sees it", passed.closed()).await;
    assert!(held.is_closed() && passed.is_closed());
    // Calls fail at once, without a round trip.
    let started = tokio::time::Instant::now();
    assert_eq!(held.call(1).await, Err(RpcError::Revoked));
    assert_eq!(passed.call(1).await, Err(RpcError::Revoked));
    assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    // Listeners forget it on every path.
    assert_eq!(state.listeners.len(), 0);
    assert_eq!(state.listeners.emit(&2), 0);
}

#[tokio::test(start_paused = true)]
async fn an_object_revoked_before_it_is_handed_out_arrives_closed() {
    let (state, first, _second, _conns) = board().await;
    let cb = Callback::new(|_: u32| async {});
    cb.revoke();
    first.subscribe(cb.clone()).await.unwrap();
    let held = state.last.lock().unwrap().clone().unwrap();
    bounded("closed", held.closed()).await;
    assert_eq!(held.call(1).await, Err(RpcError::Revoked));
    assert!(state.listeners.is_empty());
}

#[farcall::remote]
pub trait Caller {
    /// Calls `cb(x)` within `ms` milliseconds and says how it ended.
    async fn call_within(&self, cb: Callback<u32, u32>, x: u32, ms: u64) -> String;
    /// The same through `try_call`, for a callback with an application error.
    async fn try_within(&self, cb: Callback<u32, Result<u32, String>>, x: u32, ms: u64) -> String;
}

struct CallerImpl;

impl Caller for CallerImpl {
    async fn call_within(&self, cb: Callback<u32, u32>, x: u32, ms: u64) -> String {
        let call = cb.call(x).timeout(std::time::Duration::from_millis(ms));
        match call.await {
            Ok(v) => format!("ok {v}"),
            Err(RpcError::Timeout) => "timeout".into(),
            Err(e) => format!("rpc {e}"),
        }
    }
    async fn try_within(&self, cb: Callback<u32, Result<u32, String>>, x: u32, ms: u64) -> String {
        let call = cb.try_call(x).timeout(std::time::Duration::from_millis(ms));
        match call.await {
            Ok(v) => format!("ok {v}"),
            Err(CallError::App(e)) => format!("app {e}"),
            Err(CallError::Rpc(RpcError::Timeout)) => "timeout".into(),
            Err(CallError::Rpc(e)) => format!("rpc {e}"),
        }
    }
}

/// Counts drops of the closure's in-flight futures.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `Callback::call` and `try_call` return promises: a time limit works on them as on
/// methods, and the callee's handler is stopped when it passes.
#[tokio::test(start_paused = true)]
async fn callback_calls_take_a_time_limit_and_stop_the_callee() {
    for (codec, link) in setups() {
        let (_server, client) = connect(
            link,
            codec,
            Connection::builder().root(CallerServer::new(CallerImpl)),
            Connection::builder(),
        )
        .await;
        let caller: CallerClient = bounded("root", client.root()).await.unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let slow = {
            let dropped = dropped.clone();
            Callback::new(move |x: u32| {
                let guard = Guard(dropped.clone());
                async move {
                    let _guard = guard;
                    if x == 0 {
                        std::future::pending::<()>().await;
                    }
                    x * 2
                }
            })
        };
        let ended = bounded("call", caller.call_within(slow.clone(), 0, 20)).await;
        assert_eq!(ended.unwrap(), "timeout", "{codec:?} {link:?}");
        bounded("the callee's handler is dropped", async {
            while dropped.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await;
        let ended = bounded("call", caller.call_within(slow, 21, 1000)).await;
        assert_eq!(ended.unwrap(), "ok 42");

        let fallible = Callback::new(|x: u32| async move {
            if x == 0 {
                std::future::pending::<()>().await;
            }
            if x % 2 == 1 {
                Err(format!("{x} is odd"))
            } else {
                Ok(x / 2)
            }
        });
        let ended = bounded("try", caller.try_within(fallible.clone(), 0, 20)).await;
        assert_eq!(ended.unwrap(), "timeout");
        let ended = bounded("try", caller.try_within(fallible.clone(), 3, 1000)).await;
        assert_eq!(ended.unwrap(), "app 3 is odd");
        let ended = bounded("try", caller.try_within(fallible, 8, 1000)).await;
        assert_eq!(ended.unwrap(), "ok 4");
    }
}
