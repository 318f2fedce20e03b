//! Fault injection: random schedules of calls, callbacks and pipelined calls over a
//! link that corrupts, truncates, delays or cuts frames. Whatever happens, nothing
//! panics, every call ends, and nothing is left behind.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use farcall::transport::{Delayed, MemoryTransport};
use farcall::{Callback, Connection, RpcError, Stats};
use futures_util::{Sink, Stream};

/// A deterministic generator.
#[derive(Clone)]
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the faulty link did, for the checks afterwards.
#[derive(Default)]
struct Damage {
    corrupted: std::sync::atomic::AtomicBool,
}

/// A transport that damages what it sends: flips bits, truncates, or cuts the
/// connection; every frame also gets a random delay of up to 20 ms on a link that
/// keeps order (`transport::delayed_by`).
struct Faulty {
    inner: Delayed<MemoryTransport>,
    rng: Lcg,
    /// Chance in a thousand of each fault per frame.
    odds: u64,
    cut: bool,
    damage: Arc<Damage>,
}

impl Faulty {
    fn new(inner: MemoryTransport, seed: u64, odds: u64, damage: Arc<Damage>) -> Self {
        let mut jitter = Lcg(seed.rotate_left(17));
        Faulty {
            inner: farcall::transport::delayed_by(inner, move |_| {
                Duration::from_millis(jitter.below(20))
            }),
            rng: Lcg(seed),
            odds,
            cut: false,
            damage,
        }
    }
}

impl Stream for Faulty {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cut {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Sink<Bytes> for Faulty {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        let this = &mut *self;
        if this.cut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let roll = this.rng.below(1000);
        let mut frame = frame.to_vec();
        let odds = this.odds;
        if roll < odds && !frame.is_empty() {
            let at = this.rng.below(frame.len() as u64) as usize;
            frame[at] ^= 1 << this.rng.below(8);
            this.damage.corrupted.store(true, Ordering::SeqCst);
        } else if roll < 2 * odds {
            let keep = this.rng.below(frame.len() as u64 + 1) as usize;
            frame.truncate(keep);
            this.damage.corrupted.store(true, Ordering::SeqCst);
        } else if roll < 2 * odds + odds / 4 {
            this.cut = true;
            this.damage.corrupted.store(true, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "cut by the fault injector",
            ));
        }
        Pin::new(&mut this.inner).start_send(frame.into())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[farcall::remote]
pub trait Garden {
    async fn plant(&self, name: String) -> PlantClient;
    async fn water(&self, can: Callback<u32, u32>, times: u32) -> Result<u32, String>;
    #[farcall(oneway)]
    async fn rake(&self, n: u32);
    async fn add(&self, a: u32, b: u32) -> u32;
}

#[farcall::remote]
pub trait Plant {
    async fn grow(&self, by: u32) -> u32;
    async fn seed(&self) -> PlantClient;
}

/// Counts live plant objects, so leaks show.
#[derive(Clone)]
struct Live(Arc<AtomicI64>);

struct GardenImpl(Live);

struct PlantImpl {
    live: Live,
    height: std::sync::atomic::AtomicU32,
}

impl PlantImpl {
    fn client(live: &Live) -> PlantClient {
        live.0.fetch_add(1, Ordering::SeqCst);
        PlantClient::from_local(PlantImpl {
            live: live.clone(),
            height: Default::default(),
        })
    }
}

impl Drop for PlantImpl {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Garden for GardenImpl {
    async fn plant(&self, _name: String) -> PlantClient {
        PlantImpl::client(&self.0)
    }
    async fn water(&self, can: Callback<u32, u32>, times: u32) -> Result<u32, String> {
        let mut total = 0;
        for i in 0..times {
            total += can.call(i).await.map_err(|e| e.to_string())?;
        }
        Ok(total)
    }
    async fn rake(&self, _n: u32) {}
    async fn add(&self, a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

impl Plant for PlantImpl {
    async fn grow(&self, by: u32) -> u32 {
        self.height.fetch_add(by, Ordering::SeqCst) + by
    }
    async fn seed(&self) -> PlantClient {
        PlantImpl::client(&self.live)
    }
}

async fn one_schedule(seed: u64, odds: u64) -> (bool, String) {
    let live = Live(Arc::new(AtomicI64::new(0)));
    let damage = Arc::new(Damage::default());
    let (a, b) = farcall::transport::memory();
    let faulty = |inner, seed| Faulty::new(inner, seed, odds, damage.clone());
    let server = Connection::builder()
        .root(GardenServer::new(GardenImpl(live.clone())))
        .call_timeout(Some(Duration::from_secs(5)))
        .connect(faulty(a, seed));
    let client = Connection::builder()
        .call_timeout(Some(Duration::from_secs(5)))
        .connect(faulty(b, seed ^ 0x5555));
    let mut rng = Lcg(seed);
    let mut ended = 0;
    if let Ok(garden) = client.root::<GardenClient>().await {
        let mut plants: Vec<PlantClient> = Vec::new();
        for _ in 0..60 {
            let op = rng.below(7);
            let outcome = tokio::time::timeout(Duration::from_secs(60), async {
                match op {
                    0 => garden.add(1, 2).await.map(drop),
                    1 => garden.plant("p".into()).await.map(|p| plants.push(p)),
                    2 => {
                        let can = Callback::new(|x: u32| async move { x + 1 });
                        garden
                            .water(can, 3)
                            .await
                            .map(drop)
                            .map_err(|e| e.rpc().cloned().unwrap_or(RpcError::Timeout))
                    }
                    3 => garden.rake(1),
                    4 => garden
                        .plant("q".into())
                        .seed()
                        .seed()
                        .grow(2)
                        .await
                        .map(drop),
                    5 => match plants.pop() {
                        Some(p) => p.grow(1).await.map(drop),
                        None => Ok(()),
                    },
                    _ => {
                        let promise = garden.plant("r".into());
                        let grown = promise.grow(1);
                        drop(promise);
                        grown.await.map(drop)
                    }
                }
            })
            .await;
            assert!(outcome.is_ok(), "seed {seed}: operation {op} did not end");
            ended += 1;
            if client.is_closed() {
                break;
            }
        }
        drop(plants);
        drop(garden);
    }
    // Let releases and finishes travel, then look at the surviving side.
    let clean = !damage.corrupted.load(Ordering::SeqCst);
    if clean {
        for _ in 0..200 {
            match server.stats().await {
                Ok(stats) if stats == Stats::default() => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => break,
            }
        }
        if let Ok(stats) = server.stats().await {
            assert_eq!(stats, Stats::default(), "seed {seed}: tables left behind");
        }
    }
    client.abort().await;
    tokio::time::timeout(Duration::from_secs(60), server.closed())
        .await
        .expect("the server side ends with the client");
    let reason = server
        .close_reason()
        .expect("an ended connection has a reason");
    assert_ne!(
        reason,
        farcall::CloseReason::TaskStopped,
        "seed {seed}: a connection task died"
    );
    assert_eq!(
        live.0.load(Ordering::SeqCst),
        0,
        "seed {seed}: objects leaked"
    );
    (clean, format!("{ended} ops, {reason}"))
}

#[tokio::test(start_paused = true)]
async fn random_schedules_over_a_faulty_link_end_cleanly() {
    let mut damaged = 0;
    for seed in 0..60 {
        // A third of the runs are clean (only delays), the rest see faults.
        let odds = if seed % 3 == 0 { 0 } else { 8 };
        let (clean, summary) = one_schedule(seed, odds).await;
        if !clean {
            damaged += 1;
        }
        if seed < 3 {
            eprintln!("seed {seed}: {summary}");
        }
    }
    assert!(
        damaged > 10,
        "the injector should have done damage ({damaged} runs)"
    );
}
