//! How a call reaches an object served here: the [`Dispatch`] trait that generated
//! `{Trait}Server` types implement, the [`Incoming`] call it is handed, and the
//! [`Reply`] its handler yields. Part of the capability layer: a local capability
//! *is* a `Dispatch` object, and calls and replies carry capabilities.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::Serialize;

use super::{encode_message, CapRef};
use crate::codec::AnyCodec;
use crate::connection::CallContext;
use crate::error::WireError;
use crate::interface::{Interface, SIGNATURE_BITS};
use crate::wire::{encode_payload, Outcome};

/// A future that runs one call and yields its reply.
pub type Handler = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// An object that can serve calls: generated `{Trait}Server` types implement it.
pub trait Dispatch: Send + Sync + 'static {
    /// The interface this object implements.
    fn interface(&self) -> &'static Interface;
    /// Starts serving one call. Must not block: the returned future does the work.
    fn dispatch(&self, call: Incoming) -> Handler;
}

/// The encoded result of a call, with the capabilities it carries.
#[doc(hidden)]
pub struct Reply {
    pub(crate) outcome: Outcome,
    pub(crate) payload: Bytes,
    pub(crate) caps: Vec<CapRef>,
    /// The codec the payload is in: the connection's, unless it was forwarded from
    /// a connection with another.
    pub(crate) codec: AnyCodec,
    /// An application error in words, where the callee made it: what calls
    /// pipelined on this answer say when they fail.
    pub(crate) error_text: Option<String>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("outcome", &self.outcome)
            .field("bytes", &self.payload.len())
            .field("caps", &self.caps)
            .field("codec", &self.codec)
            .finish()
    }
}

impl Reply {
    /// Whether the callee keeps this answer until the caller's `Finish`: when it
    /// holds capabilities (calls may be pipelined on them) or failed (so pipelined
    /// calls can say why). Both sides decide with this same rule.
    pub(crate) fn needs_finish(&self) -> bool {
        self.outcome != Outcome::Value || !self.caps.is_empty()
    }

    /// The capability calls pipelined on this answer go to: its first, or a broken
    /// reference saying why there is none.
    pub(crate) fn promised_cap(&self) -> CapRef {
        let why = match self.outcome {
            Outcome::Value => match self.caps.first() {
                Some(cap) => return cap.clone(),
                None => "the result holds no capability".to_string(),
            },
            Outcome::AppError => match &self.error_text {
                Some(text) => format!("the call returned an application error: {text}"),
                None => "the call returned an application error".to_string(),
            },
            Outcome::Failed => match self.codec.decode::<WireError>(&self.payload) {
                Ok(e) => format!(
                    "the call failed: {}",
                    e.into_rpc("the interface", "the method")
                ),
                Err(_) => "the call failed".to_string(),
            },
        };
        CapRef::Broken(WireError::PromiseFailed(why))
    }

    /// The empty reply of a one-way call.
    pub(crate) fn none() -> Self {
        Reply {
            outcome: Outcome::Value,
            payload: Bytes::new(),
            caps: Vec::new(),
            codec: AnyCodec::default(),
            error_text: None,
        }
    }
}

/// A call as it reaches a [`Dispatch`] implementation.
#[derive(Debug)]
pub struct Incoming {
    pub(crate) method: u32,
    pub(crate) payload: Bytes,
    pub(crate) caps: Vec<CapRef>,
    /// The codec the arguments are in (results are encoded as `reply` says).
    pub(crate) codec: AnyCodec,
    /// `false` for one-way calls.
    pub(crate) wants_reply: bool,
    pub(crate) reply: ReplyTo,
    /// The connection the call arrived on; `None` for a call on a local object.
    pub(crate) context: Option<CallContext>,
}

/// What a handler needs to encode its reply.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub(crate) codec: AnyCodec,
    pub(crate) expose_panics: bool,
}

impl ReplyTo {
    pub(crate) fn value<P: Serialize + ?Sized>(&self, outcome: Outcome, payload: &P) -> Reply {
        // The frame limit is checked by the connection task, which knows the header.
        match encode_message(self.codec, payload) {
            Ok(message) => Reply {
                outcome,
                payload: message.payload,
                caps: message.caps,
                codec: message.codec,
                error_text: None,
            },
            Err(e) => self.error(&WireError::Encode(e.to_string())),
        }
    }

    pub(crate) fn error(&self, error: &WireError) -> Reply {
        Reply {
            outcome: Outcome::Failed,
            // A `WireError` always encodes; an empty payload would only show a broken
            // codec, and then decoding it fails on the caller's side, clearly.
            payload: encode_payload(self.codec, error)
                .map(Bytes::from)
                .unwrap_or_default(),
            caps: Vec::new(),
            codec: self.codec,
            error_text: None,
        }
    }

    /// A handler that fails at once with `error`.
    pub(crate) fn fail_now(&self, error: WireError) -> Handler {
        Box::pin(std::future::ready(self.error(&error)))
    }

    pub(crate) fn panic(&self, payload: Box<dyn Any + Send>) -> Reply {
        let message = if self.expose_panics {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
        } else {
            None
        };
        self.error(&WireError::Panic(message))
    }
}
impl Incoming {
    /// The id of the method called.
    pub fn method(&self) -> u32 {
        self.method
    }

    /// Answers that the method does not exist on `interface`, or, when a method of
    /// the same name exists with another signature, says that.
    pub fn method_not_found(self, interface: &'static Interface) -> Handler {
        let name_bits = |id: u32| id >> SIGNATURE_BITS;
        let same_name = interface
            .methods
            .iter()
            .any(|m| name_bits(m.id) == name_bits(self.method));
        if same_name {
            return self.fail(WireError::SignatureMismatch);
        }
        self.fail(WireError::MethodNotFound)
    }

    pub(crate) fn fail(self, error: WireError) -> Handler {
        Box::pin(std::future::ready(self.reply.error(&error)))
    }
}
