//! A server and a client over WebSocket (`ws://`), in one program.
//!
//! ```text
//! cargo run --example websocket
//! ```
//!
//! Each farcall frame travels as one binary WebSocket message, so the server can sit
//! behind anything that forwards WebSockets (a reverse proxy, a load balancer).

use farcall::{Connection, Server};

#[farcall::remote]
pub trait Clock {
    /// Ticks `n` times and returns the count so far.
    async fn tick(&self, n: u64) -> u64;
}

#[derive(Default)]
struct Counter(std::sync::atomic::AtomicU64);

impl Clock for Counter {
    async fn tick(&self, n: u64) -> u64 {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    println!("serving on {url}");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let builder = Connection::builder().root(ClockServer::new(Counter::default()));
    let server = tokio::spawn(Server::new(builder).serve_websocket(listener, async {
        let _ = stopped.await;
    }));

    let connection = Connection::builder().connect_websocket(&url).await?;
    let clock: ClockClient = connection.root().await?;
    for n in [1, 2, 3] {
        println!("tick({n}) -> {}", clock.tick(n).await?);
    }

    connection.close().await;
    let _ = stop.send(());
    server.await?;
    println!("done");
    Ok(())
}
