//! Streams both ways: a server's log tailed by a client, and a file uploaded from the
//! client in chunks, with a progress callback. `cargo run --example streaming`

use std::time::Duration;

use farcall::{ByteStream, Callback, Connection, Stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

#[derive(Debug, Serialize, Deserialize)]
pub struct LogLine {
    pub n: u64,
    pub text: String,
}

#[farcall::remote]
pub trait Logs {
    /// Lines of the log from `from`, as they are written.
    async fn tail(&self, from: u64) -> Stream<LogLine>;
    /// Stores an upload; reports progress every MiB; returns the bytes received.
    async fn upload(
        &self,
        name: String,
        data: ByteStream,
        progress: Callback<u64>,
    ) -> Result<u64, String>;
}

struct Server;

impl Logs for Server {
    async fn tail(&self, from: u64) -> Stream<LogLine> {
        // A push-style producer: a task writing lines into a channel. `send` waits
        // while the consumer is behind and fails once it is gone.
        let (tx, lines) = Stream::channel(16);
        tokio::spawn(async move {
            for n in from.. {
                let line = LogLine {
                    n,
                    text: format!("request {n} served"),
                };
                if tx.send(line).await.is_err() {
                    println!("server: the tail's reader left, stopping at line {n}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        lines
    }

    async fn upload(
        &self,
        name: String,
        data: ByteStream,
        progress: Callback<u64>,
    ) -> Result<u64, String> {
        // Read it as any AsyncRead; only a window of it is ever in memory.
        let mut reader = data.into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut total, mut reported) = (0u64, 0u64);
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total - reported >= 1 << 20 {
                reported = total;
                progress.send(&total).map_err(|e| e.to_string())?;
            }
        }
        progress.send(&total).map_err(|e| e.to_string())?;
        println!("server: stored {name} ({total} bytes)");
        Ok(total)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = farcall::Server::new(Connection::builder().root(LogsServer::new(Server)));
    let serving = tokio::spawn(server.serve(listener, std::future::pending()));

    let conn = Connection::builder().connect_tcp(addr).await?;
    let logs: LogsClient = conn.root().await?;

    // Tail ten lines, then drop the stream: the server's producer stops.
    let mut tail = logs.tail(100).await?.take(10);
    while let Some(line) = tail.next().await {
        let line = line?;
        println!("client: line {}: {}", line.n, line.text);
    }
    drop(tail);

    // Upload 8 MiB from an in-memory reader (a file works the same way:
    // `ByteStream::from_reader(tokio::fs::File::open(path).await?)`).
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let progress = Callback::new(|done: u64| async move {
        println!(
            "client: {:.1} MiB uploaded",
            done as f64 / f64::from(1 << 20)
        );
    });
    let stored = logs
        .upload(
            "data.bin".into(),
            ByteStream::from_reader(std::io::Cursor::new(data)),
            progress,
        )
        .await?;
    println!("client: the server stored {stored} bytes");
    assert_eq!(stored, 8 << 20);

    conn.close().await;
    serving.abort();
    Ok(())
}
