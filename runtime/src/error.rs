//! Errors: [`RpcError`] for everything that can go wrong between two endpoints, and
//! [`CallError`] for methods that also return an application error.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a remote call, or a connection, failed.
///
/// Every call ends exactly once: with its value, with an application error (see
/// [`CallError`]) or with one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The connection is closed or broke; the reason says which side and why.
    #[error("disconnected: {0}")]
    Disconnected(CloseReason),
    /// The call did not finish within its time limit.
    #[error("call timed out")]
    Timeout,
    /// The peer has a method of this name, but with other argument or result types
    /// (the two ends were built from different versions of the trait).
    #[error("the peer's `{interface}::{method}` has another signature: its argument or result types differ from this build's")]
    SignatureMismatch {
        /// The interface (trait) the caller believes it is talking to.
        interface: &'static str,
        /// The method that was called.
        method: &'static str,
    },
    /// The peer's object has no such method (for example an older peer).
    #[error("method `{method}` not found on the peer's `{interface}`")]
    MethodNotFound {
        /// The interface (trait) the caller believes it is talking to.
        interface: &'static str,
        /// The method that was called.
        method: &'static str,
    },
    /// The call named an object the peer does not hold (never exported, or released).
    #[error("object not found on the peer")]
    ObjectNotFound,
    /// The peer's root object implements another interface than the one asked for.
    #[error("wrong interface: asked for `{expected}` but the peer's root is `{found}`")]
    WrongInterface {
        /// The interface the caller asked for.
        expected: String,
        /// The interface the peer actually offers.
        found: String,
    },
    /// The peer offers no root object.
    #[error("the peer offers no root object")]
    NoRoot,
    /// The handler panicked; the message is included unless the peer redacts it.
    #[error("remote handler panicked{}", .0.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    RemotePanic(Option<String>),
    /// A value could not be encoded for the wire.
    #[error("encode failed: {0}")]
    Encode(String),
    /// A value received from the peer could not be decoded.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The peer sent something that breaks the protocol.
    #[error("bad message from peer: {0}")]
    BadMessage(String),
    /// A frame is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Size of the frame that was refused.
        size: usize,
        /// The configured `max_frame_size`.
        limit: usize,
    },
    /// The peer is shutting down and accepts no new calls.
    #[error("the peer is closing and accepts no new calls")]
    Closing,
    /// This reference was released (explicitly, with `release()`), so it can no
    /// longer be called.
    #[error("the capability was released")]
    Released,
    /// The object's owner revoked it: it serves no one any more.
    #[error("the capability was revoked by its owner")]
    Revoked,
    /// A limit was reached (too many calls in flight, too much queued, too many
    /// objects exported); the call was refused and nothing else is affected.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A stream's producer failed (an error from its items, or a panic); the text is
    /// the error's `Display`.
    #[error("the stream's producer failed: {0}")]
    StreamFailed(String),
    /// This call was pipelined on the result of another call, which did not produce
    /// a capability; the message says what happened to it.
    #[error("the promised capability is not available: {0}")]
    PromiseFailed(String),
}

impl RpcError {
    /// Whether this error means the connection itself is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RpcError::Disconnected(_))
    }

    pub(crate) fn disconnected(reason: impl Into<String>) -> Self {
        RpcError::Disconnected(CloseReason::Other(reason.into()))
    }
}

/// Why a connection ended, as [`Connection::close_reason`](crate::Connection::close_reason)
/// and [`RpcError::Disconnected`] give it. Its `Display` is the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the transport.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The peer hung up saying why (its `Abort`).
    #[error("peer aborted: {0}")]
    PeerAborted(String),
    /// Reading or writing the transport failed (an oversized frame, a reset, ...).
    #[error("transport error: {0}")]
    Transport(String),
    /// The peer broke the protocol; the peer was told why.
    #[error("{0}")]
    ProtocolViolation(String),
    /// The peer's opening message did not arrive within `handshake_timeout`.
    #[error("handshake timeout: the peer sent no opening message within {0:?}")]
    HandshakeTimeout(Duration),
    /// Nothing arrived for `idle_timeout`.
    #[error("idle timeout: nothing received for {0:?}")]
    IdleTimeout(Duration),
    /// A message sent in chunks stayed unfinished this long.
    #[error("a chunked message stayed unfinished for {0:?}")]
    ChunkTimeout(Duration),
    /// A graceful close passed its `drain_timeout` with calls still running.
    #[error("closing: the drain deadline of {0:?} passed with calls still running")]
    DrainDeadline(Duration),
    /// [`Connection::close`](crate::Connection::close) was called.
    #[error("connection closed locally")]
    ClosedLocally,
    /// [`Connection::abort`](crate::Connection::abort) was called.
    #[error("connection aborted locally")]
    AbortedLocally,
    /// It offered nothing and every handle to it was dropped.
    #[error("connection closed: every handle was dropped")]
    Unused,
    /// The worker process at the other end exited (its exit status).
    #[error("worker exited with {0}")]
    WorkerExited(String),
    /// Waiting for the worker process failed.
    #[error("lost track of the worker process: {0}")]
    WorkerLost(String),
    /// The connection's task stopped with it (the runtime shut down).
    #[error("connection task stopped")]
    TaskStopped,
    /// Anything else, in words.
    #[error("{0}")]
    Other(String),
}

/// The error of a remote method declared as returning `Result<T, E>`.
///
/// An application error `E` sent by the peer arrives as [`CallError::App`]; anything
/// that went wrong on the way arrives as [`CallError::Rpc`]. `?` converts an
/// [`RpcError`] into it, and it converts into `Box<dyn Error>`/`anyhow::Error` whenever
/// `E` is `Debug + Display` (a `String` will do).
///
/// ```
/// # use farcall::{CallError, RpcError};
/// fn describe(r: Result<u64, CallError<String>>) -> String {
///     match r {
///         Ok(v) => format!("value {v}"),
///         Err(CallError::App(e)) => format!("refused: {e}"),
///         Err(CallError::Rpc(e)) => format!("transport trouble: {e}"),
///     }
/// }
/// assert_eq!(describe(Err(CallError::App("too big".into()))), "refused: too big");
/// assert!(describe(Err(RpcError::Timeout.into())).starts_with("transport"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The method ran and returned this application error.
    App(E),
    /// The call failed before, during or after reaching the method.
    Rpc(RpcError),
}

impl<E> CallError<E> {
    /// The application error, if that is what this is.
    pub fn app(&self) -> Option<&E> {
        match self {
            CallError::App(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }

    /// The RPC failure, if that is what this is.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            CallError::App(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }

    /// Splits into `Ok(app error)` or `Err(rpc error)`, so `?` can pass RPC failures up
    /// while the caller handles the application error: `let app = err.into_app()?;`.
    pub fn into_app(self) -> Result<E, RpcError> {
        match self {
            CallError::App(e) => Ok(e),
            CallError::Rpc(e) => Err(e),
        }
    }
}

impl<E> From<RpcError> for CallError<E> {
    fn from(e: RpcError) -> Self {
        CallError::Rpc(e)
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::App(e) => e.fmt(f),
            CallError::Rpc(e) => e.fmt(f),
        }
    }
}

/// Any displayable application error (including a plain `String`) makes a
/// `CallError` an error type, so `?` works into `Box<dyn Error>` and `anyhow`. It
/// is transparent: `Display` shows the inner error and `source` is the inner
/// error's own source, so a report (`anyhow`'s `{:#}`) states the cause once.
impl<E: fmt::Debug + fmt::Display> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::App(_) => None,
            CallError::Rpc(e) => std::error::Error::source(e),
        }
    }
}

/// An error as it travels in a `Return` frame. The caller turns it into an
/// [`RpcError`], adding what only it knows (method and interface names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[allow(unreachable_pub, missing_docs)] // `pub` for `__private::fuzz` (`cfg(fuzzing)` builds)
pub enum WireError {
    MethodNotFound,
    ObjectNotFound,
    WrongInterface {
        found: String,
    },
    NoRoot,
    Panic(Option<String>),
    BadArguments(String),
    Encode(String),
    /// A frame (call or result) over the limit of the side that was to send it.
    FrameTooLarge {
        size: u64,
        limit: u64,
    },
    Closing,
    Revoked,
    Forward(String),
    PromiseFailed(String),
    Overloaded(String),
    /// A payload in a codec the receiving build was compiled without.
    Undecodable(String),
    /// The method exists with other argument or result types.
    SignatureMismatch,
    /// A Cap'n Web peer threw (or rejected): `text` names the error's type and
    /// message, `message` is the message alone. A method returning `Result<T, E>`
    /// reads it as its application error when `E` can be read from the message (a
    /// `String`, say); any other is [`RpcError::RemotePanic`].
    Thrown {
        text: String,
        message: String,
    },
}

impl WireError {
    /// Turns a received error into the caller's [`RpcError`], naming the method.
    pub(crate) fn into_rpc(self, interface: &'static str, method: &'static str) -> RpcError {
        match self {
            WireError::MethodNotFound => RpcError::MethodNotFound { interface, method },
            WireError::ObjectNotFound => RpcError::ObjectNotFound,
            WireError::WrongInterface { found } => RpcError::WrongInterface {
                expected: interface.to_owned(),
                found,
            },
            WireError::NoRoot => RpcError::NoRoot,
            WireError::Panic(message) => RpcError::RemotePanic(message),
            WireError::Thrown { text, .. } => {
                RpcError::RemotePanic(Some(format!("the JavaScript peer threw {text}")))
            }
            WireError::BadArguments(e) => {
                RpcError::BadMessage(format!("the peer could not decode the arguments of {e}"))
            }
            WireError::Encode(e) => {
                RpcError::Encode(format!("the peer could not encode the result: {e}"))
            }
            WireError::FrameTooLarge { size, limit } => RpcError::FrameTooLarge {
                size: size as usize,
                limit: limit as usize,
            },
            WireError::Closing => RpcError::Closing,
            WireError::Revoked => RpcError::Revoked,
            WireError::Forward(e) => RpcError::disconnected(format!("forwarding failed: {e}")),
            WireError::PromiseFailed(why) => RpcError::PromiseFailed(why),
            WireError::Undecodable(why) => RpcError::Decode(why),
            WireError::SignatureMismatch => RpcError::SignatureMismatch { interface, method },
            WireError::Overloaded(why) => {
                RpcError::Overloaded(format!("the peer refused the call: {why}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a report of the error and its chain of sources prints, as `anyhow`'s
    /// `{:#}` does: each cause once, joined by ": ".
    fn report(error: &dyn std::error::Error) -> String {
        let mut parts = vec![error.to_string()];
        let mut source = error.source();
        while let Some(cause) = source {
            parts.push(cause.to_string());
            source = cause.source();
        }
        parts.join(": ")
    }

    #[test]
    fn a_call_error_reports_its_cause_once() {
        let rpc: CallError<String> = CallError::Rpc(RpcError::Timeout);
        assert_eq!(report(&rpc), RpcError::Timeout.to_string());
        let closed: CallError<String> =
            CallError::Rpc(RpcError::Disconnected(CloseReason::PeerClosed));
        let text = report(&closed);
        assert_eq!(text, closed.to_string());
        assert_eq!(text.matches("closed").count(), 1, "{text}");
        let app: CallError<String> = CallError::App("no such file".into());
        assert_eq!(report(&app), "no such file");
    }
}
