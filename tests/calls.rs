//! Calls over every codec and link: argument shapes, errors, ordering, concurrency,
//! callbacks into the caller, and failures that must never hang.

mod common;

use std::collections::HashMap;

use common::*;
use farcall::{CallError, Connection, RpcError};
use futures_util::future::join_all;

#[tokio::test]
async fn every_argument_shape_round_trips() {
    for (codec, link) in setups() {
        bounded("shapes", async {
            let (_server, client) = connect(
                link,
                codec,
                Connection::builder().root(ShapesServer::new(ShapesImpl)),
                Connection::builder(),
            )
            .await;
            let s: ShapesClient = client.root().await.unwrap();
            let ctx = format!("{codec:?}/{link:?}");
            s.unit().await.unwrap();
            assert_eq!(s.no_args().await.unwrap(), 42, "{ctx}");
            let prims = (255u8, i64::MIN, 1.5f64, true, 'λ');
            assert_eq!(
                s.prims(prims.0, prims.1, prims.2, prims.3, prims.4)
                    .await
                    .unwrap(),
                prims
            );
            assert_eq!(s.string("héllo".into()).await.unwrap(), "olléh");
            assert_eq!(s.vec(vec![1, 2, 3]).await.unwrap(), vec![2, 4, 6]);
            let map = HashMap::from([("a".to_string(), 1u64), ("b".to_string(), u64::MAX)]);
            let mut expected = map.clone();
            expected.insert("added".into(), 1);
            assert_eq!(s.map(map).await.unwrap(), expected);
            assert_eq!(s.option(None).await.unwrap(), None);
            assert_eq!(s.option(Some("x".into())).await.unwrap(), Some("x!".into()));
            let nested = Nested {
                name: "root".into(),
                tags: vec!["t".into()],
                kind: Kind::Point { x: -1, y: 2 },
                child: Some(Box::new(Nested {
                    name: "leaf".into(),
                    tags: vec![],
                    kind: Kind::Weighted(7),
                    child: None,
                })),
            };
            let mut seen = nested.clone();
            seen.tags.push("seen".into());
            assert_eq!(s.nested(nested).await.unwrap(), seen);
            let blob = bytes::Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>());
            assert_eq!(s.bytes(blob.clone()).await.unwrap(), blob);
            assert_eq!(
                s.many(1, 2, 3, 4, "five".into(), vec![0; 6]).await.unwrap(),
                20
            );
        })
        .await;
    }
}

#[tokio::test]
async fn application_errors_are_typed_and_distinct_from_rpc_errors() {
    for (codec, link) in setups() {
        bounded("app errors", async {
            let f = fixture(link, codec).await;
            assert_eq!(f.service.checked_div(9, 3).await, Ok(3));
            let err = f.service.checked_div(1, 0).await.unwrap_err();
            assert_eq!(err, CallError::App(MathError::DivisionByZero));
            assert_eq!(err.app(), Some(&MathError::DivisionByZero));
            assert!(err.rpc().is_none());
            // `?` passes RPC failures up and keeps the application error in hand.
            async fn app_error(f: &Fixture) -> Result<MathError, RpcError> {
                f.service.checked_div(1, 0).await.unwrap_err().into_app()
            }
            assert_eq!(app_error(&f).await, Ok(MathError::DivisionByZero));
            // And into a boxed error when `E: Error`.
            async fn boxed(f: &Fixture) -> Result<u64, Box<dyn std::error::Error>> {
                Ok(f.service.checked_div(1, 0).await?)
            }
            assert_eq!(boxed(&f).await.unwrap_err().to_string(), "DivisionByZero");
        })
        .await;
    }
}

#[tokio::test]
async fn oneway_and_calls_arrive_in_send_order() {
    for (codec, link) in setups() {
        bounded("ordering", async {
            let f = fixture(link, codec).await;
            let mut pending = Vec::new();
            for i in 0..200u32 {
                if i % 3 == 0 {
                    pending.push(f.service.record_call(i));
                } else {
                    f.service.record(i).unwrap();
                }
            }
            // The log is read after everything sent before it, without awaiting those.
            let log = f.service.log().await.unwrap();
            assert_eq!(log, (0..200).collect::<Vec<_>>(), "{codec:?}/{link:?}");
            for r in join_all(pending).await {
                r.unwrap();
            }
        })
        .await;
    }
}

#[tokio::test]
async fn a_handler_can_call_back_into_the_caller() {
    for (codec, link) in setups() {
        bounded("bidirectional", async {
            let f = fixture(link, codec).await;
            assert_eq!(f.service.call_back(21).await, Ok(42));
            assert_eq!(f.service.connection_id().await.unwrap(), f.server.id());
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_complete() {
    for (codec, link) in setups() {
        bounded("1000 calls", async {
            let f = fixture(link, codec).await;
            let calls = (0..1000u64).map(|i| {
                let s = f.service.clone();
                tokio::spawn(async move { s.add(i, 1).await })
            });
            let results: Vec<u64> = join_all(calls)
                .await
                .into_iter()
                .map(|r| r.unwrap().unwrap())
                .collect();
            assert_eq!(results, (1..=1000).collect::<Vec<_>>());
        })
        .await;
    }
}

#[tokio::test]
async fn a_slow_handler_does_not_block_a_fast_one() {
    for (codec, link) in setups() {
        bounded("slow and fast", async {
            let f = fixture(link, codec).await;
            let slow = tokio::spawn({
                let s = f.service.clone();
                async move { s.slow().await }
            });
            f.state.entered_slow.notified().await;
            // The slow call is in its handler; a fast one still completes.
            assert_eq!(f.service.add(1, 2).await.unwrap(), 3);
            assert!(!slow.is_finished());
            f.state.gate.notify_one();
            assert_eq!(slow.await.unwrap().unwrap(), "slow done");
        })
        .await;
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_call() {
    for (codec, link) in setups() {
        bounded("panic", async {
            let f = fixture(link, codec).await;
            let err = f.service.panic("boom".into()).await.unwrap_err();
            assert_eq!(err, RpcError::RemotePanic(Some("boom".into())));
            assert!(err.to_string().contains("boom"));
            assert_eq!(f.service.add(2, 2).await.unwrap(), 4);
        })
        .await;
    }
}

#[tokio::test]
async fn panic_messages_can_be_redacted() {
    let f = fixture_with(
        Link::Memory,
        Default::default(),
        Connection::builder().expose_panics(false),
        Connection::builder(),
    )
    .await;
    let err = bounded("redacted", f.service.panic("secret".into()))
        .await
        .unwrap_err();
    assert_eq!(err, RpcError::RemotePanic(None));
    assert!(!err.to_string().contains("secret"));
}

mod v1 {
    #[farcall::remote]
    pub trait Api {
        async fn old(&self) -> u32;
    }
}

#[allow(dead_code)]
mod v2 {
    #[farcall::remote]
    pub trait Api {
        async fn old(&self) -> u32;
        async fn added_later(&self, x: u32) -> u32;
    }
}

struct OldApi;

impl v1::Api for OldApi {
    async fn old(&self) -> u32 {
        1
    }
}

#[tokio::test]
async fn calling_a_method_an_older_peer_lacks_is_a_clear_error() {
    for (codec, link) in setups() {
        bounded("unknown method", async {
            let (_server, client) = connect(
                link,
                codec,
                Connection::builder().root(v1::ApiServer::new(OldApi)),
                Connection::builder(),
            )
            .await;
            // Same trait name, another version: accepted at bootstrap.
            let api: v2::ApiClient = client.root().await.unwrap();
            assert_eq!(api.old().await.unwrap(), 1);
            let err = api.added_later(5).await.unwrap_err();
            assert_eq!(
                err,
                RpcError::MethodNotFound {
                    interface: "Api",
                    method: "added_later"
                }
            );
            assert_eq!(
                err.to_string(),
                "method `added_later` not found on the peer's `Api`"
            );
            assert_eq!(api.old().await.unwrap(), 1, "the connection lives on");
        })
        .await;
    }
}

#[tokio::test]
async fn asking_for_the_wrong_root_names_both_interfaces() {
    for (codec, link) in setups() {
        bounded("wrong root", async {
            let f = fixture(link, codec).await;
            let err = f.client.root::<PeerClient>().await.unwrap_err();
            assert_eq!(
                err,
                RpcError::WrongInterface {
                    expected: "Peer".into(),
                    found: "Service".into()
                }
            );
            let message = err.to_string();
            assert!(
                message.contains("Peer") && message.contains("Service"),
                "{message}"
            );
            // The server asks the client, which offers `Peer`, for a `Service`.
            let err = f.server.root::<ServiceClient>().await.unwrap_err();
            assert!(matches!(err, RpcError::WrongInterface { .. }), "{err}");
        })
        .await;
    }
}

#[tokio::test]
async fn asking_a_peer_without_root_says_so() {
    let (a, b) = farcall::transport::memory();
    let _a = Connection::builder().connect(a);
    let b = Connection::builder().connect(b);
    let err = bounded("no root", b.root::<PeerClient>())
        .await
        .unwrap_err();
    assert_eq!(err, RpcError::NoRoot);
}

#[tokio::test]
async fn pending_calls_fail_on_both_sides_when_a_peer_goes_away() {
    for (codec, link) in setups() {
        bounded("peer drops mid-call", async {
            // Both sides serve a `Service`, and each has a call waiting in the other.
            let (imp_a, imp_b) = (ServiceImpl::default(), ServiceImpl::default());
            let (state_a, state_b) = (imp_a.0.clone(), imp_b.0.clone());
            let (a, b) = connect(
                link,
                codec,
                Connection::builder().root(ServiceServer::new(imp_a)),
                Connection::builder().root(ServiceServer::new(imp_b)),
            )
            .await;
            let a_calls_b: ServiceClient = a.root().await.unwrap();
            let b_calls_a: ServiceClient = b.root().await.unwrap();
            let from_a = tokio::spawn({
                let s = a_calls_b.clone();
                async move { s.wait_forever().await }
            });
            let from_b = tokio::spawn({
                let s = b_calls_a.clone();
                async move { s.wait_forever().await }
            });
            state_a.entered_forever.notified().await;
            state_b.entered_forever.notified().await;

            a.abort().await;
            let err = from_a.await.unwrap().unwrap_err();
            assert!(is_disconnected(&err), "{err}");
            assert!(err.to_string().contains("aborted locally"), "{err}");
            let err = from_b.await.unwrap().unwrap_err();
            assert!(is_disconnected(&err), "{err}");
            b.closed().await;
            // Both handlers' futures were dropped.
            state_a.dropped_forever.notified().await;
            state_b.dropped_forever.notified().await;
            // New calls fail at once, with the reason.
            let err = a_calls_b.add(1, 1).await.unwrap_err();
            assert!(is_disconnected(&err), "{err}");
            let err = b_calls_a.add(1, 1).await.unwrap_err();
            assert!(is_disconnected(&err), "{err}");
        })
        .await;
    }
}

#[tokio::test]
async fn the_server_going_away_fails_the_clients_pending_calls() {
    for (codec, link) in setups() {
        bounded("server drops mid-call", async {
            let f = fixture(link, codec).await;
            let pending = tokio::spawn({
                let s = f.service.clone();
                async move { s.wait_forever().await }
            });
            f.state.entered_forever.notified().await;
            f.server.abort().await;
            let err = pending.await.unwrap().unwrap_err();
            assert!(is_disconnected(&err), "{err}");
            assert!(
                err.to_string().contains("peer aborted") || err.to_string().contains("closed"),
                "{err}"
            );
            f.client.closed().await;
            assert!(f.client.is_closed());
        })
        .await;
    }
}

#[tokio::test]
async fn an_oversized_call_fails_locally_and_the_connection_lives() {
    for (codec, link) in setups() {
        bounded("frame too large", async {
            let f = fixture_with(
                link,
                codec,
                Connection::builder(),
                Connection::builder().max_frame_size(1024),
            )
            .await;
            let err = f.service.checked_div(1, 0).await.unwrap_err();
            assert!(err.app().is_some());
            let (_server, client) = connect(
                link,
                codec,
                Connection::builder().root(ShapesServer::new(ShapesImpl)),
                Connection::builder().max_frame_size(1024),
            )
            .await;
            let shapes: ShapesClient = client.root().await.unwrap();
            let err = shapes.string("x".repeat(2000)).await.unwrap_err();
            assert!(
                matches!(err, RpcError::FrameTooLarge { limit: 1024, .. }),
                "{err}"
            );
            assert_eq!(shapes.no_args().await.unwrap(), 42);
            // A result over the limit is refused by the server, not sent.
            let err = shapes.vec(vec![u32::MAX; 1000]).await.unwrap_err();
            assert!(matches!(err, RpcError::FrameTooLarge { .. }), "{err}");
        })
        .await;
    }
}

#[tokio::test]
async fn a_call_too_large_for_the_peer_fails_locally_and_the_connection_lives() {
    for (codec, link) in setups() {
        bounded("too large for the peer", async {
            let (server, client) = connect(
                link,
                codec,
                Connection::builder()
                    .root(ShapesServer::new(ShapesImpl))
                    .max_frame_size(1024),
                Connection::builder(),
            )
            .await;
            let shapes: ShapesClient = client.root().await.unwrap();
            // The peer's opening message told us its limit.
            let err = shapes.string("x".repeat(4096)).await.unwrap_err();
            assert!(
                matches!(err, RpcError::FrameTooLarge { limit: 1024, .. }),
                "{codec:?} over {link:?}: {err}"
            );
            assert_eq!(shapes.string("ok".into()).await.unwrap(), "ko");
            assert!(!server.is_closed() && !client.is_closed());
        })
        .await;
    }
}

#[tokio::test]
async fn graceful_close_lets_running_calls_finish() {
    for (codec, link) in setups() {
        bounded("graceful close", async {
            let f = fixture(link, codec).await;
            let slow = tokio::spawn({
                let s = f.service.clone();
                async move { s.slow().await }
            });
            f.state.entered_slow.notified().await;
            let closing = tokio::spawn(f.server.close());
            // New calls are refused while the running one finishes.
            let err = f.service.add(1, 1).await.unwrap_err();
            assert!(
                matches!(err, RpcError::Closing) || is_disconnected(&err),
                "{err}"
            );
            f.state.gate.notify_one();
            assert_eq!(slow.await.unwrap().unwrap(), "slow done");
            closing.await.unwrap();
            f.client.closed().await;
        })
        .await;
    }
}

#[tokio::test]
async fn dropping_a_call_future_cancels_the_handler() {
    let f = fixture(Link::Memory, Default::default()).await;
    let call = f.service.wait_forever();
    let waiting = tokio::spawn(call);
    bounded("entered", f.state.entered_forever.notified()).await;
    waiting.abort();
    bounded("handler dropped", f.state.dropped_forever.notified()).await;
    assert_eq!(
        bounded("still serving", f.service.add(3, 4)).await.unwrap(),
        7
    );
}

#[tokio::test]
async fn a_connection_nobody_uses_closes_itself() {
    bounded("unused connection", async {
        let imp = ServiceImpl::default();
        let (server, client) = connect(
            Link::Tcp,
            Default::default(),
            Connection::builder().root(ServiceServer::new(imp)),
            Connection::builder(),
        )
        .await;
        let service: ServiceClient = client.root().await.unwrap();
        drop(client);
        // The client handle is enough to keep it in use.
        assert_eq!(service.add(2, 2).await, Ok(4));
        assert!(!server.is_closed());
        drop(service);
        // Nothing on the client side can use it, and it offers nothing: it closes.
        server.closed().await;
        assert_eq!(
            server.close_reason(),
            Some(farcall::CloseReason::PeerClosed)
        );
    })
    .await;
}

#[tokio::test]
async fn a_connection_that_serves_a_root_stays_open_without_handles() {
    bounded("served connection", async {
        let (a, b) = farcall::transport::memory();
        drop(
            Connection::builder()
                .root(PeerServer::new(PeerImpl))
                .connect(a),
        );
        let client = Connection::builder().connect(b);
        let peer: PeerClient = client.root().await.unwrap();
        assert_eq!(peer.double(21).await, Ok(42));
    })
    .await;
}

#[tokio::test]
async fn stats_count_no_root_and_fail_with_the_reason_once_ended() {
    let f = fixture(Link::Memory, Default::default()).await;
    // The client holds the server's root; neither side counts it.
    assert_eq!(
        f.client.stats().await.unwrap(),
        farcall::Stats::new(0, 0, 0, 0)
    );
    assert!(f.server.stats().await.unwrap().is_zero());
    bounded("close", f.client.close()).await;
    let err = f.client.stats().await.unwrap_err();
    assert!(
        matches!(
            &err,
            RpcError::Disconnected(farcall::CloseReason::ClosedLocally)
        ),
        "{err}"
    );
}

mod sig_v1 {
    #[farcall::remote]
    pub trait Api {
        async fn get(&self, key: u32) -> u32;
        async fn same(&self, x: u64) -> u64;
    }
}

/// Only the client side of this version is used.
#[allow(dead_code)]
mod sig_v2 {
    #[farcall::remote]
    pub trait Api {
        /// The argument's type changed between the two builds.
        async fn get(&self, key: String) -> u32;
        async fn same(&self, x: u64) -> u64;
        async fn added(&self) -> u32;
    }
}

struct ApiV1;

impl sig_v1::Api for ApiV1 {
    async fn get(&self, key: u32) -> u32 {
        key
    }
    async fn same(&self, x: u64) -> u64 {
        x + 1
    }
}

#[tokio::test]
async fn a_method_whose_types_changed_between_builds_says_so() {
    for (codec, link) in setups() {
        let (_server, client) = connect(
            link,
            codec,
            Connection::builder().root(sig_v1::ApiServer::new(ApiV1)),
            Connection::builder(),
        )
        .await;
        // Same trait name, another version: accepted at bootstrap.
        let api: sig_v2::ApiClient = bounded("root", client.root()).await.unwrap();
        assert_eq!(
            api.get("k".into()).await,
            Err(RpcError::SignatureMismatch {
                interface: "Api",
                method: "get"
            }),
            "{codec:?} over {link:?}"
        );
        let err = api.get("k".into()).await.unwrap_err().to_string();
        assert!(
            err.contains("`Api::get`") && err.contains("signature"),
            "{err}"
        );
        assert_eq!(api.same(1).await, Ok(2), "unchanged methods still work");
        assert!(matches!(
            api.added().await,
            Err(RpcError::MethodNotFound {
                method: "added",
                ..
            })
        ));
    }
}
