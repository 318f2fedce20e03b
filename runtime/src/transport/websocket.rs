//! WebSocket: one farcall frame per binary message (feature `websocket`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A [`Transport`](super::Transport) over a WebSocket; see [`websocket`].
///
/// Each farcall frame travels as one binary message. Pings are answered (by
/// tungstenite, as the connection keeps reading), pongs are ignored, a text message
/// is a protocol error that ends the connection, and a close frame from the peer ends
/// it like any transport close.
#[derive(Debug)]
pub struct WebSocket<S> {
    inner: WebSocketStream<S>,
    /// The peer sent a close frame: the stream is over.
    ended: bool,
}

/// Wraps an established WebSocket into a frame transport.
///
/// Incoming messages are limited by the stream's own [`WebSocketConfig`]: make it
/// with [`websocket_config`] so oversized messages are refused before they are
/// allocated. [`Builder::connect_websocket`](crate::Builder::connect_websocket) and
/// [`Builder::accept_websocket`](crate::Builder::accept_websocket) do so.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use farcall::transport::{tokio_tungstenite, websocket, websocket_config};
///
/// let config = websocket_config(1 << 20);
/// let (ws, _response) =
///     tokio_tungstenite::connect_async_with_config("ws://127.0.0.1:7070", Some(config), true)
///         .await?;
/// let connection = farcall::Connection::builder()
///     .max_frame_size(1 << 20)
///     .connect(websocket(ws));
/// # drop(connection); Ok(()) }
/// ```
pub fn websocket<S>(ws: WebSocketStream<S>) -> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    WebSocket {
        inner: ws,
        ended: false,
    }
}

/// A tungstenite configuration whose largest incoming message and frame are
/// `max_frame_size` bytes (farcall's [`Config::max_frame_size`](crate::Config)).
/// Lengths are checked from the frame header, before the payload is allocated.
pub fn websocket_config(max_frame_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_size))
        .max_frame_size(Some(max_frame_size))
}

impl<S> WebSocket<S> {
    /// The underlying WebSocket stream.
    pub fn get_ref(&self) -> &WebSocketStream<S> {
        &self.inner
    }
}

/// Turns a tungstenite error into the `io::Error` a transport reports.
fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::Capacity(CapacityError::MessageTooLong { max_size, .. }) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("incoming WebSocket message exceeds max_frame_size ({max_size} bytes)"),
        ),
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the WebSocket connection is closed",
        ),
        WsError::Http(response) => io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "the server refused the WebSocket upgrade: HTTP {}",
                response.status()
            ),
        ),
        e @ (WsError::Capacity(_)
        | WsError::Protocol(_)
        | WsError::Utf8(_)
        | WsError::AttackAttempt) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket protocol error: {e}"),
        ),
        e => io::Error::other(format!("WebSocket error: {e}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            // Reading also writes tungstenite's queued replies (pongs, the close reply).
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(frame))) => return Poll::Ready(Some(Ok(frame))),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "received a WebSocket text message; farcall frames are binary messages",
                    ))))
                }
                Some(Ok(Message::Close(_))) => {
                    // Best effort to send the close reply tungstenite queued; the
                    // connection is over either way.
                    self.ended = true;
                    let _ = Pin::new(&mut self.inner).poll_flush(cx);
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(to_io(e)))),
                None => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Bytes> for WebSocket<S> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx).map_err(to_io)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(frame))
            .map_err(to_io)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(to_io)
    }
}

/// Runs a WebSocket handshake within `limit`.
async fn handshake<T>(
    limit: std::time::Duration,
    what: &str,
    handshake: impl std::future::Future<Output = Result<T, WsError>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, handshake).await {
        Ok(done) => done.map_err(to_io),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("WebSocket handshake {what} timed out after {limit:?}"),
        )),
    }
}

/// Connects to a WebSocket server at `url` (`ws://` only) and runs the client side
/// of the upgrade handshake, within `limit`; incoming messages are limited to
/// `max_frame_size`. See `Builder::connect_websocket`.
pub(crate) async fn connect(
    url: &str,
    max_frame_size: usize,
    limit: std::time::Duration,
) -> io::Result<WebSocket<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>> {
    let config = websocket_config(max_frame_size);
    Ok(websocket(connect_stream(url, config, limit).await?))
}

/// [`connect`] with a configuration of its own, giving the WebSocket itself (a Cap'n
/// Web session sends text messages).
pub(crate) async fn connect_stream(
    url: &str,
    config: WebSocketConfig,
    limit: std::time::Duration,
) -> io::Result<WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>> {
    let scheme_ok = url
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("ws://"));
    if !scheme_ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a ws:// URL: {url:?} (wss:// needs TLS, which farcall does not include)"),
        ));
    }
    let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (ws, _response) = handshake(limit, &format!("with {url}"), connecting).await?;
    Ok(ws)
}

/// Runs the server side of the upgrade handshake on a freshly accepted byte stream,
/// within `limit`. See `Builder::accept_websocket`.
pub(crate) async fn accept<S>(
    io: S,
    max_frame_size: usize,
    limit: std::time::Duration,
) -> io::Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = websocket_config(max_frame_size);
    let accepting = tokio_tungstenite::accept_async_with_config(io, Some(config));
    Ok(websocket(
        handshake(limit, "from a client", accepting).await?,
    ))
}
