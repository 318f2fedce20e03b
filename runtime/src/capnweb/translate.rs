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
//! `["$cap", i]` placeholders (see `codec/capnweb.rs`).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::Value;

use crate::codec::capnweb::{self, ARGS, CAP, ERR, OK};
use crate::codec::AnyCodec;
use crate::error::WireError;
use crate::interface::by_name;
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

/// Converts the peer's expressions into payload expressions, collecting the
/// capabilities they carry.
struct Importing<'t> {
    exported: &'t HashMap<u64, ExportId>,
    caps: Vec<CapDescriptor>,
    /// The first form met that this server does not support.
    unsupported: Option<String>,
}

impl Importing<'_> {
    fn refuse(&mut self, why: impl Into<String>) -> Value {
        self.unsupported.get_or_insert_with(|| why.into());
        Value::Null
    }

    fn cap(&mut self, descriptor: CapDescriptor) -> Value {
        self.caps.push(descriptor);
        capnweb_special(CAP, [Value::from(self.caps.len() - 1)])
    }

    /// One of our exports, named by the peer (as its import `-id`).
    fn our_export(&self, id: i64) -> Checked<ExportId> {
        if id == 0 {
            return Ok(crate::wire::ROOT_EXPORT);
        }
        match self.exported.get(&id.unsigned_abs()) {
            Some(&export) if id < 0 => Ok(export),
            _ => malformed(format!("no such entry on the exports table: {id}")),
        }
    }

    fn expr(&mut self, value: &Value) -> Checked<Value> {
        match value {
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (key, value) in map {
                    out.insert(key.clone(), self.expr(value)?);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => self.array(items),
            other => Ok(other.clone()),
        }
    }

    fn array(&mut self, items: &[Value]) -> Checked<Value> {
        if let [Value::Array(inner)] = items {
            let inner = inner.iter().map(|v| self.expr(v)).collect::<Checked<_>>()?;
            return Ok(capnweb::array(inner));
        }
        let Some((Value::String(code), args)) = items.split_first() else {
            return malformed("an array that is not an expression (arrays are escaped as [[...]])");
        };
        match (code.as_str(), args) {
            ("export", [id]) => {
                let id = int(id)?;
                if id > 0 {
                    return malformed("an export with a positive id (exporters pick negative ids)");
                }
                Ok(self.cap(CapDescriptor::SenderHosted(id.unsigned_abs())))
            }
            ("promise", [id]) => {
                // Released at once by the refusal: the session goes on.
                let id = int(id)?;
                self.caps
                    .push(CapDescriptor::SenderHosted(id.unsigned_abs()));
                Ok(self.refuse(
                    "promises passed as values are not supported by this server; await them first",
                ))
            }
            ("import" | "pipeline", [id]) => {
                let id = int(id)?;
                let descriptor = if id > 0 {
                    CapDescriptor::ReceiverAnswer(id as u64)
                } else {
                    CapDescriptor::ReceiverHosted(self.our_export(id)?)
                };
                Ok(self.cap(descriptor))
            }
            ("import" | "pipeline", _) => Ok(self.refuse(
                "calls and property reads nested inside arguments are not supported by this server",
            )),
            ("bytes", [Value::String(_), ..])
            | ("bigint", [Value::String(_)])
            | ("undefined" | "inf" | "-inf" | "nan", [])
            | ("date", [Value::Number(_)]) => Ok(Value::Array(items.to_vec())),
            ("error", [Value::String(_), Value::String(_), ..]) => Ok(Value::Array(items.to_vec())),
            (
                "remap" | "writable" | "readable" | "blob" | "url" | "headers" | "request"
                | "response",
                _,
            ) => Ok(self.refuse(format!(
                "Cap'n Web `{code}` values are not supported by this server"
            ))),
            (code, _) => malformed(format!("unknown or malformed expression `{code}`")),
        }
    }
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
            pushes: 0,
            answers: HashMap::new(),
            awaited: 0,
            next_export: 0,
            exported: HashMap::new(),
            next_push: 0,
            asked: HashMap::new(),
            by_question: HashMap::new(),
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
            if let CapDescriptor::SenderHosted(id) = cap {
                self.send(serde_json::json!(["release", -(*id as i64), 1]));
            }
        }
    }

    // ---- from the peer ----

    /// Takes one message from the peer. An error ends the session with its reason.
    pub(crate) fn take_peer_message(&mut self, text: &str) -> Result<(), String> {
        if text.len() > self.max_message {
            return Err(format!(
                "a message of {} bytes exceeds the limit of {} bytes",
                text.len(),
                self.max_message
            ));
        }
        // The commonest messages, `["pull",n]` and `["release",n,k]` as the
        // `capnweb` package writes them, skip building a tree.
        if let Some(done) = self.quick_message(text) {
            return done;
        }
        let message =
            capnweb::parse(text.as_bytes()).map_err(|e| format!("malformed message: {e}"))?;
        self.message(&message).map_err(|Bad::Malformed(why)| {
            let mut shown = text.to_owned();
            if shown.len() > 200 {
                let mut end = 200;
                while !shown.is_char_boundary(end) {
                    end -= 1;
                }
                shown.truncate(end);
                shown.push('…');
            }
            format!("bad RPC message ({why}): {shown}")
        })
    }

    /// Takes a `pull` or `release` written without spaces and with small integers,
    /// else `None` (the message goes the general way).
    fn quick_message(&mut self, text: &str) -> Option<Result<(), String>> {
        fn small(digits: &str) -> Option<i64> {
            let ok = !digits.is_empty()
                && digits.len() <= 15
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            ok.then(|| digits.parse().ok()).flatten()
        }
        let checked = if let Some(rest) = text.strip_prefix("[\"pull\",") {
            self.on_pull(small(rest.strip_suffix(']')?)?)
        } else if let Some(rest) = text.strip_prefix("[\"release\",") {
            let (id, count) = rest.strip_suffix(']')?.split_once(',')?;
            let id = match id.strip_prefix('-') {
                Some(negative) => -small(negative)?,
                None => small(id)?,
            };
            self.on_release(id, small(count)?)
        } else {
            return None;
        };
        Some(checked.map_err(|Bad::Malformed(why)| format!("bad RPC message ({why}): {text}")))
    }

    fn importing(&self) -> Importing<'_> {
        Importing {
            exported: &self.exported,
            caps: Vec::new(),
            unsupported: None,
        }
    }

    fn message(&mut self, message: &Value) -> Checked<()> {
        let Some(items) = message.as_array() else {
            return malformed("a message must be an array");
        };
        let Some((Value::String(kind), args)) = items.split_first() else {
            return malformed("a message must start with its type");
        };
        match (kind.as_str(), args) {
            ("push", [expr]) => self.on_push(expr),
            ("pull", [id]) => self.on_pull(int(id)?),
            ("release", [id, count]) => self.on_release(int(id)?, int(count)?),
            ("resolve", [id, expr]) => self.on_resolve(int(id)?, Ok(expr)),
            ("reject", [id, expr]) => self.on_resolve(int(id)?, Err(expr)),
            ("abort", [expr]) => {
                self.control(&Header::abort(&error_text(expr)));
                Ok(())
            }
            ("stream" | "pipe", _) => malformed(format!(
                "`{kind}` messages (streams) are not supported by this server"
            )),
            _ => malformed(format!("unknown message type `{kind}`")),
        }
    }

    fn on_push(&mut self, expr: &Value) -> Checked<()> {
        self.pushes += 1;
        let question = self.pushes;
        let mut importing = self.importing();
        let call = match expr.as_array().map(Vec::as_slice) {
            Some([Value::String(code), id, Value::Array(path), Value::Array(args)])
                if code == "pipeline" || code == "import" =>
            {
                let target = match int(id)? {
                    0 => Target::Export(crate::wire::ROOT_EXPORT),
                    n if n < 0 => Target::Export(importing.our_export(n)?),
                    n if (n as u64) < question => Target::Answer(n as u64),
                    n => return malformed(format!("a call on push {n}, which is not made yet")),
                };
                let method = match path.as_slice() {
                    [] => Some(CALLBACK_METHOD),
                    [Value::String(name)] => Some(by_name::method_id(name)),
                    [_] => malformed("a property name that is not a string")?,
                    _ => {
                        importing.refuse(
                            "property paths longer than one name are not supported by this server",
                        );
                        None
                    }
                };
                let args = args
                    .iter()
                    .map(|a| importing.expr(a))
                    .collect::<Checked<Vec<_>>>()?;
                method.map(|method| (target, method, args))
            }
            Some(
                [Value::String(code), _, Value::Array(_), Value::Array(captures), Value::Array(_)],
            ) if code == "remap" => {
                for capture in captures {
                    importing.expr(capture)?;
                }
                importing.refuse("`.map()` (remap) is not supported by this server");
                None
            }
            Some([Value::String(code), _, Value::Array(_)])
                if code == "pipeline" || code == "import" =>
            {
                importing
                    .refuse("reading properties is not supported by this server; call methods");
                None
            }
            _ => {
                importing.expr(expr)?;
                importing.refuse("only method calls may be pushed to this server");
                None
            }
        };
        let Importing {
            caps, unsupported, ..
        } = importing;
        match (call, unsupported) {
            (Some((target, method, args)), None) => {
                let header = Header::Call {
                    question: Some(question),
                    target,
                    method,
                    caps,
                };
                let payload = capnweb_special(ARGS, [Value::Array(args)]);
                self.frame(&header, &payload);
                self.answers
                    .insert(question, Answer::Running { pulled: false });
            }
            (_, reason) => {
                self.release_imports(&caps);
                let reason = reason.unwrap_or_default();
                self.answers.insert(question, Answer::Refused { reason });
            }
        }
        Ok(())
    }

    fn on_pull(&mut self, id: i64) -> Checked<()> {
        let question = id as u64;
        let Some(answer) = self.answers.get_mut(&question).filter(|_| id > 0) else {
            return malformed(format!("pull of {id}, which is not a pending push"));
        };
        match answer {
            Answer::Running { pulled: true } | Answer::Sent { .. } => {
                malformed(format!("a second pull of {id}"))
            }
            Answer::Running { pulled } => {
                *pulled = true;
                self.awaited += 1;
                Ok(())
            }
            Answer::Refused { reason, .. } => {
                let reason = std::mem::take(reason);
                self.answers.insert(
                    question,
                    Answer::Sent {
                        needs_finish: false,
                    },
                );
                self.send(serde_json::json!(["reject", id, error_expr(&reason)]));
                Ok(())
            }
            Answer::Returned { .. } => {
                let Some(Answer::Returned {
                    outcome,
                    payload,
                    caps,
                }) = self.answers.remove(&question)
                else {
                    unreachable!("matched above")
                };
                self.settle(question, outcome, payload, caps);
                Ok(())
            }
        }
    }

    fn on_release(&mut self, id: i64, count: i64) -> Checked<()> {
        if count < 1 {
            return malformed(format!("release of {id} with count {count}"));
        }
        if id == 0 {
            // The root: farcall keeps it while the connection lives.
            return Ok(());
        }
        if id < 0 {
            let Some(export) = self.exported.remove(&id.unsigned_abs()) else {
                return malformed(format!("release of {id}, which is not exported"));
            };
            // One id per introduction: it stands for one reference.
            self.control(&Header::Release {
                id: export,
                count: 1,
            });
            return Ok(());
        }
        let question = id as u64;
        let Some(answer) = self.answers.remove(&question) else {
            return malformed(format!("release of {id}, which is not a pending push"));
        };
        match answer {
            Answer::Running { pulled } => {
                if pulled {
                    self.awaited -= 1;
                }
                self.control(&Header::Finish { question });
            }
            Answer::Returned { outcome, caps, .. } => {
                self.undescribe(&caps);
                if outcome != Outcome::Value || !caps.is_empty() {
                    self.control(&Header::Finish { question });
                }
            }
            Answer::Sent { needs_finish } => {
                if needs_finish {
                    self.control(&Header::Finish { question });
                }
            }
            Answer::Refused { .. } => {}
        }
        Ok(())
    }

    /// A resolve (`Ok`) or reject (`Err`) of one of our pushes.
    fn on_resolve(&mut self, id: i64, expr: Result<&Value, &Value>) -> Checked<()> {
        let mut importing = self.importing();
        let value = match expr {
            Ok(value) => Some(importing.expr(value)?),
            Err(_) => None,
        };
        let Importing {
            caps, unsupported, ..
        } = importing;
        let known = u64::try_from(id)
            .ok()
            .and_then(|k| self.asked.get(&k).map(|&q| (k, q)));
        let Some((k, question)) = known else {
            // Released already (or a promise we never took): drop what it carried.
            self.release_imports(&caps);
            return Ok(());
        };
        let needs_finish = match (value, unsupported) {
            (Some(value), None) => {
                let needs_finish = !caps.is_empty();
                let header = Header::Return {
                    question,
                    outcome: Outcome::Value,
                    caps,
                };
                self.frame(&header, &value);
                needs_finish
            }
            (Some(_), Some(why)) => {
                self.release_imports(&caps);
                self.failed(question, &WireError::Undecodable(why));
                true
            }
            (None, _) => {
                let text = expr.err().map(error_text).unwrap_or_default();
                self.failed(
                    question,
                    &WireError::Panic(Some(format!("the JavaScript peer threw {text}"))),
                );
                true
            }
        };
        if !needs_finish {
            self.asked.remove(&k);
            self.by_question.remove(&question);
            self.send(serde_json::json!(["release", k, 1]));
        }
        Ok(())
    }

    // ---- from the actor ----

    /// Takes one frame from the actor.
    pub(crate) fn take_actor_frame(&mut self, frame: Bytes) {
        if Hello::decode(&frame).is_some() {
            return;
        }
        let (header, payload) = match decode_frame(self.codec, frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::error!(error = %e, "cannot decode our own frame");
                return;
            }
        };
        match header {
            Header::Return {
                question,
                outcome,
                caps,
            } => self.on_return(question, outcome, payload, caps),
            Header::Call {
                question,
                target,
                method,
                caps,
            } => self.on_call(question, target, method, &payload, caps),
            Header::Finish { question } => {
                if let Some(k) = self.by_question.remove(&question) {
                    self.asked.remove(&k);
                    self.send(serde_json::json!(["release", k, 1]));
                }
            }
            Header::Release { id, count } => {
                if id != crate::wire::ROOT_EXPORT {
                    self.send(serde_json::json!(["release", -(id as i64), count]));
                }
            }
            Header::Bootstrap { question, .. } => {
                // The peer's main object is its export 0, always there.
                let header = Header::Return {
                    question,
                    outcome: Outcome::Value,
                    caps: vec![CapDescriptor::SenderHosted(crate::wire::ROOT_EXPORT)],
                };
                let payload = capnweb::to_value(&()).unwrap_or(Value::Null);
                self.frame(&header, &payload);
            }
            Header::Abort { reason } => {
                self.send(serde_json::json!(["abort", error_expr(&reason)]));
            }
            Header::Disembargo {
                question,
                reflected: false,
            } => {
                // Cap'n Web has no embargo: the calls reflected back arrive in the
                // order the peer forwards them.
                self.control(&Header::Disembargo {
                    question,
                    reflected: true,
                });
            }
            Header::Foreign { header, .. } => match *header {
                Header::Return { question, caps, .. } => {
                    let why = "a result forwarded from a connection with another codec \
                               cannot be translated to Cap'n Web";
                    let payload = encode_payload(self.codec, &WireError::Undecodable(why.into()))
                        .map(Bytes::from)
                        .unwrap_or_default();
                    self.on_return(question, Outcome::Failed, payload, caps);
                }
                Header::Call { question, caps, .. } => {
                    self.undescribe(&caps);
                    if let Some(question) = question {
                        let why = "a call forwarded from a connection with another codec \
                                   cannot be translated to Cap'n Web";
                        self.failed(question, &WireError::Undecodable(why.into()));
                    }
                }
                _ => {}
            },
            Header::Disembargo { .. } | Header::Ping | Header::Revoked { .. } => {}
        }
    }

    fn on_return(
        &mut self,
        question: QuestionId,
        outcome: Outcome,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
    ) {
        match self.answers.remove(&question) {
            Some(Answer::Running { pulled: true }) => {
                self.awaited -= 1;
                self.settle(question, outcome, payload, caps);
            }
            Some(Answer::Running { pulled: false }) => {
                self.answers.insert(
                    question,
                    Answer::Returned {
                        outcome,
                        payload,
                        caps,
                    },
                );
            }
            other => {
                // Released before it returned.
                if let Some(other) = other {
                    self.answers.insert(question, other);
                }
                self.undescribe(&caps);
            }
        }
    }

    /// Sends a pulled result as a resolve or a reject.
    fn settle(
        &mut self,
        question: QuestionId,
        outcome: Outcome,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
    ) {
        let needs_finish = outcome != Outcome::Value || !caps.is_empty();
        self.answers.insert(question, Answer::Sent { needs_finish });
        let value = match outcome {
            Outcome::Failed => {
                self.undescribe(&caps);
                let text = match self.codec.decode::<WireError>(&payload) {
                    Ok(error) => wire_error_text(error),
                    Err(e) => format!("the call failed (undecodable error: {e})"),
                };
                self.send(serde_json::json!(["reject", question, error_expr(&text)]));
                return;
            }
            Outcome::Value | Outcome::AppError => match capnweb::parse(&payload) {
                Ok(value) => value,
                Err(e) => {
                    self.undescribe(&caps);
                    let text = format!("the result could not be translated: {e}");
                    self.send(serde_json::json!(["reject", question, error_expr(&text)]));
                    return;
                }
            },
        };
        if let Some([Value::String(code), error, text]) = value.as_array().map(Vec::as_slice) {
            if code == ERR {
                let text = match text {
                    Value::String(text) => text.clone(),
                    _ => error_text(error),
                };
                self.undescribe(&caps);
                self.send(serde_json::json!(["reject", question, error_expr(&text)]));
                return;
            }
        }
        let value = match value {
            Value::Array(mut pair) if pair.len() == 2 && pair[0] == OK => pair.swap_remove(1),
            Value::Array(mut pair) if pair.len() == 2 && pair[0] == ARGS && pair[1].is_array() => {
                match pair.swap_remove(1) {
                    Value::Array(items) => capnweb::array(items),
                    _ => unreachable!("checked above"),
                }
            }
            value => value,
        };
        // Without capabilities there are no placeholders to replace.
        let value = if caps.is_empty() {
            value
        } else {
            self.export(value, &caps)
        };
        self.send(serde_json::json!(["resolve", question, value]));
    }

    /// Replaces `["$cap", i]` placeholders with the peer's view of `caps[i]`.
    fn export(&mut self, value: Value, caps: &[CapDescriptor]) -> Value {
        match value {
            Value::Array(items) => {
                if let [Value::String(code), index] = items.as_slice() {
                    if code == CAP {
                        let cap = index
                            .as_u64()
                            .and_then(|i| caps.get(usize::try_from(i).ok()?));
                        return match cap {
                            Some(cap) => self.reference(*cap),
                            None => error_expr("a capability missing from its message"),
                        };
                    }
                }
                Value::Array(items.into_iter().map(|v| self.export(v, caps)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, self.export(v, caps)))
                    .collect(),
            ),
            other => other,
        }
    }

    fn reference(&mut self, cap: CapDescriptor) -> Value {
        match cap {
            CapDescriptor::SenderHosted(id) => {
                self.next_export += 1;
                self.exported.insert(self.next_export, id);
                serde_json::json!(["export", -(self.next_export as i64)])
            }
            CapDescriptor::ReceiverHosted(id) => serde_json::json!(["import", -(id as i64)]),
            CapDescriptor::ReceiverAnswer(question) => match self.by_question.get(&question) {
                Some(&k) => serde_json::json!(["pipeline", k]),
                None => error_expr("a promise that was already released"),
            },
        }
    }

    /// A call the actor makes on one of the peer's objects.
    fn on_call(
        &mut self,
        question: Option<QuestionId>,
        target: Target,
        method: u32,
        payload: &[u8],
        caps: Vec<CapDescriptor>,
    ) {
        let target = match target {
            Target::Export(id) => Some(-(id as i64)),
            Target::Answer(q) => self.by_question.get(&q).map(|&k| k as i64),
        };
        let path = if method == CALLBACK_METHOD {
            Some(Vec::new())
        } else {
            by_name::name(method).map(|name| vec![Value::from(name)])
        };
        let args = capnweb::parse(payload);
        let (Some(target), Some(path), Ok(args)) = (target, path, args) else {
            self.undescribe(&caps);
            if let Some(question) = question {
                let error = if target.is_none() {
                    WireError::ObjectNotFound
                } else {
                    WireError::MethodNotFound
                };
                self.failed(question, &error);
            }
            return;
        };
        let args = match args.as_array().map(Vec::as_slice) {
            Some([Value::String(code), Value::Array(list)]) if code == ARGS => list.clone(),
            Some([Value::String(code)]) if code == "undefined" => Vec::new(),
            _ => vec![args],
        };
        let args: Vec<Value> = if caps.is_empty() {
            args
        } else {
            args.into_iter().map(|a| self.export(a, &caps)).collect()
        };
        self.next_push += 1;
        let k = self.next_push;
        self.send(serde_json::json!([
            "push",
            ["pipeline", target, path, args]
        ]));
        match question {
            Some(question) => {
                self.asked.insert(k, question);
                self.by_question.insert(question, k);
                self.send(serde_json::json!(["pull", k]));
            }
            None => self.send(serde_json::json!(["release", k, 1])),
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
