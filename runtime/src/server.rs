//! Serving many peers: an accept loop over a TCP or Unix listener.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
#[derive(Clone)]
pub struct Server {
    builder: Builder,
    max_connections: usize,
    on_connection: Option<Hook>,
}

/// What [`Server::on_connection`] is given.
type Hook = Arc<dyn Fn(&Connection) + Send + Sync>;

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("builder", &self.builder)
            .field("max_connections", &self.max_connections)
            .field("on_connection", &self.on_connection.is_some())
            .finish()
    }
}

impl Server {
    /// A server giving each connection the settings and root of `builder`; at most
    /// 1,024 connections at once unless changed.
    pub fn new(builder: Builder) -> Self {
        Server {
            builder,
            max_connections: 1024,
            on_connection: None,
        }
    }

    /// Sets how many connections are served at once (default 1,024).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How many connections are served at once.
    pub fn connection_limit(&self) -> usize {
        self.max_connections
    }

    /// Calls `hook` with each connection the server starts serving (for WebSocket,
    /// once its upgrade succeeded), so the application can keep it to watch its
    /// [`closed`](Connection::closed) and [`close_reason`](Connection::close_reason),
    /// read its [`stats`](Connection::stats), or close it. Keeping the handle does
    /// not keep the connection open past its peer or the server's shutdown.
    ///
    /// ```
    /// # #[farcall::remote] pub trait Echo { async fn echo(&self, s: String) -> String; }
    /// # struct E; impl Echo for E { async fn echo(&self, s: String) -> String { s } }
    /// let server = farcall::Server::new(farcall::Connection::builder().root(EchoServer::new(E)))
    ///     .on_connection(|conn| {
    ///         let conn = conn.clone();
    ///         tokio::spawn(async move {
    ///             conn.closed().await;
    ///             eprintln!("connection {} ended: {:?}", conn.id(), conn.close_reason());
    ///         });
    ///     });
    /// assert_eq!(server.connection_limit(), 1024);
    /// ```
    pub fn on_connection(mut self, hook: impl Fn(&Connection) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Arc::new(hook));
        self
    }

    /// Runs the accept loop until `shutdown` resolves, then closes every connection
    /// gracefully and returns.
    pub async fn serve<L: Listener>(self, listener: L, shutdown: impl Future<Output = ()>) {
        let builder = self.builder.clone();
        self.run(listener, shutdown, move |io| {
            Start::Now(builder.connect_stream(io))
        })
        .await;
    }

    /// Like [`serve`](Self::serve), for WebSocket clients (`ws://`) arriving on a
    /// TCP or Unix listener: each connection is one frame per binary message.
    ///
    /// Each upgrade handshake runs in its own task, so a slow client holds up no other,
    /// and must finish within [`Config::handshake_timeout`](crate::Config): a client
    /// that connects and sends nothing gives its slot back then. A failed handshake is
    /// logged and never stops the loop.
    ///
    /// Requires the `websocket` feature (on by default).
    ///
    /// ```no_run
    /// # #[farcall::remote] pub trait Echo { async fn echo(&self, s: String) -> String; }
    /// # struct E; impl Echo for E { async fn echo(&self, s: String) -> String { s } }
    /// # #[tokio::main] async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
    /// let builder = farcall::Connection::builder().root(EchoServer::new(E));
    /// farcall::Server::new(builder)
    ///     .serve_websocket(listener, async { tokio::signal::ctrl_c().await.ok(); })
    ///     .await;
    /// // Clients: `Connection::builder().connect_websocket("ws://127.0.0.1:7070")`.
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "websocket")]
    pub async fn serve_websocket<L: Listener>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()>,
    ) {
        let builder = self.builder.clone();
        self.run(listener, shutdown, move |io| {
            let builder = builder.clone();
            Start::Later(Box::pin(async move { builder.accept_websocket(io).await }))
        })
        .await;
    }

    /// The accept loop: `start` turns each accepted stream into a connection.
    /// Serves every client of `listener` over Cap'n Web on WebSocket (the npm
    /// `capnweb` package's `newWebSocketRpcSession`), with the builder's root, until
    /// `shutdown` resolves; like [`serve_websocket`](Self::serve_websocket)
    /// otherwise. See [`crate::capnweb`].
    #[cfg(all(feature = "capnweb", feature = "websocket"))]
    pub async fn serve_capnweb<L: Listener>(self, listener: L, shutdown: impl Future<Output = ()>) {
        let builder = self.builder.clone();
        self.run(listener, shutdown, move |io| {
            let builder = builder.clone();
            Start::Later(Box::pin(async move {
                crate::capnweb::accept_websocket(&builder, io).await
            }))
        })
        .await;
    }

    async fn run<L: Listener>(
        self,
        mut listener: L,
        shutdown: impl Future<Output = ()>,
        mut start: impl FnMut(L::Io) -> Start,
    ) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let hook = self.on_connection.clone();
        let track = |connections: &mut HashMap<u64, Connection>,
                     live: &mut JoinSet<u64>,
                     conn: Connection,
                     permit: OwnedSemaphorePermit| {
            if let Some(hook) = &hook {
                hook(&conn);
            }
            track(connections, live, conn, permit);
        };
        let mut live: JoinSet<u64> = JoinSet::new();
        let mut connections: HashMap<u64, Connection> = HashMap::new();
        let mut handshakes: JoinSet<(io::Result<Connection>, OwnedSemaphorePermit)> =
            JoinSet::new();
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
                Some(done) = handshakes.join_next() => match done {
                    Ok((Ok(conn), permit)) => track(&mut connections, &mut live, conn, permit),
                    // The permit is dropped with the failed handshake.
                    Ok((Err(e), _)) => tracing::debug!(error = %e, "handshake failed"),
                    Err(e) => tracing::warn!(error = %e, "handshake task failed"),
                },
                permit = permits.clone().acquire_owned() => {
                    let permit = permit.expect("the semaphore is never closed");
                    let accepted = tokio::select! {
                        _ = &mut shutdown => break,
                        accepted = listener.accept() => accepted,
                    };
                    match accepted {
                        Ok(io) => {
                            backoff = Duration::from_millis(1);
                            match start(io) {
                                Start::Now(conn) => {
                                    track(&mut connections, &mut live, conn, permit);
                                }
                                Start::Later(handshake) => {
                                    handshakes.spawn(async move { (handshake.await, permit) });
                                }
                            }
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
        // Handshakes still running are dropped; ones that just finished are closed
        // with the rest.
        handshakes.abort_all();
        while let Some(done) = handshakes.join_next().await {
            if let Ok((Ok(conn), permit)) = done {
                track(&mut connections, &mut live, conn, permit);
            }
        }
        tracing::debug!(connections = connections.len(), "server shutting down");
        for conn in connections.values() {
            tokio::spawn(conn.close());
        }
        while live.join_next().await.is_some() {}
    }
}

/// How an accepted stream becomes a connection.
enum Start {
    /// At once (byte streams).
    Now(Connection),
    /// After a handshake, run in a task of its own so a slow peer holds up no other.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    Later(Pin<Box<dyn Future<Output = io::Result<Connection>> + Send>>),
}

/// Serves `conn` until it ends, holding its connection slot until then.
fn track(
    connections: &mut HashMap<u64, Connection>,
    live: &mut JoinSet<u64>,
    conn: Connection,
    permit: OwnedSemaphorePermit,
) {
    let id = conn.id();
    let closed = conn.closed();
    connections.insert(id, conn);
    live.spawn(async move {
        closed.await;
        drop(permit);
        id
    });
}
