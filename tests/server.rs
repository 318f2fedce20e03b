//! The accept loop: many peers, bounded connections, graceful shutdown, accept
//! errors, and user-supplied transports.

mod common;

use std::io;
use std::sync::Arc;

use common::*;
use farcall::{Connection, Listener, Server};
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

fn service_builder() -> (farcall::Builder, Arc<ServiceState>) {
    let imp = ServiceImpl::default();
    let state = imp.0.clone();
    (Connection::builder().root(ServiceServer::new(imp)), state)
}

/// Runs `server` on `listener` in a task until the returned sender fires.
fn serve<L: Listener>(
    server: Server,
    listener: L,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test]
async fn a_tcp_server_serves_many_clients_with_one_root() {
    bounded("tcp server", async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (builder, state) = service_builder();
        let (stop, server) = serve(Server::new(builder), listener);
        let clients = join_all((0..8u32).map(|i| async move {
            let conn = Connection::builder().connect_tcp(addr).await.unwrap();
            let service: ServiceClient = conn.root().await.unwrap();
            service.record_call(i).await.unwrap();
            (conn, service.connection_id().await.unwrap())
        }))
        .await;
        let mut ids: Vec<u64> = clients.iter().map(|(_, id)| *id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8, "each client has its own server connection");
        let mut log = state.log.lock().unwrap().clone();
        log.sort();
        assert_eq!(log, (0..8).collect::<Vec<_>>(), "one shared root object");
        stop.send(()).unwrap();
        server.await.unwrap();
        for (conn, _) in clients {
            conn.closed().await;
        }
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_server_serves_clients() {
    bounded("unix server", async {
        let path = std::env::temp_dir().join(format!("farcall-server-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (builder, _) = service_builder();
        let (stop, server) = serve(Server::new(builder), listener);
        let conn = Connection::builder().connect_unix(&path).await.unwrap();
        let service: ServiceClient = conn.root().await.unwrap();
        assert_eq!(service.add(40, 2).await.unwrap(), 42);
        stop.send(()).unwrap();
        server.await.unwrap();
        let _ = std::fs::remove_file(&path);
    })
    .await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    bounded("graceful shutdown", async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (builder, state) = service_builder();
        let (stop, server) = serve(Server::new(builder), listener);
        let conn = Connection::builder().connect_tcp(addr).await.unwrap();
        let service: ServiceClient = conn.root().await.unwrap();
        let slow = tokio::spawn({
            let s = service.clone();
            async move { s.slow().await }
        });
        state.entered_slow.notified().await;
        stop.send(()).unwrap();
        // The server waits for the running call before it returns.
        let err = service.add(1, 1).await.unwrap_err();
        assert!(
            matches!(err, farcall::RpcError::Closing) || is_disconnected(&err),
            "{err}"
        );
        assert!(!server.is_finished());
        state.gate.notify_one();
        assert_eq!(slow.await.unwrap().unwrap(), "slow done");
        server.await.unwrap();
        conn.closed().await;
    })
    .await;
}

/// A listener fed by the test: each item is an accept result.
struct ScriptedListener(mpsc::UnboundedReceiver<io::Result<tokio::io::DuplexStream>>);

impl Listener for ScriptedListener {
    type Io = tokio::io::DuplexStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        match self.0.recv().await {
            Some(result) => result,
            None => std::future::pending().await,
        }
    }
}

#[tokio::test]
async fn accept_errors_do_not_stop_the_server_and_connections_are_bounded() {
    bounded("accept errors", async {
        let (feed, rx) = mpsc::unbounded_channel();
        let (builder, _) = service_builder();
        let (stop, server) = serve(
            Server::new(builder).max_connections(1),
            ScriptedListener(rx),
        );
        let dial = |feed: &mpsc::UnboundedSender<_>| {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            feed.send(Ok(theirs)).unwrap();
            Connection::builder().connect_stream(ours)
        };
        feed.send(Err(io::Error::other("too many open files")))
            .unwrap();
        let first = dial(&feed);
        let service: ServiceClient = first.root().await.unwrap();
        assert_eq!(
            service.add(1, 2).await.unwrap(),
            3,
            "served after an accept error"
        );

        // With one connection allowed, the second is not accepted until the first ends.
        let second = dial(&feed);
        let second_root =
            tokio::spawn(async move { second.root::<ServiceClient>().await.map(|s| (s, second)) });
        // Give the second peer many scheduling turns (ten round trips on the first).
        for _ in 0..10 {
            assert_eq!(service.add(1, 1).await.unwrap(), 2);
        }
        assert!(
            !second_root.is_finished(),
            "a second connection was served beyond the limit"
        );
        first.close().await;
        let (service, _second) = second_root.await.unwrap().unwrap();
        assert_eq!(service.add(2, 2).await.unwrap(), 4);

        stop.send(()).unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_user_supplied_sink_and_stream_carry_a_connection() {
    bounded("from_parts", async {
        // ioRPC-style pair: any send function and any receive stream.
        let (to_b, from_a) = mpsc::unbounded_channel::<bytes::Bytes>();
        let (to_a, from_b) = mpsc::unbounded_channel::<bytes::Bytes>();
        let sink = |tx: mpsc::UnboundedSender<bytes::Bytes>| {
            Box::pin(futures_util::sink::unfold(
                tx,
                |tx, frame: bytes::Bytes| async move {
                    tx.send(frame)
                        .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
                    Ok::<_, io::Error>(tx)
                },
            ))
        };
        let stream = |rx: mpsc::UnboundedReceiver<bytes::Bytes>| {
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            }))
        };
        let (builder, _) = service_builder();
        let _a = builder.connect(farcall::transport::from_parts(sink(to_b), stream(from_b)));
        let b = Connection::builder()
            .connect(farcall::transport::from_parts(sink(to_a), stream(from_a)));
        let service: ServiceClient = b.root().await.unwrap();
        assert_eq!(service.add(20, 22).await.unwrap(), 42);
    })
    .await;
}

#[tokio::test]
async fn silent_and_trickling_peers_cannot_lock_a_server_out() {
    bounded("silent peers", async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (builder, _) = service_builder();
        let builder = builder.handshake_timeout(std::time::Duration::from_secs(1));
        let (stop, server) = serve(Server::new(builder).max_connections(4), listener);
        // Every slot taken: three peers that send nothing, one that sends a byte
        // every 100 ms and so never completes its opening message.
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let trickler = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            for _ in 0..200 {
                if stream.write_all(&[0]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            false
        });
        // An honest client is served once the silent ones are closed.
        let conn = Connection::builder().connect_tcp(addr).await.unwrap();
        let service: ServiceClient = conn.root().await.unwrap();
        assert_eq!(service.add(1, 2).await.unwrap(), 3);
        assert!(trickler.await.unwrap(), "the trickling peer was closed");
        // The silent peers were closed by the server (they read the end of stream
        // after its `Abort`).
        for mut stream in silent {
            use tokio::io::AsyncReadExt;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            let text = String::from_utf8_lossy(&rest);
            assert!(text.contains("handshake timeout"), "got {text:?}");
        }
        stop.send(()).unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_even_while_a_handler_hangs() {
    bounded("shutdown", async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (builder, state) = service_builder();
        let builder = builder.drain_timeout(std::time::Duration::from_secs(3));
        let (stop, server) = serve(Server::new(builder), listener);
        let conn = Connection::builder().connect_tcp(addr).await.unwrap();
        let service: ServiceClient = conn.root().await.unwrap();
        let hanging = tokio::spawn({
            let service = service.clone();
            async move { service.wait_forever().await }
        });
        state.entered_forever.notified().await;
        let started = tokio::time::Instant::now();
        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_secs(3));
        // The caller learns why, and the handler was dropped.
        let err = hanging.await.unwrap().unwrap_err();
        assert!(
            matches!(
                &err,
                farcall::RpcError::Disconnected(farcall::CloseReason::PeerAborted(why))
                    if why.contains("drain deadline")
            ),
            "{err}"
        );
        state.dropped_forever.notified().await;
    })
    .await;
}

#[tokio::test]
async fn the_application_sees_each_connection_and_its_end() {
    bounded("on_connection", async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (builder, _) = service_builder();
        let (seen, mut accepted) = mpsc::unbounded_channel();
        let server = Server::new(builder)
            .max_connections(3)
            .on_connection(move |conn| {
                let _ = seen.send(conn.clone());
            });
        assert_eq!(server.connection_limit(), 3);
        let (stop, task) = serve(server, listener);
        let client = Connection::builder().connect_tcp(addr).await.unwrap();
        let service: ServiceClient = client.root().await.unwrap();
        assert_eq!(service.add(2, 3).await.unwrap(), 5);
        let conn = accepted.recv().await.unwrap();
        assert_eq!(service.connection_id().await.unwrap(), conn.id());
        assert!(conn.stats().await.unwrap().is_zero());
        client.close().await;
        conn.closed().await;
        assert_eq!(conn.close_reason(), Some(farcall::CloseReason::PeerClosed));
        stop.send(()).unwrap();
        task.await.unwrap();
    })
    .await;
}
