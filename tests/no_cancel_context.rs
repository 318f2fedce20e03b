//! `#[farcall(no_cancel)]` handlers run in a task of their own, still inside their
//! call's context and tracing span.
//!
//! Alone in its own test binary: it installs a global tracing subscriber, which
//! would race with tests on other threads (tracing caches per call site whether
//! anyone listens).

mod common;

use common::{bounded, connect, Link};
use farcall::Connection;

#[farcall::remote]
pub trait Probe {
    /// After an await: the id of the connection the call came on (0 if the handler
    /// has no call context) and the name of the tracing span it runs in.
    #[farcall(no_cancel)]
    async fn whoami(&self) -> (u64, String);
}

struct ProbeImpl;

impl Probe for ProbeImpl {
    async fn whoami(&self) -> (u64, String) {
        tokio::task::yield_now().await;
        let id = farcall::CallContext::current().map_or(0, |cx| cx.connection().id());
        let span = tracing::Span::current()
            .metadata()
            .map_or("(none)", |m| m.name())
            .to_string();
        (id, span)
    }
}

#[tokio::test]
async fn no_cancel_handlers_keep_their_call_context_and_span() {
    // A subscriber that enables every span.
    tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
    bounded("whoami", async {
        let (server, client) = connect(
            Link::Memory,
            Default::default(),
            Connection::builder().root(ProbeServer::new(ProbeImpl)),
            Connection::builder(),
        )
        .await;
        let probe: ProbeClient = client.root().await.unwrap();
        let (id, span) = probe.whoami().await.unwrap();
        assert_eq!(id, server.id(), "the handler sees the connection it serves");
        assert_eq!(span, "farcall::call");
    })
    .await;
}
