//! Serving many peers: an accept loop over a TCP or Unix listener.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::connection::{Builder, Connection};

/// Something that accepts byte-stream connections: implemented for tokio's
/// `TcpListener` (setting `TCP_NODELAY` on each stream) and `UnixListener`.
pub trait Listener: Send + 'static {
    /// The accepted stream type.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        Ok(stream)
    }
}

/// Accepts connections and serves each with the same root, one actor task per
/// connection.
///
/// At most [`max_connections`](Self::max_connections) are served at once; further
/// peers wait in the listener's backlog until one leaves. A failed accept is logged
/// and never stops the loop. When `shutdown` resolves, the server stops accepting and
/// closes every connection gracefully (running calls finish and their results are
/// sent) before [`serve`](Self::serve) returns.
///
/// ```no_run
/// # #[farcall::remote] pub trait Echo { async fn echo(&self, s: String) -> String; }
/// # struct E; impl Echo for E { async fn echo(&self, s: String) -> String { s } }
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
/// let builder = farcall::Connection::builder().root(EchoServer::new(E));
/// farcall::Server::new(builder)
///     .max_connections(10_000)
///     .serve(listener, async { tokio::signal::ctrl_c().await.ok(); })
///     .await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Server {
    builder: Builder,
    max_connections: usize,
}

impl Server {
    /// A server giving each connection the settings and root of `builder`; at most
    /// 1,024 connections at once unless changed.
    pub fn new(builder: Builder) -> Self {
        Server {
            builder,
            max_connections: 1024,
        }
    }

    /// Sets how many connections are served at once (default 1,024).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Runs the accept loop until `shutdown` resolves, then closes every connection
    /// gracefully and returns.
    pub async fn serve<L: Listener>(self, mut listener: L, shutdown: impl Future<Output = ()>) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let mut live: JoinSet<u64> = JoinSet::new();
        let mut connections: HashMap<u64, Connection> = HashMap::new();
        let mut backoff = Duration::from_millis(1);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(ended) = live.join_next() => {
                    if let Ok(id) = ended {
                        connections.remove(&id);
                    }
                }
                permit = permits.clone().acquire_owned() => {
                    let permit = permit.expect("the semaphore is never closed");
                    let accepted = tokio::select! {
                        _ = &mut shutdown => break,
                        accepted = listener.accept() => accepted,
                    };
                    match accepted {
                        Ok(io) => {
                            backoff = Duration::from_millis(1);
                            let conn = self.builder.connect_stream(io);
                            let id = conn.id();
                            let closed = conn.closed();
                            connections.insert(id, conn);
                            live.spawn(async move {
                                closed.await;
                                drop(permit);
                                id
                            });
                        }
                        Err(e) => {
                            // Errors such as running out of file descriptors pass with
                            // time; back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
            }
        }
        tracing::debug!(connections = connections.len(), "server shutting down");
        for conn in connections.values() {
            tokio::spawn(conn.close());
        }
        while live.join_next().await.is_some() {}
    }
}
