//! An [axum](https://docs.rs/axum) route serving Cap'n Web on one path: `GET`
//! upgrades to a WebSocket session (`newWebSocketRpcSession`), `POST` answers an
//! HTTP batch (`newHttpBatchRpcSession`). Feature `axum`.
//!
//! The route is a tower `Service` by itself (`routes::<()>(builder).with_state(())`),
//! so it also serves from a plain tower or hyper stack, without a router: for
//! hyper, wrap it in `hyper_util::service::TowerToHyperService` and serve the
//! connection `with_upgrades()` so WebSocket sessions can start.
//!
//! ```no_run
//! #[farcall::remote]
//! pub trait Greeter {
//!     async fn greet(&self, name: String) -> String;
//! }
//! struct Hello;
//! impl Greeter for Hello {
//!     async fn greet(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//! # async fn demo() -> std::io::Result<()> {
//! let builder = farcall::Connection::builder().root(GreeterServer::new(Hello));
//! let app = axum::Router::new().route("/rpc", farcall::capnweb::axum::routes(builder));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, MethodRouter};
use futures_util::{Sink, Stream};

use super::{batch, BATCH_TIMEOUT, MAX_MESSAGE_SIZE, READ_BUFFER_SIZE};
use crate::connection::Builder;

/// `GET` (a WebSocket session) and `POST` (an HTTP batch, answered within
/// [`BATCH_TIMEOUT`]) serving the builder's root, for one path of a router.
/// Requests and messages may be up to [`MAX_MESSAGE_SIZE`] bytes.
pub fn routes<S: Clone + Send + Sync + 'static>(builder: Builder) -> MethodRouter<S> {
    let for_batch = builder.clone();
    get(move |upgrade: WebSocketUpgrade| {
        let builder = builder.clone();
        async move {
            upgrade
                .max_message_size(MAX_MESSAGE_SIZE)
                .max_frame_size(MAX_MESSAGE_SIZE)
                .read_buffer_size(READ_BUFFER_SIZE)
                .on_upgrade(move |socket| async move {
                    let conn = super::connect(&builder, Texts(socket));
                    conn.closed().await;
                })
        }
    })
    .post(move |body: String| {
        let builder = for_batch.clone();
        async move { batch(&builder, &body, BATCH_TIMEOUT).await }
    })
    .layer(DefaultBodyLimit::max(MAX_MESSAGE_SIZE))
}

/// axum's WebSocket as a carrier of text messages.
struct Texts(WebSocket);

fn to_io(e: axum::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl Stream for Texts {
    type Item = std::io::Result<String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match std::task::ready!(Pin::new(&mut self.0).poll_next(cx)) {
                Some(Ok(Message::Text(text))) => Poll::Ready(Some(Ok(text.as_str().to_owned()))),
                Some(Ok(Message::Binary(_))) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a binary WebSocket message (Cap'n Web sends text)",
                )))),
                Some(Ok(Message::Close(_))) | None => Poll::Ready(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Poll::Ready(Some(Err(to_io(e)))),
            };
        }
    }
}

impl Sink<String> for Texts {
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(to_io)
    }

    fn start_send(mut self: Pin<&mut Self>, message: String) -> std::io::Result<()> {
        Pin::new(&mut self.0)
            .start_send(Message::Text(message.into()))
            .map_err(to_io)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(to_io)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(to_io)
    }
}
