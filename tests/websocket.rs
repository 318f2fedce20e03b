//! The WebSocket transport over loopback `ws://`: calls both ways through
//! `Server::serve_websocket`, the frame limit, close and text frames from a raw
//! peer, pings, and handshakes that stall or fail.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use farcall::transport::tokio_tungstenite::{self, tungstenite::Message};
use farcall::{AnyCodec, CloseReason, Connection, Server};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

async fn loopback() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn service_builder() -> (farcall::Builder, Arc<ServiceState>) {
    let imp = ServiceImpl::default();
    let state = imp.0.clone();
    (Connection::builder().root(ServiceServer::new(imp)), state)
}

/// A raw WebSocket client of `url`, speaking no farcall.
async fn raw_client(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Reads until the raw peer's stream ends, returning whether it saw a close frame.
async fn drain<S>(ws: &mut S) -> bool
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut saw_close = false;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(_)) => saw_close = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    saw_close
}

#[tokio::test]
async fn calls_both_ways_through_serve_websocket() {
    bounded("websocket calls", async {
        for &codec in AnyCodec::ALL {
            let (listener, url) = loopback().await;
            let (builder, state) = service_builder();
            let (stop, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(Server::new(builder.codec(codec)).serve_websocket(
                listener,
                async {
                    let _ = stopped.await;
                },
            ));

            let client = Connection::builder()
                .codec(codec)
                .root(PeerServer::new(PeerImpl))
                .connect_websocket(&url)
                .await
                .unwrap();
            let service: ServiceClient = client.root().await.unwrap();
            assert_eq!(service.add(2, 3).await.unwrap(), 5);
            assert_eq!(
                service
                    .checked_div(1, 0)
                    .await
                    .unwrap_err()
                    .into_app()
                    .unwrap(),
                MathError::DivisionByZero
            );
            // The server calls the client's root while serving the call.
            assert_eq!(service.call_back(21).await, Ok(42));
            service.record(7).unwrap();
            assert_eq!(service.log().await.unwrap(), vec![7]);
            assert_eq!(*state.log.lock().unwrap(), vec![7]);

            // Shutdown closes the connection gracefully and `serve_websocket` returns.
            let _ = stop.send(());
            server.await.unwrap();
            client.closed().await;
            assert!(service.add(1, 1).await.unwrap_err().is_disconnected());
        }
    })
    .await;
}

#[tokio::test]
async fn a_message_over_the_peers_frame_limit_is_refused_by_the_sender() {
    bounded("oversized message", async {
        let (listener, url) = loopback().await;
        let accept = async {
            let (stream, _) = listener.accept().await.unwrap();
            Connection::builder()
                .max_frame_size(1024)
                .root(ShapesServer::new(ShapesImpl))
                .accept_websocket(stream)
                .await
                .unwrap()
        };
        // The client's own limit is the default 16 MiB, but the server's opening
        // message told it the server accepts 1 KiB.
        let client = Connection::builder();
        let (server, client) = tokio::join!(accept, client.connect_websocket(&url));
        let client = client.unwrap();
        let shapes: ShapesClient = client.root().await.unwrap();
        assert_eq!(shapes.string("ok".into()).await.unwrap(), "ko");

        let err = shapes.string("x".repeat(4096)).await.unwrap_err();
        assert!(
            matches!(err, farcall::RpcError::FrameTooLarge { limit: 1024, .. }),
            "{err:?}"
        );
        assert_eq!(shapes.string("ok".into()).await.unwrap(), "ko");
        assert!(!server.is_closed());
    })
    .await;
}

#[tokio::test]
async fn an_announced_huge_message_is_refused_before_its_payload() {
    bounded("huge frame header", async {
        let (listener, _url) = loopback().await;
        let addr = listener.local_addr().unwrap();
        let accept = async {
            let (stream, _) = listener.accept().await.unwrap();
            Connection::builder()
                .max_frame_size(1 << 20)
                .accept_websocket(stream)
                .await
                .unwrap()
        };
        let peer = async {
            // The upgrade by hand, then a frame header announcing 1 GiB and no payload.
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
            let mut response = Vec::new();
            while !response.ends_with(b"\r\n\r\n") {
                response.push(tcp.read_u8().await.unwrap());
            }
            assert!(response.starts_with(b"HTTP/1.1 101"), "{response:?}");
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&(1u64 << 30).to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]); // mask
            tcp.write_all(&header).await.unwrap();
            tcp
        };
        let (server, _tcp) = tokio::join!(accept, peer);
        // The connection ends on the header alone: nothing waits for (or allocates)
        // the gigabyte.
        server.closed().await;
        let reason = server.close_reason().unwrap();
        assert!(
            matches!(&reason, CloseReason::Transport(why)
                if why.contains("exceeds max_frame_size (1048576 bytes)")),
            "reason: {reason}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_close_frame_from_the_peer_fails_pending_calls() {
    bounded("close frame", async {
        let (listener, url) = loopback().await;
        let raw_server = async {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            // The client's bootstrap question arrives; close instead of answering.
            let first = ws.next().await.unwrap().unwrap();
            assert!(matches!(first, Message::Binary(_)), "{first:?}");
            ws.close(None).await.unwrap();
            // farcall answers the close frame before hanging up.
            assert!(drain(&mut ws).await, "no close reply");
        };
        let client = async {
            let client = Connection::builder().connect_websocket(&url).await.unwrap();
            let err = client.root::<ServiceClient>().await.unwrap_err();
            assert!(err.is_disconnected(), "{err:?}");
            assert_eq!(client.close_reason(), Some(CloseReason::PeerClosed));
        };
        tokio::join!(raw_server, client);
    })
    .await;
}

#[tokio::test]
async fn a_text_message_ends_the_connection() {
    bounded("text message", async {
        let (listener, url) = loopback().await;
        let accept = async {
            let (stream, _) = listener.accept().await.unwrap();
            let (builder, _) = service_builder();
            builder.accept_websocket(stream).await.unwrap()
        };
        let (server, mut ws) = tokio::join!(accept, raw_client(&url));
        ws.send(Message::text("hello")).await.unwrap();
        server.closed().await;
        let reason = server.close_reason().unwrap();
        assert!(
            matches!(&reason, CloseReason::Transport(why) if why.contains("text message")),
            "reason: {reason}"
        );
        // The raw peer sees the connection end.
        drain(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn pings_are_answered() {
    bounded("ping", async {
        let (listener, url) = loopback().await;
        let accept = async {
            let (stream, _) = listener.accept().await.unwrap();
            let (builder, _) = service_builder();
            builder.accept_websocket(stream).await.unwrap()
        };
        let (server, mut ws) = tokio::join!(accept, raw_client(&url));
        ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        // The server's opening message (binary) may come first.
        let mut reply = ws.next().await.unwrap().unwrap();
        if reply.is_binary() {
            reply = ws.next().await.unwrap().unwrap();
        }
        assert_eq!(
            reply,
            Message::Pong(bytes::Bytes::from_static(b"are you there"))
        );
        assert!(!server.is_closed());
        // A pong is ignored too.
        ws.send(Message::Pong(bytes::Bytes::new())).await.unwrap();
        ws.close(None).await.unwrap();
        server.closed().await;
        assert_eq!(server.close_reason(), Some(CloseReason::PeerClosed));
    })
    .await;
}

#[tokio::test]
async fn a_stalled_handshake_holds_up_no_other_client() {
    bounded("stalled handshake", async {
        let (listener, url) = loopback().await;
        let addr = listener.local_addr().unwrap();
        let (builder, _) = service_builder();
        let (stop, stopped) = oneshot::channel::<()>();
        // The handshake limit is far beyond the test's own bound.
        let server = tokio::spawn(
            Server::new(builder.handshake_timeout(Duration::from_secs(600)))
                .max_connections(4)
                .serve_websocket(listener, async {
                    let _ = stopped.await;
                }),
        );
        let _silent = TcpStream::connect(addr).await.unwrap();
        let client = Connection::builder().connect_websocket(&url).await.unwrap();
        let service: ServiceClient = client.root().await.unwrap();
        assert_eq!(service.add(1, 2).await.unwrap(), 3);
        let _ = stop.send(());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn stalled_and_failed_handshakes_give_their_slot_back() {
    bounded("handshake timeout", async {
        let (listener, url) = loopback().await;
        let addr = listener.local_addr().unwrap();
        let (builder, _) = service_builder();
        let (stop, stopped) = oneshot::channel::<()>();
        // One slot: each peer below waits for the one before it to let go.
        let server = tokio::spawn(
            Server::new(builder.handshake_timeout(Duration::from_millis(200)))
                .max_connections(1)
                .serve_websocket(listener, async {
                    let _ = stopped.await;
                }),
        );
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage
            .write_all(b"this is not HTTP\r\n\r\n")
            .await
            .unwrap();
        let client = Connection::builder().connect_websocket(&url).await.unwrap();
        let service: ServiceClient = client.root().await.unwrap();
        assert_eq!(service.add(1, 2).await.unwrap(), 3);
        // The silent peer was dropped when its handshake timed out.
        let mut buf = [0u8; 64];
        assert!(matches!(silent.read(&mut buf).await, Ok(0) | Err(_)));
        let _ = stop.send(());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn connect_websocket_refuses_other_schemes() {
    let err = Connection::builder()
        .connect_websocket("wss://127.0.0.1:1/")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("ws://"), "{err}");
}
