//! The translator: Cap'n Web messages in, farcall frames out, and back.
//!
//! The connection actor keeps every table; this keeps only what the dialect adds:
//! - the peer's pushes: which were pulled (an HTTP batch ends when none waits for its
//!   result), and each result until the peer releases it, so that property paths
//!   on it (`api.team().lead`) are answered here (`pushes.rs`, `paths.rs`);
//! - pushes waiting for a result they read or call through, and those that name a
//!   waiting push, which the actor must not see before it (`pushes.rs`);
//! - the peer's promises passed as values, with the pushes and the resolutions of
//!   this side's pushes waiting for them to settle (`promises.rs`);
//! - the ids of this side's pushes (positive, in push order) against the actor's
//!   question ids;
//! - the sign convention of exports: each time the actor's object reaches the peer,
//!   the peer gets a fresh negative id. The `capnweb` package releases each import
//!   with a count of one however many times it was introduced, so a fresh id per
//!   introduction, with the actor's references pooled per object (`holds.rs`), keeps
//!   the actor's reference counts exact (and identity still holds on the Rust side,
//!   where the ids resolve to the same export).
//!
//! Mapping: a `push` of `["pipeline", id, [name], args]` is a `Call` whose question
//! is the push's id (Cap'n Web numbers pushes 1, 2, ... as the answer table's
//! question ids); target 0 is the root, a negative id an export, a positive one a
//! pipelined answer; the method is the name's hash with wildcard signature bits
//! (`interface::by_name`), and an empty path calls a `Callback`. A longer path, or
//! none (a property read), on an answer is followed here through its result: to a
//! value, which answers the push here, or to a capability, which the call goes to.
//! `release` of a push is a `Finish` (when the actor still keeps that answer), of
//! an export a `Release`. In expressions `["export", -n]` is `SenderHosted(n)`,
//! `["import", -n]` `ReceiverHosted`, `["pipeline", n]` `ReceiverAnswer(n)`;
//! payloads carry them as `["$cap", i]` placeholders (see `codec/capnweb.rs`).
//! `["promise", -n]` is a `["$promise", n]` placeholder that never reaches the
//! actor: what carries it waits here until its resolution takes its place
//! (`promises.rs`). Streams, both ways, are in `streams.rs`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::Value;

use crate::codec::capnweb::{self, ARGS, CAP, ERR, OK, STREAM, WRITER};
use crate::codec::AnyCodec;
use crate::error::WireError;
use crate::interface::by_name;

mod from_actor;
mod from_peer;
mod holds;
mod paths;
mod promises;
mod pushes;
mod streams;
use crate::wire::{
    decode_frame, encode_frame, encode_payload, finish_frame, CapDescriptor, ExportId, Header,
    Hello, Outcome, QuestionId, Target, PROTOCOL_VERSION,
};
use holds::Holds;
use pushes::Waiting;

/// The method id of a `Callback` (calling a function: an empty property path).
const CALLBACK_METHOD: u32 = 1;

/// A push of the peer's (an answer of ours) as the translator tracks it.
struct Answer {
    stage: Stage,
    /// The peer pulled it: its resolve or reject is sent once it is done (and not
    /// after the peer released it).
    pulled: bool,
    /// The peer released it while waiting pushes name it: it goes once they have
    /// run (see `Translator::released`).
    released: bool,
    /// It came as a stream message (a pipe's `close()` or `abort()`): pulled at
    /// once, and gone once answered (the peer sends no release).
    streamed: bool,
}

impl Answer {
    fn new(stage: Stage) -> Self {
        Answer {
            stage,
            pulled: false,
            released: false,
            streamed: false,
        }
    }
}

/// Where a push of the peer's is, from arrival to its result.
enum Stage {
    /// Waiting here for answers it depends on (it is in `Translator::waiting`); the
    /// actor has not seen it.
    Waiting,
    /// The actor is working on it.
    Running,
    /// Worked out here, not known yet: a pipe's `close()` or `abort()`, answered
    /// once the reader has had the writes before it (`streams.rs`).
    Local,
    /// Its result, kept until the peer releases it, for property paths on it: the
    /// actor's (`actor`: calls by one name on it go to the actor, which may keep it
    /// too), or worked out here (a property read, a push refused).
    Done { held: Held, actor: bool },
}

/// A result as the translator keeps it: a payload expression (see
/// `codec/capnweb.rs`), parsed only when it is sent or a path reads it.
#[derive(Clone)]
struct Held {
    outcome: Outcome,
    payload: Bytes,
    caps: Vec<CapDescriptor>,
}

impl Held {
    /// A value worked out here, with the capabilities its placeholders index.
    fn value(value: &Value, caps: Vec<CapDescriptor>) -> Self {
        Held {
            outcome: Outcome::Value,
            payload: serde_json::to_vec(value).unwrap_or_default().into(),
            caps,
        }
    }

    /// A rejection decided here, with this Cap'n Web error expression.
    fn rejection(error: Value) -> Self {
        let payload = capnweb_special(ERR, [error, Value::Null]);
        Held::value(&payload, Vec::new())
    }

    /// Whether the actor keeps the answer too, until a `Finish` (see
    /// `Reply::needs_finish`).
    fn needs_finish(&self) -> bool {
        self.outcome != Outcome::Value || !self.caps.is_empty()
    }

    /// What the push resolves to (with its placeholders), or the error expression
    /// it rejects with.
    fn resolution(&self) -> Result<Value, Value> {
        let value = match self.outcome {
            Outcome::Failed => {
                let text = match AnyCodec::CapnWeb.decode::<WireError>(&self.payload) {
                    Ok(error) => wire_error_text(error),
                    Err(e) => format!("the call failed (undecodable error: {e})"),
                };
                return Err(error_expr(&text));
            }
            Outcome::Value | Outcome::AppError => match capnweb::parse(&self.payload) {
                Ok(value) => value,
                Err(e) => {
                    return Err(error_expr(&format!(
                        "the result could not be translated: {e}"
                    )))
                }
            },
        };
        match value {
            Value::Array(mut items) => match items.as_slice() {
                [Value::String(code), error, text] if code == ERR => Err(match (error, text) {
                    // The translator's own rejections carry their error as it is sent.
                    (Value::Array(e), _) if e.first().is_some_and(|c| c == "error") => {
                        error.clone()
                    }
                    (_, Value::String(text)) => error_expr(text),
                    (error, _) => error_expr(&error_text(error)),
                }),
                [Value::String(code), _] if code == OK => Ok(items.swap_remove(1)),
                [Value::String(code), Value::Array(_)] if code == ARGS => {
                    match items.swap_remove(1) {
                        Value::Array(list) => Ok(capnweb::array(list)),
                        _ => unreachable!("matched above"),
                    }
                }
                _ => Ok(Value::Array(items)),
            },
            value => Ok(value),
        }
    }
}

/// Why an incoming message could not be taken.
enum Bad {
    /// The peer broke the protocol: the session ends with this reason.
    Malformed(String),
    /// The peer went over a limit: the session ends with this reason.
    OverLimit(String),
}

impl Bad {
    /// The reason the session ends with; `shown` is the message, or its start.
    fn reason(self, shown: &str) -> String {
        match self {
            Bad::Malformed(why) => format!("bad RPC message ({why}): {shown}"),
            Bad::OverLimit(why) => why,
        }
    }
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

/// A `TypeError`, as JavaScript throws for a property path that goes nowhere.
fn type_error(text: &str) -> Value {
    capnweb_special("error", [Value::from("TypeError"), Value::from(text)])
}

/// The error a rejection from the peer is: what it threw, for the caller.
fn thrown(error: &Value) -> WireError {
    let message = match error.as_array().map(Vec::as_slice) {
        Some([Value::String(code), Value::String(_), Value::String(message), ..])
            if code == "error" =>
        {
            message.clone()
        }
        _ => error_text(error),
    };
    WireError::Thrown {
        text: error_text(error),
        message,
    }
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

/// What a peer may make the translator hold.
pub(crate) struct Limits {
    /// The largest message taken, in bytes.
    pub(crate) message: usize,
    /// Pushes waiting for the results they depend on and promises unsettled,
    /// together.
    pub(crate) waiting: usize,
    /// The peer's pushes held at once: waiting, running, or done and kept until
    /// the peer releases them (the actor's `max_answers`).
    pub(crate) answers: usize,
    /// Ids of the actor's objects the peer holds at once (the actor's
    /// `max_exports`): each time an object reaches the peer it gets a fresh id.
    pub(crate) exports: usize,
    /// Bytes of results kept until the peer releases them.
    pub(crate) kept: usize,
}

/// Translates between one Cap'n Web session and one farcall connection actor.
pub(crate) struct Translator {
    codec: AnyCodec,
    max_message: usize,
    max_answers: usize,
    /// Bytes of the results in `answers`, and the most they may hold.
    kept_bytes: usize,
    max_kept: usize,
    max_exports: usize,
    /// The size of the message being taken.
    message_size: usize,
    /// Pushes the peer made so far (the id of the last).
    pushes: u64,
    answers: HashMap<u64, Answer>,
    /// Pulled answers whose resolve or reject has not been sent.
    awaited: usize,
    /// Pushes waiting for answers or promises they depend on, and how many
    /// (with the unsettled promises) may.
    waiting: Waiting,
    max_waiting: usize,
    /// The peer's promises passed as values, not settled yet.
    promises: promises::Promises,
    /// Answers the peer released while waiting pushes named them.
    released: Vec<QuestionId>,
    /// Exports as the peer holds them: Cap'n Web id (negated) to the actor's id.
    next_export: u64,
    exported: HashMap<u64, ExportId>,
    /// The actor's references to those, and to the objects of kept results.
    holds: Holds,
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
    /// What `residue` said after the last message or frame, for the tests.
    #[cfg(test)]
    pub(crate) observed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Translator {
    /// A translator for an actor taking frames of up to `max_frame_size` bytes,
    /// whose peer may go up to `limits`; the actor's first frame, the peer's
    /// opening message, is already queued.
    pub(crate) fn new(max_frame_size: usize, limits: Limits) -> Self {
        let codec = AnyCodec::CapnWeb;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            codec: codec.wire_id(),
            max_frame_size: max_frame_size as u64,
        };
        Translator {
            codec,
            max_message: limits.message,
            max_answers: limits.answers,
            kept_bytes: 0,
            max_kept: limits.kept,
            max_exports: limits.exports,
            message_size: 0,
            pushes: 0,
            answers: HashMap::new(),
            awaited: 0,
            waiting: Waiting::default(),
            max_waiting: limits.waiting,
            promises: promises::Promises::default(),
            released: Vec::new(),
            next_export: 0,
            exported: HashMap::new(),
            holds: Holds::default(),
            next_push: 0,
            asked: HashMap::new(),
            by_question: HashMap::new(),
            streams: streams::Streams::default(),
            to_peer: VecDeque::new(),
            to_actor: VecDeque::from([hello.encode()]),
            #[cfg(test)]
            observed: Default::default(),
        }
    }

    /// The tables that hold something though every stream ended and every kept
    /// result was released (tests check they come back empty).
    #[cfg(test)]
    pub(crate) fn residue(&self) -> Vec<String> {
        let mut residue = self.streams.residue();
        if !self.holds.is_empty() {
            residue.push(format!("holds: {:?}", self.holds));
        }
        let mut answers: Vec<_> = self.answers.keys().collect();
        answers.sort_unstable();
        for (what, count) in [
            ("answers", self.answers.len()),
            ("pulled answers unsent", self.awaited),
            ("waiting pushes", self.waiting.len()),
            ("released answers kept", self.released.len()),
            ("exports", self.exported.len()),
            ("bytes of kept results", self.kept_bytes),
            ("pushes to the peer", self.asked.len()),
            ("questions to the peer", self.by_question.len()),
        ] {
            if count > 0 {
                residue.push(format!("{what}: {count}"));
            }
        }
        if !self.answers.is_empty() {
            residue.push(format!("answers kept: {answers:?}"));
        }
        residue.extend(self.promises.residue());
        residue
    }

    /// Records `residue` where the tests read it.
    #[cfg(test)]
    pub(crate) fn observe(&self) {
        let residue = self.residue();
        *self.observed.lock().unwrap_or_else(|e| e.into_inner()) = residue;
    }

    /// Refuses streams both ways, saying `why`: on an HTTP batch, nothing can
    /// flow once the response is written.
    pub(crate) fn refuse_streams(&mut self, why: &'static str) {
        self.streams.refused = Some(why);
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
        self.frame_raw(header, buf);
    }

    /// A frame of a payload expression already written as text.
    fn frame_raw(&mut self, header: &Header, mut payload: Vec<u8>) {
        payload.reserve(crate::wire::HEADER_ROOM);
        match finish_frame(self.codec, Bytes::from(payload), header) {
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
                    // Carried by a message that is not taken: as if released.
                    self.on_pseudo_release(*id);
                }
                // A writable being written is released after its end.
                CapDescriptor::SenderHosted(id) if !self.on_writable_release(*id, 1) => {
                    self.send(serde_json::json!(["release", -(*id as i64), 1]))
                }
                _ => {}
            }
        }
    }

    /// Takes the references the actor sent with these capabilities, each with a
    /// holder (see `holds.rs`).
    fn take_caps(&mut self, caps: &[CapDescriptor]) {
        for cap in caps {
            if let CapDescriptor::SenderHosted(id) = cap {
                self.holds.take(*id);
            }
        }
    }

    /// One more holder of each of the actor's objects among these capabilities.
    fn hold_caps(&mut self, caps: &[CapDescriptor]) {
        for cap in caps {
            if let CapDescriptor::SenderHosted(id) = cap {
                self.holds.hold(*id);
            }
        }
    }

    /// One holder fewer of each of the actor's objects among these capabilities.
    fn unhold_caps(&mut self, caps: &[CapDescriptor]) {
        for cap in caps {
            if let CapDescriptor::SenderHosted(id) = cap {
                self.unhold(*id);
            }
        }
    }

    /// One holder fewer of the actor's object `id`: its references go back with
    /// the last.
    fn unhold(&mut self, id: ExportId) {
        if let Some(count) = self.holds.unhold(id) {
            self.control(&Header::Release { id, count });
        }
    }
}

/// Adds `offset` to the index of every `["$cap", i]` in `value` (to merge the
/// capabilities of several values into one message).
pub(super) fn shift_caps(value: &mut Value, offset: usize) {
    match value {
        Value::Array(items) => {
            if let [Value::String(code), Value::Number(index)] = items.as_slice() {
                if code == CAP {
                    if let Some(i) = index.as_u64() {
                        items[1] = Value::from(i + offset as u64);
                    }
                    return;
                }
            }
            items.iter_mut().for_each(|v| shift_caps(v, offset));
        }
        Value::Object(map) => map.values_mut().for_each(|v| shift_caps(v, offset)),
        _ => {}
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
