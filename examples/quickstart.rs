//! The README's first command: `cargo run --example quickstart`.
//!
//! Defines a remote trait, serves it over an in-process transport, and calls it:
//! plain values, an application error, and a one-way call.

use std::sync::atomic::{AtomicU64, Ordering};

use farcall::{CallError, Connection};
use serde::{Deserialize, Serialize};

/// An application error, typed and serializable.
#[derive(Debug, Serialize, Deserialize)]
pub struct Overflow {
    pub at: u64,
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "counter would overflow at {}", self.at)
    }
}

impl std::error::Error for Overflow {}

#[farcall::remote]
pub trait Counter {
    /// Returns the next value.
    async fn next(&self) -> u64;
    /// Adds `n`, refusing to wrap around.
    async fn add(&self, n: u64) -> Result<u64, Overflow>;
    /// Bumps the counter without waiting for a reply.
    #[farcall(oneway)]
    async fn bump(&self, by: u64);
}

#[derive(Default)]
struct MyCounter {
    value: AtomicU64,
}

impl Counter for MyCounter {
    async fn next(&self) -> u64 {
        self.value.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn add(&self, n: u64) -> Result<u64, Overflow> {
        let now = self.value.load(Ordering::SeqCst);
        let sum = now.checked_add(n).ok_or(Overflow { at: now })?;
        self.value.store(sum, Ordering::SeqCst);
        Ok(sum)
    }

    async fn bump(&self, by: u64) {
        self.value.fetch_add(by, Ordering::SeqCst);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Two endpoints of an in-process transport: one serves, one calls.
    let (server_end, client_end) = farcall::transport::memory();
    let _server = Connection::builder()
        .root(CounterServer::new(MyCounter::default()))
        .connect(server_end);
    let connection = Connection::builder().connect(client_end);
    let counter: CounterClient = connection.root().await?;

    println!("next() = {}", counter.next().await?);
    println!("next() = {}", counter.next().await?);
    counter.bump(10)?; // one-way, yet ordered before the next call
    println!("add(5) = {}", counter.add(5).await?);
    match counter.add(u64::MAX).await {
        Err(CallError::App(Overflow { at })) => println!("add(u64::MAX) refused: overflow at {at}"),
        other => println!("unexpected: {other:?}"),
    }
    connection.close().await;
    if let Some(reason) = connection.close_reason() {
        println!("closed: {reason}");
    }
    Ok(())
}
