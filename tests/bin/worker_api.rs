//! The interfaces between `tests/process.rs` and its worker binary
//! (`tests/bin/worker.rs`), included by both.

// Each side implements one trait and calls the other.
#![allow(dead_code)]

/// What the worker serves.
#[farcall::remote]
pub trait Probe {
    /// Adds two numbers.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Asks the caller's root (a `Parent`) to double `x`: a call back into the parent
    /// while this call is being served.
    async fn call_back(&self, x: u64) -> Result<u64, String>;
    /// Exits the worker process with `code` at once.
    #[farcall(oneway)]
    async fn crash(&self, code: i32);
    /// Never returns.
    async fn hang(&self) -> u64;
    /// The worker's process id.
    async fn pid(&self) -> u32;
    /// Writes `line` to the worker's stderr.
    async fn log(&self, line: String);
    /// Starts a worker of its own (this binary again), keeps it, and returns its
    /// process id.
    async fn spawn_worker(&self) -> Result<u32, String>;
}

/// What the parent serves.
#[farcall::remote]
pub trait Parent {
    /// Doubles `x`.
    async fn double(&self, x: u64) -> u64;
}
