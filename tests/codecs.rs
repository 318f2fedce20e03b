//! Ends with different codecs: forwarding between connections that use different
//! codecs (every pair, both directions, objects and callbacks, pipelined calls) and
//! pipelining through a local promise onto a remote object under each codec.

mod common;

use std::sync::{Arc, Mutex};

use common::bounded;
use farcall::{AnyCodec, CallError, Callback, Connection};

#[farcall::remote]
pub trait Token {
    /// `owner:tag:n`, or an application error when `n` is 0.
    async fn describe(&self, tag: String, n: u64) -> Result<String, String>;
    /// A child token, after an await.
    async fn child(&self, name: String) -> TokenClient;
}

struct Named(String);

impl Token for Named {
    async fn describe(&self, tag: String, n: u64) -> Result<String, String> {
        if n == 0 {
            return Err(format!("{} refuses {tag}", self.0));
        }
        Ok(format!("{}:{tag}:{n}", self.0))
    }
    async fn child(&self, name: String) -> TokenClient {
        tokio::task::yield_now().await;
        TokenClient::from_local(Named(format!("{}/{name}", self.0)))
    }
}

type Greeter = Callback<(String, u32), String>;

/// Keeps what one party hands it, for another party to fetch.
#[farcall::remote]
pub trait Relay {
    async fn put(&self, token: TokenClient, greeter: Greeter);
    async fn token(&self) -> Option<TokenClient>;
    async fn greeter(&self) -> Option<Greeter>;
}

#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Option<(TokenClient, Greeter)>>>);

impl Relay for Kept {
    async fn put(&self, token: TokenClient, greeter: Greeter) {
        *self.0.lock().unwrap() = Some((token, greeter));
    }
    async fn token(&self) -> Option<TokenClient> {
        self.0.lock().unwrap().as_ref().map(|(t, _)| t.clone())
    }
    async fn greeter(&self) -> Option<Greeter> {
        self.0.lock().unwrap().as_ref().map(|(_, g)| g.clone())
    }
}

/// A client of the hub over a memory link with `codec`.
async fn join(hub: &farcall::Builder, codec: AnyCodec) -> (RelayClient, Connection) {
    let (a, b) = farcall::transport::memory();
    let _server = hub.clone().codec(codec).connect(a);
    let conn = Connection::builder().codec(codec).connect(b);
    (conn.root().await.unwrap(), conn)
}

fn greeter(owner: &'static str) -> Greeter {
    Callback::new(move |(name, n): (String, u32)| async move {
        tokio::task::yield_now().await;
        format!("{owner} greets {name} x{n}")
    })
}

/// `from` hands its token and greeter to the hub; `to` uses them through it.
async fn check_forwarding(from: &RelayClient, to: &RelayClient, owner: &'static str, what: &str) {
    from.put(TokenClient::from_local(Named(owner.into())), greeter(owner))
        .await
        .unwrap();
    let token = to.token().await.unwrap().unwrap();
    assert_eq!(
        token.describe("t".into(), 3).await,
        Ok(format!("{owner}:t:3")),
        "{what}"
    );
    assert_eq!(
        token.describe("t".into(), 0).await,
        Err(CallError::App(format!("{owner} refuses t"))),
        "{what}: an application error crosses too"
    );
    // Pipelined through the hub, onto an object made after an await.
    let pipelined = token
        .child("c".into())
        .child("d".into())
        .describe("p".into(), 1);
    assert_eq!(pipelined.await, Ok(format!("{owner}/c/d:p:1")), "{what}");
    let greet = to.greeter().await.unwrap().unwrap();
    assert_eq!(
        greet.call(("you".into(), 2)).await,
        Ok(format!("{owner} greets you x2")),
        "{what}"
    );
}

#[tokio::test]
async fn forwarding_works_between_every_pair_of_codecs_both_ways() {
    for &a in AnyCodec::ALL {
        for &b in AnyCodec::ALL {
            let what = format!("{a:?} <-> hub <-> {b:?}");
            bounded(&what.clone(), async {
                let hub = Connection::builder().root(RelayServer::new(Kept::default()));
                let (ra, _ca) = join(&hub, a).await;
                let (rb, _cb) = join(&hub, b).await;
                check_forwarding(&ra, &rb, "alice", &what).await;
                check_forwarding(&rb, &ra, "bob", &what).await;
            })
            .await;
        }
    }
}

/// A local object whose method returns, after an await, a remote token.
#[farcall::remote]
pub trait Finder {
    async fn find(&self) -> TokenClient;
}

struct Finds(TokenClient);

impl Finder for Finds {
    async fn find(&self) -> TokenClient {
        tokio::task::yield_now().await;
        self.0.clone()
    }
}

#[tokio::test]
async fn pipelining_through_a_local_promise_onto_a_remote_object_under_every_codec() {
    for &codec in AnyCodec::ALL {
        bounded("local promise", async {
            let (a, b) = farcall::transport::memory();
            let _server = Connection::builder()
                .codec(codec)
                .root(TokenServer::new(Named("remote".into())))
                .connect(a);
            let conn = Connection::builder().codec(codec).connect(b);
            let remote: TokenClient = conn.root().await.unwrap();
            let local = FinderClient::from_local(Finds(remote));
            let got = local.find().describe("x".into(), 7).await;
            assert_eq!(got, Ok("remote:x:7".to_string()), "{codec:?}");
            let got = local.find().child("k".into()).describe("y".into(), 1).await;
            assert_eq!(got, Ok("remote/k:y:1".to_string()), "{codec:?}");
            let failed = local.find().describe("z".into(), 0).await;
            assert_eq!(failed, Err(CallError::App("remote refuses z".into())));
        })
        .await;
    }
}
