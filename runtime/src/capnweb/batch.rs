//! HTTP batch: one POST carries a session's messages, one per line, and the response
//! carries the server's.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};

use super::transport::OnEnd;
use crate::connection::Builder;

/// How long [`batch`] waits for the results a request pulled.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers one HTTP batch request of a Cap'n Web client (`newHttpBatchRpcSession`):
/// `body` is the POST body, the messages of a whole session separated by newlines;
/// the result is the response body, the server's messages likewise.
///
/// Each request is a fresh session serving the builder's root. It ends once every
/// result the request pulled has been sent, or when `timeout` passes (the results
/// sent by then are returned), or when the request breaks the protocol (the
/// response then ends with an `["abort", ...]` saying why). Calls still running are
/// then dropped, and everything the session exported is released.
///
/// ```
/// #[farcall::remote]
/// pub trait Adder {
///     async fn add(&self, a: i32, b: i32) -> i32;
/// }
/// struct A;
/// impl Adder for A {
///     async fn add(&self, a: i32, b: i32) -> i32 {
///         a + b
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let builder = farcall::Connection::builder().root(AdderServer::new(A));
/// let request = "[\"push\",[\"pipeline\",0,[\"add\"],[1,2]]]\n[\"pull\",1]";
/// let response = farcall::capnweb::batch(&builder, request, farcall::capnweb::BATCH_TIMEOUT).await;
/// assert_eq!(response, "[\"resolve\",1,3]");
/// # }
/// ```
pub async fn batch(builder: &Builder, body: &str, timeout: Duration) -> String {
    let lines: VecDeque<String> = body
        .split('\n')
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (done, mut settled) = tokio::sync::watch::channel(false);
    let carrier = Lines {
        lines,
        sent: sent.clone(),
        closed: done.clone(),
    };
    let conn = super::start(builder, carrier, OnEnd::Settle(done));
    let _ = tokio::time::timeout(timeout, settled.wait_for(|done| *done)).await;
    let body = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner())).join("\n");
    // Ends the session now: nothing more can reach this client.
    drop(conn.abort());
    body
}

/// The request's lines in, the response's lines out.
struct Lines {
    lines: VecDeque<String>,
    sent: Arc<Mutex<Vec<String>>>,
    /// Set when the session closes the carrier (after an abort, say).
    closed: tokio::sync::watch::Sender<bool>,
}

impl Stream for Lines {
    type Item = io::Result<String>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().lines.pop_front().map(Ok))
    }
}

impl Sink<String> for Lines {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: String) -> io::Result<()> {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.closed.send_replace(true);
        Poll::Ready(Ok(()))
    }
}
