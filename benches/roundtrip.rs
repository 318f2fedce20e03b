//! Round trip of one small call, beside the raw transport doing the same exchange, so
//! the cost farcall adds is visible: `cargo bench --bench roundtrip`.
//!
//! - `mem/*`: one current-thread runtime; farcall over the memory transport versus a
//!   ping-pong of the same payload between two tasks over tokio mpsc channels.
//! - `tcp/*`: loopback TCP; farcall versus a raw length-delimited echo of a frame of
//!   the same size.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use farcall::Connection;
use futures_util::{SinkExt, StreamExt};
use tokio::runtime::Runtime;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[path = "shared/adder.rs"]
mod adder;

use adder::{Add, AdderClient, AdderServer};

/// About the size of an `add` call frame.
const PAYLOAD: usize = 16;

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn mem(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("mem");

    let adder: AdderClient = rt.block_on(async {
        let (a, b) = farcall::transport::memory();
        Connection::builder().root(AdderServer::new(Add)).connect(a);
        Connection::builder().connect(b).root().await.unwrap()
    });
    group.bench_function("farcall_add", |b| {
        b.to_async(&rt)
            .iter(|| async { adder.add(1, 2).await.unwrap() })
    });

    let (to_echo, mut echo_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let (echo_tx, from_echo) = tokio::sync::mpsc::channel::<Bytes>(1);
    rt.spawn(async move {
        while let Some(m) = echo_rx.recv().await {
            if echo_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let from_echo = tokio::sync::Mutex::new(from_echo);
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    group.bench_function("raw_mpsc_pingpong", |b| {
        b.to_async(&rt).iter(|| async {
            to_echo.send(payload.clone()).await.unwrap();
            from_echo.lock().await.recv().await.unwrap()
        })
    });
    group.finish();
}

fn tcp(c: &mut Criterion) {
    // Server and client each on their own runtime thread, as a real deployment.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = current_thread();
    let mut group = c.benchmark_group("tcp");

    let farcall_addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let builder = Connection::builder().root(AdderServer::new(Add));
        tokio::spawn(farcall::Server::new(builder).serve(listener, std::future::pending()));
        addr
    });
    let adder: AdderClient = client_rt.block_on(async {
        let conn = Connection::builder()
            .connect_tcp(farcall_addr)
            .await
            .unwrap();
        conn.root().await.unwrap()
    });
    group.bench_function("farcall_add", |b| {
        b.to_async(&client_rt)
            .iter(|| async { adder.add(1, 2).await.unwrap() })
    });

    let raw_addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
            while let Some(Ok(frame)) = framed.next().await {
                if framed.send(frame.freeze()).await.is_err() {
                    break;
                }
            }
        });
        addr
    });
    let framed = client_rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(raw_addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        tokio::sync::Mutex::new(Framed::new(stream, LengthDelimitedCodec::new()))
    });
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    group.bench_function("raw_echo", |b| {
        b.to_async(&client_rt).iter(|| async {
            let mut framed = framed.lock().await;
            framed.send(payload.clone()).await.unwrap();
            framed.next().await.unwrap().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, mem, tcp);
criterion_main!(benches);
