//! Shared fixtures: test interfaces, their implementations, and connected pairs over
//! every codec and link.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farcall::{AnyCodec, Builder, CallContext, Connection, RpcError};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Fails the test instead of hanging it.
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Waits until both ends' tables are empty (releases travel one way, so this
/// polls their stats, bounded).
pub async fn tables_return_to_zero(a: &Connection, b: &Connection) {
    bounded("tables return to zero", async {
        loop {
            let (sa, sb) = (a.stats().await.unwrap(), b.stats().await.unwrap());
            if sa.is_zero() && sb.is_zero() {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// How the two endpoints are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Memory,
    Tcp,
    #[cfg(unix)]
    Unix,
}

pub const LINKS: &[Link] = &[
    Link::Memory,
    Link::Tcp,
    #[cfg(unix)]
    Link::Unix,
];

/// Every (codec, link) combination the suite runs under.
pub fn setups() -> Vec<(AnyCodec, Link)> {
    let mut all = Vec::new();
    for &codec in AnyCodec::ALL {
        for &link in LINKS {
            all.push((codec, link));
        }
    }
    all
}

/// Connects `a` and `b` over `link`; both get `codec`.
pub async fn connect(
    link: Link,
    codec: AnyCodec,
    a: Builder,
    b: Builder,
) -> (Connection, Connection) {
    let (a, b) = (a.codec(codec), b.codec(codec));
    match link {
        Link::Memory => {
            let (ta, tb) = farcall::transport::memory();
            (a.connect(ta), b.connect(tb))
        }
        Link::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (accepted, connected) = tokio::join!(listener.accept(), b.connect_tcp(addr));
            let (stream, _) = accepted.unwrap();
            stream.set_nodelay(true).unwrap();
            (a.connect_stream(stream), connected.unwrap())
        }
        #[cfg(unix)]
        Link::Unix => {
            let dir = std::env::temp_dir().join(format!(
                "farcall-test-{}-{}",
                std::process::id(),
                NEXT_SOCKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&dir);
            let listener = tokio::net::UnixListener::bind(&dir).unwrap();
            let (accepted, connected) = tokio::join!(listener.accept(), b.connect_unix(&dir));
            let _ = std::fs::remove_file(&dir);
            (a.connect_stream(accepted.unwrap().0), connected.unwrap())
        }
    }
}

#[cfg(unix)]
static NEXT_SOCKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A nested value exercising structs, enums, boxes and collections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nested {
    pub name: String,
    pub tags: Vec<String>,
    pub kind: Kind,
    pub child: Option<Box<Nested>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    Leaf,
    Weighted(u32),
    Point { x: i64, y: i64 },
}

#[farcall::remote]
pub trait Shapes {
    async fn unit(&self);
    async fn no_args(&self) -> u32;
    async fn prims(&self, a: u8, b: i64, c: f64, d: bool, e: char) -> (u8, i64, f64, bool, char);
    async fn string(&self, s: String) -> String;
    async fn vec(&self, v: Vec<u32>) -> Vec<u32>;
    async fn map(&self, m: HashMap<String, u64>) -> HashMap<String, u64>;
    async fn option(&self, o: Option<String>) -> Option<String>;
    async fn nested(&self, n: Nested) -> Nested;
    async fn bytes(&self, b: bytes::Bytes) -> bytes::Bytes;
    async fn many(&self, a: u8, b: u16, c: u32, d: u64, e: String, f: Vec<u8>) -> u64;
}

pub struct ShapesImpl;

impl Shapes for ShapesImpl {
    async fn unit(&self) {}
    async fn no_args(&self) -> u32 {
        42
    }
    async fn prims(&self, a: u8, b: i64, c: f64, d: bool, e: char) -> (u8, i64, f64, bool, char) {
        (a, b, c, d, e)
    }
    async fn string(&self, s: String) -> String {
        s.chars().rev().collect()
    }
    async fn vec(&self, v: Vec<u32>) -> Vec<u32> {
        v.into_iter().map(|x| x * 2).collect()
    }
    async fn map(&self, mut m: HashMap<String, u64>) -> HashMap<String, u64> {
        m.insert("added".into(), 1);
        m
    }
    async fn option(&self, o: Option<String>) -> Option<String> {
        o.map(|s| s + "!")
    }
    async fn nested(&self, mut n: Nested) -> Nested {
        n.tags.push("seen".into());
        n
    }
    async fn bytes(&self, b: bytes::Bytes) -> bytes::Bytes {
        b
    }
    async fn many(&self, a: u8, b: u16, c: u32, d: u64, e: String, f: Vec<u8>) -> u64 {
        a as u64 + b as u64 + c as u64 + d + e.len() as u64 + f.len() as u64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    DivisionByZero,
    Overflow { a: u64, b: u64 },
}

impl std::fmt::Display for MathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for MathError {}

#[farcall::remote]
pub trait Service {
    /// Adds two numbers.
    async fn add(&self, a: u64, b: u64) -> u64;
    async fn checked_div(&self, a: u64, b: u64) -> Result<u64, MathError>;
    /// Records `item` in the log, one-way.
    #[farcall(oneway)]
    async fn record(&self, item: u32);
    /// Records `item` in the log and replies.
    async fn record_call(&self, item: u32);
    async fn log(&self) -> Vec<u32>;
    /// Waits until the test opens the gate.
    async fn slow(&self) -> String;
    /// Never returns; tells the test when its future is dropped.
    async fn wait_forever(&self) -> u32;
    async fn panic(&self, message: String) -> u32;
    /// Asks the caller's root (a `Peer`) to double `x`.
    async fn call_back(&self, x: u64) -> Result<u64, String>;
    /// The id of the connection the call arrived on.
    async fn connection_id(&self) -> u64;
}

/// The service's observable state, shared with the test.
#[derive(Default)]
pub struct ServiceState {
    pub log: Mutex<Vec<u32>>,
    pub gate: Notify,
    pub entered_slow: Notify,
    pub entered_forever: Notify,
    pub dropped_forever: Notify,
}

#[derive(Clone, Default)]
pub struct ServiceImpl(pub Arc<ServiceState>);

struct NotifyOnDrop(Arc<ServiceState>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.dropped_forever.notify_one();
    }
}

impl Service for ServiceImpl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn checked_div(&self, a: u64, b: u64) -> Result<u64, MathError> {
        a.checked_div(b).ok_or(MathError::DivisionByZero)
    }
    async fn record(&self, item: u32) {
        self.0.log.lock().unwrap().push(item);
    }
    async fn record_call(&self, item: u32) {
        self.0.log.lock().unwrap().push(item);
    }
    async fn log(&self) -> Vec<u32> {
        self.0.log.lock().unwrap().clone()
    }
    async fn slow(&self) -> String {
        self.0.entered_slow.notify_one();
        self.0.gate.notified().await;
        "slow done".to_string()
    }
    async fn wait_forever(&self) -> u32 {
        let _guard = NotifyOnDrop(self.0.clone());
        self.0.entered_forever.notify_one();
        std::future::pending().await
    }
    async fn panic(&self, message: String) -> u32 {
        panic!("{message}")
    }
    async fn call_back(&self, x: u64) -> Result<u64, String> {
        let cx = CallContext::current().ok_or("no call context")?;
        let peer: PeerClient = cx.connection().root().await.map_err(|e| e.to_string())?;
        peer.double(x).await.map_err(|e| e.to_string())
    }
    async fn connection_id(&self) -> u64 {
        CallContext::current()
            .map(|cx| cx.connection().id())
            .unwrap_or(0)
    }
}

#[farcall::remote]
pub trait Peer {
    async fn double(&self, x: u64) -> u64;
}

pub struct PeerImpl;

impl Peer for PeerImpl {
    async fn double(&self, x: u64) -> u64 {
        x * 2
    }
}

/// A served `Service` and a client of it, plus the connections and the state.
pub struct Fixture {
    pub server: Connection,
    pub client: Connection,
    pub service: ServiceClient,
    pub state: Arc<ServiceState>,
}

pub async fn fixture(link: Link, codec: AnyCodec) -> Fixture {
    fixture_with(
        link,
        codec,
        Connection::builder(),
        Connection::builder().root(PeerServer::new(PeerImpl)),
    )
    .await
}

pub async fn fixture_with(
    link: Link,
    codec: AnyCodec,
    server: Builder,
    client: Builder,
) -> Fixture {
    let imp = ServiceImpl::default();
    let state = imp.0.clone();
    let (server, client) = connect(link, codec, server.root(ServiceServer::new(imp)), client).await;
    let service = client.root::<ServiceClient>().await.expect("bootstrap");
    Fixture {
        server,
        client,
        service,
        state,
    }
}

pub fn is_disconnected(e: &RpcError) -> bool {
    matches!(e, RpcError::Disconnected(_))
}
