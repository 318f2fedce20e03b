//! A hostile producer, written against the runtime's internals: one that sends more
//! than its credit gets its connection closed as a protocol violation.

use bytes::Bytes;
use futures_util::StreamExt;

use super::{CapArg, Stream, ITEMS, SOURCE, START};
use crate::cap::{decode_message, Client, Dispatch, Handler, Incoming, Reply};
use crate::interface::Interface;
use crate::{CloseReason, Connection, RpcError};

#[crate::remote]
trait Cheats {
    async fn get(&self) -> Stream<Bytes>;
}

struct C;

impl Cheats for C {
    async fn get(&self) -> Stream<Bytes> {
        Stream::from_client(Client::from_local(Cheat))
    }
}

/// A source that ignores the credit it is given.
struct Cheat;

impl Dispatch for Cheat {
    fn interface(&self) -> &'static Interface {
        &SOURCE
    }

    fn dispatch(&self, call: Incoming) -> Handler {
        if call.method == START.id {
            let (CapArg(sink), window) =
                decode_message::<(CapArg, u64)>(call.codec, &call.payload, call.caps).unwrap();
            // Twice the window in one go, in items of a quarter of it each.
            let item = Bytes::from(vec![0u8; window as usize / 4]);
            let batch = vec![item; 8];
            sink.send(ITEMS, &(batch, false)).unwrap();
        }
        Box::pin(std::future::ready(Reply::none()))
    }
}

#[tokio::test]
async fn a_producer_exceeding_its_credit_loses_the_connection() {
    let (a, b) = crate::transport::memory();
    let server = Connection::builder().root(CheatsServer::new(C)).connect(a);
    let client = Connection::builder().connect(b);
    let cheats: CheatsClient = client.root().await.unwrap();
    let mut stream = cheats.get().await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("ended normally"),
            }
        }
    })
    .await
    .expect("the stream ends");
    let RpcError::Disconnected(CloseReason::ProtocolViolation(why)) = ended else {
        panic!("{ended:?}");
    };
    assert!(why.contains("credit"), "{why}");
    tokio::time::timeout(std::time::Duration::from_secs(10), server.closed())
        .await
        .expect("the cheater is disconnected");
    assert!(matches!(
        client.close_reason(),
        Some(CloseReason::ProtocolViolation(_))
    ));
    assert!(matches!(
        server.close_reason(),
        Some(CloseReason::PeerAborted(why)) if why.contains("credit")
    ));
}
