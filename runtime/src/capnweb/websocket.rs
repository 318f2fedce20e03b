//! Cap'n Web over WebSocket: one text message per Cap'n Web message.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{MAX_MESSAGE_SIZE, READ_BUFFER_SIZE};
use crate::connection::{Builder, Connection};

/// Serves the builder's root to a Cap'n Web client over an accepted byte stream:
/// runs the WebSocket upgrade (within the builder's handshake timeout), then
/// [`websocket`]. `Server::serve_capnweb` does this for every client of a listener.
pub async fn accept_websocket<S>(builder: &Builder, io: S) -> io::Result<Connection>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = session_websocket_config();
    let accepting = tokio_tungstenite::accept_async_with_config(io, Some(config));
    let limit = builder.current_config().handshake_timeout;
    let ws = match tokio::time::timeout(limit, accepting).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return Err(io::Error::other(format!("websocket upgrade failed: {e}"))),
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("websocket upgrade took longer than {limit:?}"),
            ))
        }
    };
    Ok(websocket(builder, ws))
}

/// Starts a Cap'n Web session over an established WebSocket, either end: serves the
/// builder's root to the peer (`newWebSocketRpcSession` on the JavaScript side), and
/// [`Connection::root`] gives the peer's main object.
pub fn websocket<S>(builder: &Builder, ws: WebSocketStream<S>) -> Connection
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    super::connect(builder, Texts(ws))
}

/// Connects to a Cap'n Web server at `url` (`ws://` only) as a client: a JavaScript
/// server of the npm `capnweb` package (`newWebSocketRpcSession(webSocket, new
/// MyTarget())`), or any other speaking the protocol.
///
/// [`Connection::root`] then gives the server's main object as any client type: its
/// methods are called by name, with positional arguments. The builder's root, if
/// it has one, is offered to the server as this side's main object. Connecting and
/// the upgrade must finish within the builder's handshake timeout; messages are
/// limited to [`MAX_MESSAGE_SIZE`].
///
/// ```no_run
/// #[farcall::remote]
/// pub trait Greeter {
///     async fn greet(&self, name: String) -> String;
/// }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let builder = farcall::Connection::builder();
/// let conn = farcall::capnweb::connect_websocket(&builder, "ws://127.0.0.1:8080").await?;
/// let greeter: GreeterClient = conn.root().await?;
/// // Calls `greet("you")` on the JavaScript server's `RpcTarget`.
/// assert_eq!(greeter.greet("you".into()).await?, "Hello, you!");
/// # Ok(()) }
/// ```
pub async fn connect_websocket(builder: &Builder, url: &str) -> io::Result<Connection> {
    let limit = builder.current_config().handshake_timeout;
    let ws =
        crate::transport::websocket::connect_stream(url, session_websocket_config(), limit).await?;
    Ok(websocket(builder, ws))
}

/// The WebSocket settings of a session: its message limit, small reads.
fn session_websocket_config() -> WebSocketConfig {
    crate::transport::websocket_config(MAX_MESSAGE_SIZE).read_buffer_size(READ_BUFFER_SIZE)
}

/// A WebSocket as a carrier of text messages.
struct Texts<S>(WebSocketStream<S>);

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Texts<S> {
    type Item = io::Result<String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match std::task::ready!(Pin::new(&mut self.0).poll_next(cx)) {
                Some(Ok(Message::Text(text))) => Poll::Ready(Some(Ok(text.as_str().to_owned()))),
                Some(Ok(Message::Binary(_))) => Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a binary WebSocket message (Cap'n Web sends text)",
                )))),
                Some(Ok(Message::Close(_))) | None => Poll::Ready(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Poll::Ready(Some(Err(to_io(e)))),
            };
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<String> for Texts<S> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(to_io)
    }

    fn start_send(mut self: Pin<&mut Self>, message: String) -> io::Result<()> {
        Pin::new(&mut self.0)
            .start_send(Message::Text(message.into()))
            .map_err(to_io)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(to_io)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(to_io)
    }
}
