//! Promise pipelining over a slow link (Q-Connection's promises, with real pipelining
//! on the wire): `cargo run --example pipelining`.
//!
//! A chain of ten dependent calls (each returns the object the next is made on) runs
//! twice over an in-process link that delays every frame by 5 ms each way: once
//! awaiting each step, once pipelined, where every call is sent at once, addressed to
//! the answer of the call before it.

use std::time::{Duration, Instant};

use farcall::Connection;

const DELAY: Duration = Duration::from_millis(5);
const CHAIN: u32 = 10;

#[farcall::remote]
pub trait Dir {
    /// The subdirectory `name` (created on demand).
    async fn open(&self, name: String) -> DirClient;
    /// How deep this directory is.
    async fn depth(&self) -> u32;
}

struct Folder {
    depth: u32,
}

impl Dir for Folder {
    async fn open(&self, _name: String) -> DirClient {
        DirClient::from_local(Folder {
            depth: self.depth + 1,
        })
    }
    async fn depth(&self) -> u32 {
        self.depth
    }
}

fn report(mode: &str, elapsed: Duration) {
    let round_trips = elapsed.as_secs_f64() / (2.0 * DELAY.as_secs_f64());
    println!(
        "{mode}: {:.1} ms ({round_trips:.1} round trips)",
        elapsed.as_secs_f64() * 1e3
    );
}

async fn run() -> Result<(), farcall::RpcError> {
    let (a, b) = farcall::transport::memory();
    let _server = Connection::builder()
        .root(DirServer::new(Folder { depth: 0 }))
        .connect(farcall::transport::delayed(a, DELAY));
    let client = Connection::builder().connect(farcall::transport::delayed(b, DELAY));
    let root: DirClient = client.root().await?;

    // One step at a time: each call waits for the previous answer.
    let start = Instant::now();
    let mut dir = root.clone();
    for i in 0..CHAIN {
        dir = dir.open(format!("d{i}")).await?;
    }
    report("awaited", start.elapsed());
    assert_eq!(dir.depth().await?, CHAIN);

    // Pipelined: `open` returns a promise that is already a `DirClient`.
    let start = Instant::now();
    let mut promise = root.open("d0".to_string());
    for i in 1..CHAIN {
        promise = promise.open(format!("d{i}"));
    }
    let dir = promise.await?;
    report("pipelined", start.elapsed());
    assert_eq!(dir.depth().await?, CHAIN);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(30), run()).await??;
    Ok(())
}
