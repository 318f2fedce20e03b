//! farcall's Cap'n Web route outside an axum router: as a plain tower `Service`
//! (an HTTP batch answered through `oneshot`) and behind hyper's own HTTP/1 server
//! (a WebSocket session upgraded there, called by farcall's Cap'n Web client).

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::bounded;
use farcall::Connection;
use tower::ServiceExt;

#[farcall::remote]
pub trait Adder {
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct A;

impl Adder for A {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn service() -> axum::routing::MethodRouter {
    let builder = Connection::builder().root(AdderServer::new(A));
    farcall::capnweb::axum::routes::<()>(builder).with_state(())
}

#[tokio::test]
async fn an_http_batch_through_the_route_as_a_tower_service() {
    let body = "[\"push\",[\"pipeline\",0,[\"add\"],[40,2]]]\n[\"pull\",1]";
    let request = Request::builder()
        .method(Method::POST)
        .uri("/")
        .body(Body::from(body))
        .unwrap();
    let response = bounded("batch", service().oneshot(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = bounded("body", axum::body::to_bytes(response.into_body(), 1 << 20))
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"[\"resolve\",1,42]");
}

#[tokio::test]
async fn a_websocket_session_behind_hyper_s_own_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // One connection, served by hyper with the route as its service.
        let (stream, _) = listener.accept().await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let service = hyper_util::service::TowerToHyperService::new(service());
        hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await
    });
    let conn = bounded(
        "connect",
        farcall::capnweb::connect_websocket(&Connection::builder(), &format!("ws://{addr}/rpc")),
    )
    .await
    .unwrap();
    let adder: AdderClient = bounded("root", conn.root()).await.unwrap();
    assert_eq!(bounded("add", adder.add(2, 3)).await.unwrap(), 5);
    let calls: Vec<_> = (0..50).map(|i| adder.add(i, i)).collect();
    let sums = bounded("many", futures_util::future::join_all(calls)).await;
    for (i, sum) in sums.into_iter().enumerate() {
        assert_eq!(sum.unwrap(), 2 * i as i64);
    }
    drop(adder);
    conn.close().await;
    bounded("the server's connection ends", server)
        .await
        .unwrap()
        .unwrap();
}
