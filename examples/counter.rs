//! A counter whose state cannot travel, and a root on each side:
//! `cargo run --example counter`.
//!
//! From the Q-Connection seed: the local value "is most handy" as "an object that
//! supports an API and cannot be serialized"; since it closes on local state, "it
//! can't be sent to another process", so the peer gets a reference and calls it.
//! "The connection is bi-directional": here the server offers the counter, the
//! client offers a `Logger`, each side asks for the other's root, and the counter
//! reports every increment to the logger of whoever called it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use farcall::{CallContext, Connection, RemoteClient, RpcError};

#[farcall::remote]
pub trait Counter {
    /// Adds `by`, tells the caller's logger, and returns the new value.
    async fn increment(&self, by: u64) -> Result<u64, String>;
    /// The current value.
    async fn get(&self) -> u64;
}

#[farcall::remote]
pub trait Logger {
    /// Records one line on the logger's side.
    async fn log(&self, line: String);
}

/// Served by the server. Neither a `Mutex` nor an `Instant` can be serialized: the
/// client only ever holds a reference to this object.
struct LocalCounter {
    value: Mutex<u64>,
    started: Instant,
}

impl Counter for LocalCounter {
    async fn increment(&self, by: u64) -> Result<u64, String> {
        let now = {
            let mut value = self.value.lock().expect("not poisoned");
            *value += by;
            *value
        }; // the guard is dropped before any `.await`
        println!("  server: counter += {by} -> {now}");
        // Call back the root of the peer this call came from.
        let caller = CallContext::current().ok_or("no call context")?;
        let logger: LoggerClient = caller
            .connection()
            .root()
            .await
            .map_err(|e| e.to_string())?;
        let age = self.started.elapsed().as_micros();
        let line = format!("counter is {now} ({age} µs after start)");
        logger.log(line).await.map_err(|e| e.to_string())?;
        Ok(now)
    }

    async fn get(&self) -> u64 {
        *self.value.lock().expect("not poisoned")
    }
}

/// Served by the client: keeps the lines it is told.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Logger for Lines {
    async fn log(&self, line: String) {
        println!("  client logger: {line}");
        self.0.lock().expect("not poisoned").push(line);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (server_end, client_end) = farcall::transport::memory();
    let counter = LocalCounter {
        value: Mutex::new(0),
        started: Instant::now(),
    };
    let server = Connection::builder()
        .root(CounterServer::new(counter))
        .connect(server_end);
    let lines = Arc::new(Lines::default());
    let client = Connection::builder()
        .root(LoggerServer::from_arc(lines.clone()))
        .connect(client_end);

    // Each side asks for the other's root.
    let counter: CounterClient = client.root().await?;
    let logger: LoggerClient = server.root().await?;
    assert!(!counter.client().is_local() && !logger.client().is_local());
    logger.log("hello from the server side".into()).await?;

    for by in [1, 2, 3] {
        let now = counter.increment(by).await?;
        println!("client: increment({by}) = {now}");
    }
    let total = counter.get().await?;
    println!("client: get() = {total}");
    assert_eq!(total, 6);

    let lines = lines.0.lock().expect("not poisoned").clone();
    assert_eq!(lines.len(), 4, "one greeting and one line per increment");
    assert!(lines[3].starts_with("counter is 6 "), "{lines:?}");

    // Asking a root with the wrong client type is a clear error, not a hang.
    let wrong = client.root::<LoggerClient>().await;
    println!(
        "client asks the server for a Logger: {}",
        wrong.as_ref().unwrap_err()
    );
    assert!(matches!(wrong, Err(RpcError::WrongInterface { .. })));

    client.close().await;
    server.closed().await;
    if let Some(reason) = server.close_reason() {
        println!("closed: {reason}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(20), run()).await??;
    Ok(())
}
