//! The translator: Cap'n Web messages in, farcall frames out, and back.
//!
//! The connection actor keeps every table; this keeps only what the dialect adds:
//! - which of the peer's pushes were pulled: a result is held until its pull (or
//!   dropped, with what it carried, on release), and which still wait for one (an
//!   HTTP batch ends when none do);
//! - the ids of this side's pushes (positive, in push order) against the actor's
//!   question ids;
//! - the sign convention of exports: each time the actor hands the peer an object,
//!   the peer gets a fresh negative id. The `capnweb` package releases each import
//!   with a count of one however many times it was introduced, so a fresh id per
//!   introduction keeps the actor's reference counts exact (and identity still
//!   holds on the Rust side, where the ids resolve to the same export).
//!
//! Mapping: a `push` of `["pipeline", id, [name], args]` is a `Call` whose question
//! is the push's id (Cap'n Web numbers pushes 1, 2, ... as the answer table's
//! question ids); target 0 is the root, a negative id an export, a positive one a
//! pipelined answer; the method is the name's hash with wildcard signature bits
//! (`interface::by_name`), and an empty path calls a `Callback`. `release` of a push
//! is a `Finish` (when the actor still keeps that answer), of an export a `Release`.
//! In expressions `["export", -n]` is `SenderHosted(n)`, `["import", -n]`
//! `ReceiverHosted`, `["pipeline", n]` `ReceiverAnswer(n)`; payloads carry them as
//! `["$cap", i]` placeholders (see `codec/capnweb.rs`). Streams, both ways, are in
//! `streams.rs`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::Value;

use crate::codec::capnweb::{self, ARGS, CAP, ERR, OK, STREAM};
use crate::codec::AnyCodec;
use crate::error::WireError;
use crate::interface::by_name;

mod from_actor;
mod from_peer;
mod streams;
use crate::wire::{
    decode_frame, encode_frame, encode_payload, finish_frame, CapDescriptor, ExportId, Header,
    Hello, Outcome, QuestionId, Target, PROTOCOL_VERSION,
};

/// The method id of a `Callback` (calling a function: an empty property path).
const CALLBACK_METHOD: u32 = 1;

/// A push of the peer's (an answer of ours) as the translator tracks it.
enum Answer {
    /// The actor is working on it.
    Running { pulled: bool },
    /// Its result, held until the peer pulls it.
    Returned {
        outcome: Outcome,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
    },
    /// Its resolve or reject is sent; waiting for the peer's release.
    Sent { needs_finish: bool },
    /// Not something this server does (a property read, `.map()`...): it rejects
    /// with this reason when pulled. The actor never saw it.
    Refused { reason: String },
    /// Answered by the translator itself (a pipe's `close()` or `abort()`): the
    /// outcome once known, sent when pulled. The actor never saw it.
    Local {
        outcome: Option<Result<Value, String>>,
        pulled: bool,
        /// Came as a stream message: pulled, and released once answered.
        streamed: bool,
    },
}

/// Why an incoming message could not be taken.
enum Bad {
    /// The peer broke the protocol: the session ends with this reason.
    Malformed(String),
}

type Checked<T> = Result<T, Bad>;

fn malformed<T>(why: impl Into<String>) -> Checked<T> {
    Err(Bad::Malformed(why.into()))
}

fn capnweb_special<const N: usize>(code: &str, args: [Value; N]) -> Value {
    let mut items = vec![Value::String(code.to_owned())];
    items.extend(args);
    Value::Array(items)
}

fn int(value: &Value) -> Checked<i64> {
    match value.as_i64() {
        Some(i) if i.unsigned_abs() <= capnweb::MAX_SAFE_INTEGER => Ok(i),
        _ => malformed(format!("an id that is not an integer: {value}")),
    }
}

fn error_expr(text: &str) -> Value {
    capnweb_special("error", [Value::from("Error"), Value::from(text)])
}

/// The message of a rejection or abort sent by the peer: an error's `type: message`,
/// else the value as JSON.
fn error_text(value: &Value) -> String {
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(code), Value::String(kind), Value::String(message), ..])
            if code == "error" =>
        {
            format!("{kind}: {message}")
        }
        _ => match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

/// Translates between one Cap'n Web session and one farcall connection actor.
pub(crate) struct Translator {
    codec: AnyCodec,
    max_message: usize,
    /// The size of the message being taken.
    message_size: usize,
    /// Pushes the peer made so far (the id of the last).
    pushes: u64,
    answers: HashMap<u64, Answer>,
    /// Pulled answers whose resolve or reject has not been sent.
    awaited: usize,
    /// Exports as the peer holds them: Cap'n Web id (negated) to the actor's id.
    next_export: u64,
    exported: HashMap<u64, ExportId>,
    /// Pushes made to the peer: Cap'n Web import id to question (none: one-way).
    next_push: u64,
    asked: HashMap<u64, QuestionId>,
    by_question: HashMap<QuestionId, u64>,
    /// Streams crossing the session, in either direction.
    streams: streams::Streams,
    /// Messages for the peer.
    pub(super) to_peer: VecDeque<String>,
    /// Frames for the actor.
    pub(super) to_actor: VecDeque<Bytes>,
}

impl Translator {
    /// A translator whose peer may send messages of up to `max_message` bytes; the
    /// actor's first frame, the peer's opening message, is already queued.
    pub(crate) fn new(max_message: usize, max_frame_size: usize) -> Self {
        let codec = AnyCodec::CapnWeb;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            codec: codec.wire_id(),
            max_frame_size: max_frame_size as u64,
        };
        Translator {
            codec,
            max_message,
            message_size: 0,
            pushes: 0,
            answers: HashMap::new(),
            awaited: 0,
            next_export: 0,
            exported: HashMap::new(),
            next_push: 0,
            asked: HashMap::new(),
            by_question: HashMap::new(),
            streams: streams::Streams::default(),
            to_peer: VecDeque::new(),
            to_actor: VecDeque::from([hello.encode()]),
        }
    }

    /// Whether every pulled result has been sent.
    pub(crate) fn settled(&self) -> bool {
        self.awaited == 0
    }

    fn send(&mut self, message: Value) {
        // serde_json's writer, not `Display` (which formats through `fmt::Write`).
        let text = serde_json::to_string(&message).unwrap_or_default();
        self.to_peer.push_back(text);
    }

    fn control(&mut self, header: &Header) {
        match encode_frame(self.codec, header, &()) {
            Ok(frame) => self.to_actor.push_back(frame),
            Err(e) => tracing::error!(error = %e, "cannot encode a control frame"),
        }
    }

    fn frame(&mut self, header: &Header, payload: &Value) {
        let mut buf = Vec::with_capacity(128 + crate::wire::HEADER_ROOM);
        // Writing a `Value` fails only on an I/O error, and a `Vec` has none.
        let _ = serde_json::to_writer(&mut buf, payload);
        let payload = Bytes::from(buf);
        match finish_frame(self.codec, payload, header) {
            Ok(frame) => self.to_actor.push_back(frame),
            Err(e) => tracing::error!(error = %e, "cannot encode a frame"),
        }
    }

    fn failed(&mut self, question: QuestionId, error: &WireError) {
        let header = Header::Return {
            question,
            outcome: Outcome::Failed,
            caps: Vec::new(),
        };
        match encode_payload(self.codec, error) {
            Ok(payload) => match finish_frame(self.codec, payload.into(), &header) {
                Ok(frame) => self.to_actor.push_back(frame),
                Err(e) => tracing::error!(error = %e, "cannot encode a frame"),
            },
            Err(e) => tracing::error!(error = %e, "cannot encode an error"),
        }
    }

    /// Gives back references the actor counted for the peer that never reached it.
    fn undescribe(&mut self, caps: &[CapDescriptor]) {
        for cap in caps {
            if let CapDescriptor::SenderHosted(id) = cap {
                self.control(&Header::Release { id: *id, count: 1 });
            }
        }
    }

    /// Releases the peer's exports carried by a message that is not taken.
    fn release_imports(&mut self, caps: &[CapDescriptor]) {
        for cap in caps {
            match cap {
                CapDescriptor::SenderHosted(id) if streams::Streams::stands_for(*id) => {
                    self.drop_pseudo(*id)
                }
                CapDescriptor::SenderHosted(id) => {
                    self.send(serde_json::json!(["release", -(*id as i64), 1]))
                }
                _ => {}
            }
        }
    }
}

/// A failure in words for JavaScript.
fn wire_error_text(error: WireError) -> String {
    match error {
        WireError::MethodNotFound => "method not found".into(),
        WireError::SignatureMismatch => "the method has another signature".into(),
        other => other.into_rpc("the interface", "the method").to_string(),
    }
}
