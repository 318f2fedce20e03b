//! (coproq) A worker process: this program starts itself again as a worker and talks
//! to it over the worker's stdin and stdout.
//!
//! ```text
//! cargo run --example worker
//! ```
//!
//! The parent offers a `Library` of documents and calls the worker's `Hasher`; while
//! hashing, the worker calls the parent back to fetch each document. The worker logs
//! to stderr (its stdout carries the connection), so its lines show up on the
//! parent's stderr. Closing the connection ends the worker's input and it exits.

use std::collections::HashMap;

use farcall::{process, CallContext, Connection};

#[farcall::remote]
pub trait Hasher {
    /// Hashes the document the caller's `Library` holds under `name`.
    async fn hash(&self, name: String) -> Result<u64, String>;
}

#[farcall::remote]
pub trait Library {
    /// The text of the document `name`, if there is one.
    async fn fetch(&self, name: String) -> Option<String>;
}

/// The worker's object: FNV-1a over documents fetched from the caller.
struct Fnv;

impl Hasher for Fnv {
    async fn hash(&self, name: String) -> Result<u64, String> {
        let caller = CallContext::current().ok_or("no call context")?;
        let library: LibraryClient = caller
            .connection()
            .root()
            .await
            .map_err(|e| e.to_string())?;
        let text = library
            .fetch(name.clone())
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no document named {name:?}"))?;
        // stderr, never stdout: stdout is the connection.
        eprintln!(
            "[worker {}] hashing {name:?} ({} bytes)",
            std::process::id(),
            text.len()
        );
        Ok(text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }))
    }
}

/// The parent's object.
struct Documents(HashMap<String, String>);

impl Library for Documents {
    async fn fetch(&self, name: String) -> Option<String> {
        self.0.get(&name).cloned()
    }
}

async fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let documents = Documents(HashMap::from([
        ("hello".to_string(), "hello, world".to_string()),
        (
            "lorem".to_string(),
            "lorem ipsum dolor sit amet".to_string(),
        ),
    ]));
    let builder = Connection::builder().root(LibraryServer::new(documents));
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.arg("worker");
    let worker = process::spawn(&builder, command)?;
    println!("started worker {}", worker.id().unwrap_or(0));

    let hasher: HasherClient = worker.root().await?;
    for name in ["hello", "lorem", "missing"] {
        match hasher.hash(name.to_string()).await {
            Ok(hash) => println!("{name}: {hash:016x}"),
            Err(e) => println!("{name}: error: {e}"),
        }
    }

    let status = worker.close().await?;
    println!("worker exited: {status}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        None => parent().await,
        Some("worker") => {
            eprintln!("[worker {}] serving on stdio", std::process::id());
            process::run_stdio(&Connection::builder().root(HasherServer::new(Fnv))).await;
            eprintln!(
                "[worker {}] parent closed the connection",
                std::process::id()
            );
            Ok(())
        }
        Some(_) => {
            eprintln!("usage: cargo run --example worker");
            std::process::exit(2);
        }
    }
}
