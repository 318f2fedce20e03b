//! Reply shapes: how a method's value travels, for both sides. The serving side
//! encodes a handler's value as its shape prescribes ([`Incoming::handle`], the one
//! dispatch entry point); the calling side decodes the reply the same way
//! ([`decode_reply`]).

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::cap::{decode_message, Handler, Incoming, Reply, ReplyTo};
use crate::codec::AnyCodec;
use crate::connection::CONTEXT;
use crate::error::{CallError, RpcError, WireError};
use crate::interface::Method;
use crate::wire::Outcome;

/// Whether a handler stops when its caller gives up (drops the call, times out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Dropped at its next `.await` (the default).
    OnDrop,
    /// Runs to completion in a task of its own; its result is then dropped
    /// (`#[farcall(no_cancel)]`).
    RunToCompletion,
}

impl Incoming {
    /// Decodes the argument tuple `A`, runs `run` on it and encodes its value as
    /// shape `S` prescribes. The work runs inside the call's context and tracing
    /// span; `cancel` says whether it stops when the caller gives up. A panic
    /// anywhere in the handler becomes the caller's [`RpcError::RemotePanic`].
    /// `describe` puts an application error in words, for the calls pipelined on
    /// this one.
    pub fn handle<S, A, F, Fut>(
        self,
        method: &'static Method,
        cancel: Cancel,
        describe: fn(&S::Value) -> Option<String>,
        run: F,
    ) -> Handler
    where
        S: Shape,
        A: DeserializeOwned,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = S::Value> + Send + 'static,
    {
        let Incoming {
            payload,
            caps,
            codec,
            reply,
            context,
            ..
        } = self;
        let args = match decode_message::<A>(codec, &payload, caps) {
            Ok(args) => args,
            Err(e) => {
                let error = WireError::BadArguments(format!("{}: {e}", method.name));
                return reply.fail_now(error);
            }
        };
        let work = run(args);
        let span = tracing::trace_span!("farcall::call", method = method.name);
        let body = async move {
            let outcome = AssertUnwindSafe(async {
                let value = work.await;
                let error_text = describe(&value);
                #[cfg(feature = "capnweb")]
                let mut encoded =
                    crate::codec::capnweb::with_error_text(error_text.as_deref(), || {
                        S::encode_value(value, &reply)
                    });
                #[cfg(not(feature = "capnweb"))]
                let mut encoded = S::encode_value(value, &reply);
                encoded.error_text = error_text;
                encoded
            })
            .catch_unwind()
            .await;
            outcome.unwrap_or_else(|panic| reply.panic(panic))
        }
        .instrument(span);
        // The context and span wrap the work before anything is spawned.
        let body: Handler = match context {
            Some(context) => Box::pin(CONTEXT.scope(context, body)),
            None => Box::pin(body),
        };
        match cancel {
            Cancel::OnDrop => body,
            Cancel::RunToCompletion => {
                let task = tokio::spawn(body);
                Box::pin(async move {
                    match task.await {
                        Ok(reply) => reply,
                        // `body` catches panics; a task is only cancelled when the
                        // runtime shuts down.
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Reply::none(),
                    }
                })
            }
        }
    }
}

/// How a method's value travels: plain ([`Plain`]) or with an application error
/// ([`Fallible`]). Implemented by marker types the macro picks per method.
pub trait Shape: Send + 'static {
    /// What the implementation returns.
    type Value: Send;
    /// The success type: what calls are pipelined on when it is a client type.
    type Ok: Send;
    /// What the caller's future yields.
    type Output;
    #[doc(hidden)]
    fn encode_value(value: Self::Value, reply: &ReplyTo) -> Reply;
    /// Decodes a returned payload: the value, or the application error when
    /// `app_error` is set. Runs with the reply's capabilities in scope.
    #[doc(hidden)]
    fn decode(app_error: bool, payload: &[u8], codec: AnyCodec) -> Result<Self::Output, RpcError>;
    #[doc(hidden)]
    fn failed(error: RpcError) -> Self::Output;
    /// What a peer's thrown error with this message is, when the shape has an
    /// application error that can be read from it (see `WireError::Thrown`).
    #[doc(hidden)]
    fn thrown(message: &str) -> Option<Self::Output> {
        let _ = message;
        None
    }
}

/// A method returning `T`; the caller gets `Result<T, RpcError>`.
#[derive(Debug)]
pub struct Plain<T>(PhantomData<fn() -> T>);

/// A method returning `Result<T, E>`; the caller gets `Result<T, CallError<E>>`.
#[derive(Debug)]
pub struct Fallible<T, E>(PhantomData<fn() -> (T, E)>);

fn decode_payload<T: DeserializeOwned>(payload: &[u8], codec: AnyCodec) -> Result<T, RpcError> {
    codec
        .decode(payload)
        .map_err(|e| RpcError::Decode(e.to_string()))
}

impl<T> Shape for Plain<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Value = T;
    type Ok = T;
    type Output = Result<T, RpcError>;

    fn encode_value(value: T, reply: &ReplyTo) -> Reply {
        reply.value(Outcome::Value, &value)
    }

    fn decode(app_error: bool, payload: &[u8], codec: AnyCodec) -> Result<Self::Output, RpcError> {
        if app_error {
            return Err(RpcError::BadMessage(
                "application error for a method without one".into(),
            ));
        }
        Ok(Ok(decode_payload(payload, codec)?))
    }

    fn failed(error: RpcError) -> Self::Output {
        Err(error)
    }
}

impl<T, E> Shape for Fallible<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + Send + 'static,
{
    type Value = Result<T, E>;
    type Ok = T;
    type Output = Result<T, CallError<E>>;

    /// The payload is the `Result` itself, as a plain method returning
    /// `Result<T, E>` (a [`Callback`](crate::Callback) returning one) would send it,
    /// so either decodes as the other; the outcome also says whether it is an
    /// application error, for calls pipelined on the answer.
    fn encode_value(value: Result<T, E>, reply: &ReplyTo) -> Reply {
        let outcome = match &value {
            Ok(_) => Outcome::Value,
            Err(_) => Outcome::AppError,
        };
        reply.value(outcome, &value)
    }

    fn decode(app_error: bool, payload: &[u8], codec: AnyCodec) -> Result<Self::Output, RpcError> {
        match decode_payload::<Result<T, E>>(payload, codec)? {
            Ok(_) if app_error => Err(RpcError::BadMessage(
                "an application error carrying a value".into(),
            )),
            Ok(value) => Ok(Ok(value)),
            Err(e) => Ok(Err(CallError::App(e))),
        }
    }

    fn failed(error: RpcError) -> Self::Output {
        Err(CallError::Rpc(error))
    }

    /// A JavaScript `throw` is the application error when `E` reads from its
    /// message (a `String`, an enum of unit variants named by it).
    fn thrown(message: &str) -> Option<Self::Output> {
        let message = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(message);
        E::deserialize(message).ok().map(|e| Err(CallError::App(e)))
    }
}

/// Decodes a reply as shape `S`, with the reply's capabilities in scope.
pub(crate) fn decode_reply<S: Shape>(
    method: &'static Method,
    reply: Reply,
) -> Result<S::Output, RpcError> {
    let codec = reply.codec;
    crate::cap::with_incoming(reply.caps, || match reply.outcome {
        Outcome::Value => S::decode(false, &reply.payload, codec),
        Outcome::AppError => S::decode(true, &reply.payload, codec),
        Outcome::Failed => {
            let error: WireError = codec
                .decode(&reply.payload)
                .map_err(|e| RpcError::Decode(format!("error payload: {e}")))?;
            if let WireError::Thrown { message, .. } = &error {
                if let Some(output) = S::thrown(message) {
                    return Ok(output);
                }
            }
            Err(error.into_rpc(method.interface, method.name))
        }
    })
}
