//! The calling side: a reference to a remote object and the future of one call.
//!
//! Generated `{Trait}Client` types wrap a [`Client`]; each method encodes its
//! arguments right away (so calls go out in the order they are made, whether or not
//! their futures are awaited yet) and returns a [`Call`].

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::connection::{Command, Connection, Response};
use crate::dispatch::{Interface, Method, Shape};
use crate::error::{RpcError, WireError};
use crate::wire::{encode_frame, Header, Outcome, QuestionId, Target};

/// A generated client type: a typed reference to a remote object.
///
/// Implemented by every `{Trait}Client` that `#[farcall::remote]` generates; use it as
/// a bound, as in [`Connection::root`].
pub trait RemoteClient: Clone + Send + Sync + 'static {
    /// The interface the client speaks.
    const INTERFACE: &'static Interface;
    #[doc(hidden)]
    fn from_client(client: Client) -> Self;
    #[doc(hidden)]
    fn client(&self) -> &Client;
}

/// An untyped reference to an object on the other side of a connection. Generated
/// clients wrap one; cloning is cheap.
#[derive(Clone)]
pub struct Client {
    conn: Connection,
    target: Target,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("connection", &self.conn.id())
            .field("target", &self.target)
            .finish()
    }
}

impl Client {
    pub(crate) fn new(conn: Connection, target: Target) -> Self {
        Client { conn, target }
    }

    /// The connection this reference lives on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends a call of `method` with the argument tuple `args`; the returned future
    /// yields its result as `S` prescribes.
    pub fn call<A: Serialize, S: Shape>(&self, method: &'static Method, args: &A) -> Call<S> {
        let question = self.conn.next_question();
        let header = Header::Call {
            question: Some(question),
            target: self.target,
            method: method.id,
        };
        let frame = match self.encode(&header, args) {
            Ok(frame) => frame,
            Err(e) => return Call::failed(method, e),
        };
        tracing::trace!(method = method.name, question, "call");
        self.conn.ask(question, frame, method)
    }

    /// Sends a one-way call: no question, no reply. It is delivered in order with the
    /// other calls on this reference. Fails only if it cannot be sent.
    pub fn send<A: Serialize>(&self, method: &'static Method, args: &A) -> Result<(), RpcError> {
        let header = Header::Call {
            question: None,
            target: self.target,
            method: method.id,
        };
        let frame = self.encode(&header, args)?;
        tracing::trace!(method = method.name, "send");
        self.conn.command(Command::Send { frame })
    }

    fn encode<A: Serialize>(&self, header: &Header, args: &A) -> Result<Bytes, RpcError> {
        let frame = encode_frame(self.conn.codec(), header, args)?;
        let limit = self.conn.max_frame_size();
        if frame.len() > limit {
            return Err(RpcError::FrameTooLarge {
                size: frame.len(),
                limit,
            });
        }
        Ok(frame.into())
    }
}

/// The future of one call; yields `S::Output` (`Result<T, RpcError>` or
/// `Result<T, CallError<E>>`).
///
/// Dropping it before it completes tells the peer the answer is no longer wanted.
#[must_use = "the call is sent, but its result is lost unless awaited"]
pub struct Call<S: Shape> {
    state: State,
    method: &'static Method,
    _shape: PhantomData<fn() -> S>,
}

enum State {
    Failed(RpcError),
    Waiting {
        conn: Connection,
        question: QuestionId,
        rx: oneshot::Receiver<Response>,
    },
    Done,
}

impl<S: Shape> Call<S> {
    pub(crate) fn failed(method: &'static Method, error: RpcError) -> Self {
        Call {
            state: State::Failed(error),
            method,
            _shape: PhantomData,
        }
    }

    pub(crate) fn waiting(
        method: &'static Method,
        conn: Connection,
        question: QuestionId,
        rx: oneshot::Receiver<Response>,
    ) -> Self {
        Call {
            state: State::Waiting { conn, question, rx },
            method,
            _shape: PhantomData,
        }
    }
}

impl<S: Shape> Future for Call<S> {
    type Output = S::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<S::Output> {
        let this = &mut *self;
        let result = match &mut this.state {
            State::Failed(_) => match std::mem::replace(&mut this.state, State::Done) {
                State::Failed(e) => Err(e),
                _ => unreachable!(),
            },
            State::Waiting { conn, rx, .. } => {
                let received = ready!(Pin::new(rx).poll(cx));
                let result = match received {
                    Ok(response) => decode_response::<S>(this.method, conn, response),
                    Err(_) => Err(conn.disconnect_error()),
                };
                this.state = State::Done;
                result
            }
            State::Done => panic!("`Call` polled after completion"),
        };
        Poll::Ready(result.unwrap_or_else(S::failed))
    }
}

fn decode_response<S: Shape>(
    method: &'static Method,
    conn: &Connection,
    response: Response,
) -> Result<S::Output, RpcError> {
    let codec = conn.codec();
    match response.outcome {
        Outcome::Value => S::decode(false, &response.payload, codec),
        Outcome::AppError => S::decode(true, &response.payload, codec),
        Outcome::Failed => {
            let error: WireError = codec
                .decode(&response.payload)
                .map_err(|e| RpcError::Decode(format!("error payload: {e}")))?;
            Err(error.into_rpc(method.interface, method.name))
        }
    }
}

impl<S: Shape> Drop for Call<S> {
    fn drop(&mut self) {
        if let State::Waiting { conn, question, .. } = &self.state {
            // The answer is no longer wanted: free both sides' table entries. If the
            // return is already on its way, the actor ignores the late finish.
            let _ = conn.command(Command::Finish {
                question: *question,
            });
        }
    }
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
            WireError::BadArguments(e) => {
                RpcError::BadMessage(format!("the peer could not decode the arguments of {e}"))
            }
            WireError::Encode(e) => {
                RpcError::Encode(format!("the peer could not encode the result: {e}"))
            }
            WireError::ResultTooLarge { size, limit } => RpcError::FrameTooLarge {
                size: size as usize,
                limit: limit as usize,
            },
            WireError::Closing => RpcError::Closing,
        }
    }
}
