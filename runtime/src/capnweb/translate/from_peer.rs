//! Messages from the Cap'n Web peer, turned into frames for the actor: pushes (calls
//! by name, property reads; see `pushes.rs` for where they go), pulls, releases,
//! resolves and rejects (of this side's pushes, or of the peer's promises: see
//! `promises.rs`), and the expressions inside them.

use super::promises::{self, Parts, Promises};
use super::pushes::{On, Push};
use super::*;

/// Converts the peer's expressions into payload expressions, collecting the
/// capabilities they carry.
pub(super) struct Importing<'t> {
    exported: &'t HashMap<u64, ExportId>,
    streams: &'t mut streams::Streams,
    table: &'t mut Promises,
    pub(super) caps: Vec<CapDescriptor>,
    /// The peer's promises met (ids negated), when this message may carry them;
    /// else they are refused.
    pub(super) promises: Option<Vec<u64>>,
    /// The first form met that this server does not support.
    pub(super) unsupported: Option<String>,
}

impl Importing<'_> {
    /// What was imported, as parts holding `values` (of a message of `size`
    /// bytes), and the first form met that is not supported.
    pub(super) fn into_parts(self, values: Vec<Value>, size: usize) -> (Parts, Option<String>) {
        let promises = self.promises.unwrap_or_default();
        (
            Parts::new(values, self.caps, promises, size),
            self.unsupported,
        )
    }

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

    pub(super) fn expr(&mut self, value: &Value) -> Checked<Value> {
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
                let id = int(id)?;
                if id >= 0 {
                    return malformed(
                        "a promise with a non-negative id (exporters pick negative ids)",
                    );
                }
                let id = id.unsigned_abs();
                self.table.introduce(id)?;
                if let Some(promises) = &mut self.promises {
                    promises.push(id);
                    return Ok(promises::placeholder(id));
                }
                // Released at once by the refusal: the session goes on.
                self.caps.push(CapDescriptor::SenderHosted(id));
                Ok(self.refuse(
                    "promises are taken among call arguments and results only; await them first",
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
            ("readable", [_]) if self.streams.refused.is_some() => {
                Ok(self.refuse(self.streams.refused.unwrap_or_default()))
            }
            ("readable", [id]) => {
                let source = self.streams.readable(int(id)?)?;
                Ok(self.cap(CapDescriptor::SenderHosted(source)))
            }
            ("writable", [id]) if self.streams.refused.is_some() => {
                // Given back with the refusal.
                let id = streams::writable_id(int(id)?)?;
                self.caps.push(CapDescriptor::SenderHosted(id));
                Ok(self.refuse(self.streams.refused.unwrap_or_default()))
            }
            ("writable", [id]) => {
                let id = self.streams.writable(int(id)?)?;
                Ok(self.cap(CapDescriptor::SenderHosted(id)))
            }
            ("bytes", [Value::String(_), ..])
            | ("bigint", [Value::String(_)])
            | ("undefined" | "inf" | "-inf" | "nan", [])
            | ("date", [Value::Number(_)]) => Ok(Value::Array(items.to_vec())),
            ("error", [Value::String(_), Value::String(_), ..]) => Ok(Value::Array(items.to_vec())),
            ("remap" | "blob" | "url" | "headers" | "request" | "response", _) => Ok(self.refuse(
                format!("Cap'n Web `{code}` values are not supported by this server"),
            )),
            (code, _) => malformed(format!("unknown or malformed expression `{code}`")),
        }
    }
}

/// A property name of a path: a string, or a number (JavaScript's property keys
/// are text: `a[1]` is `a["1"]`).
fn key(value: &Value) -> Checked<String> {
    match value {
        Value::String(name) => Ok(name.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => malformed(format!(
            "a property path holding {other}, which is neither a name nor a number"
        )),
    }
}

impl Translator {
    /// Gives back the objects and promises of the peer's that an expression
    /// carries which this side only reads (an error it rejects with), as a
    /// `capnweb` peer evaluates and disposes one.
    pub(super) fn release_carried(&mut self, expr: &Value) -> Checked<()> {
        let (parts, _) = self.import_parts(expr)?;
        self.release_parts(&parts);
        Ok(())
    }

    /// Takes one message from the peer. An error ends the session with its reason.
    pub(crate) fn take_peer_message(&mut self, text: &str) -> Result<(), String> {
        if self.kept_bytes > self.max_kept {
            return Err(format!(
                "results the peer has not released hold {} bytes, beyond the limit of {} \
                 (release results once read)",
                self.kept_bytes, self.max_kept
            ));
        }
        if text.len() > self.max_message {
            return Err(format!(
                "a message of {} bytes exceeds the limit of {} bytes",
                text.len(),
                self.max_message
            ));
        }
        // The commonest messages, `["pull",n]` and `["release",n,k]` as the
        // `capnweb` package writes them, skip building a tree.
        self.message_size = text.len();
        if let Some(done) = self.quick_message(text) {
            return done;
        }
        let message =
            capnweb::parse(text.as_bytes()).map_err(|e| format!("malformed message: {e}"))?;
        self.message(&message).map_err(|bad| {
            let mut shown = text.to_owned();
            if shown.len() > 200 {
                let mut end = 200;
                while !shown.is_char_boundary(end) {
                    end -= 1;
                }
                shown.truncate(end);
                shown.push('…');
            }
            bad.reason(&shown)
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
        } else if text.starts_with("[\"stream\",") {
            self.quick_write(text)?
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
        Some(checked.map_err(|bad| bad.reason(text)))
    }

    /// Imports the peer's expressions, refusing promises among them.
    pub(super) fn importing(&mut self) -> Importing<'_> {
        Importing {
            exported: &self.exported,
            streams: &mut self.streams,
            table: &mut self.promises,
            caps: Vec::new(),
            promises: None,
            unsupported: None,
        }
    }

    /// Imports the peer's expressions, taking promises among them.
    pub(super) fn importing_promises(&mut self) -> Importing<'_> {
        let mut importing = self.importing();
        importing.promises = Some(Vec::new());
        importing
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
            ("pipe", []) => self.on_pipe(),
            ("stream", [expr]) => self.on_stream_message(expr, self.message_size),
            _ => malformed(format!("unknown message type `{kind}`")),
        }
    }

    fn on_push(&mut self, expr: &Value) -> Checked<()> {
        // Kept until released, a push's result holds memory and objects of ours as
        // an answer kept for the actor's `Finish` does: the actor's limit holds.
        if self.answers.len() >= self.max_answers {
            return Err(Bad::OverLimit(format!(
                "more than {} pushes held (waiting, running, or done and not released)",
                self.max_answers
            )));
        }
        self.pushes += 1;
        let question = self.pushes;
        if let Some([Value::String(code), id, Value::Array(path), Value::Array(args)]) =
            expr.as_array().map(Vec::as_slice)
        {
            if (code == "pipeline" || code == "import")
                && self.on_pipe_push(question, int(id)?, path, args, false)
            {
                return Ok(());
            }
        }
        let size = self.message_size;
        let mut importing = self.importing_promises();
        let push = match expr.as_array().map(Vec::as_slice) {
            // A call, or (without arguments) a property read.
            Some([Value::String(code), id, Value::Array(path), args @ ..])
                if (code == "pipeline" || code == "import")
                    && matches!(args, [] | [Value::Array(_)]) =>
            {
                let on = match int(id)? {
                    0 => On::Export(crate::wire::ROOT_EXPORT),
                    n if n < 0 => On::Export(importing.our_export(n)?),
                    n if (n as u64) < question => On::Answer(n as u64),
                    n => return malformed(format!("a call on push {n}, which is not made yet")),
                };
                let path = path.iter().map(key).collect::<Checked<Vec<_>>>()?;
                let args = match args {
                    [Value::Array(args)] => Some(
                        args.iter()
                            .map(|a| importing.expr(a))
                            .collect::<Checked<Vec<_>>>()?,
                    ),
                    _ => None,
                };
                Some((on, path, args))
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
            _ => {
                importing.expr(expr)?;
                importing
                    .refuse("only method calls and property reads may be pushed to this server");
                None
            }
        };
        let (parts, unsupported) = importing.into_parts(Vec::new(), size);
        match (push, unsupported) {
            (Some((on, path, args)), None) => self.take_push(Push {
                question,
                on,
                path,
                args: args.map(|values| {
                    let mut parts = parts;
                    parts.values = values;
                    parts
                }),
            }),
            (_, reason) => {
                self.release_parts(&parts);
                let reason = error_expr(&reason.unwrap_or_default());
                self.done(question, Held::rejection(reason), false);
                Ok(())
            }
        }
    }

    fn on_pull(&mut self, id: i64) -> Checked<()> {
        let question = id as u64;
        let pending = self
            .answers
            .get_mut(&question)
            .filter(|a| id > 0 && !a.released);
        let Some(answer) = pending else {
            return malformed(format!("pull of {id}, which is not a pending push"));
        };
        if answer.pulled {
            return malformed(format!("a second pull of {id}"));
        }
        answer.pulled = true;
        if matches!(answer.stage, Stage::Done { .. }) {
            self.send_result(question);
        } else {
            self.awaited += 1;
        }
        Ok(())
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
            if let Some(p) = self.streams.exported_pipe(id.unsigned_abs()) {
                self.on_pipe_release(p);
                return Ok(());
            }
            let Some(export) = self.exported.remove(&id.unsigned_abs()) else {
                return malformed(format!("release of {id}, which is not exported"));
            };
            // One id per introduction: it is one holder.
            self.unhold(export);
            return Ok(());
        }
        let question = id as u64;
        if self.on_pipe_release(question) {
            return Ok(());
        }
        self.release_answer(question)
    }

    /// A resolve (`Ok`) or reject (`Err`) of one of our pushes, or (a negative id)
    /// of one of the peer's promises.
    fn on_resolve(&mut self, id: i64, expr: Result<&Value, &Value>) -> Checked<()> {
        if id < 0 {
            return self.on_settle(id.unsigned_abs(), expr);
        }
        let k = id as u64;
        if k == 0 || k > self.next_push {
            return malformed(format!("a settlement of {id}, which is no push of ours"));
        }
        let (parts, unsupported) = match expr {
            Ok(value) => self.import_parts(value)?,
            Err(error) => {
                self.release_carried(error)?;
                (Parts::default(), None)
            }
        };
        if self.on_write_result(k, expr.is_ok()) {
            self.release_parts(&parts);
            return Ok(());
        }
        let question = self.asked.get(&k).copied();
        let Some(question) = question.filter(|_| !self.is_parked(k)) else {
            // Released already, or settled already: drop what it carried.
            self.release_parts(&parts);
            return Ok(());
        };
        match (expr, unsupported) {
            (Ok(_), None) if parts.promises.is_empty() => self.returned(k, question, parts),
            // Delivered once the promises in it settle.
            (Ok(_), None) => self.park(k, question, parts)?,
            (Ok(_), Some(why)) => {
                self.release_parts(&parts);
                self.failed(question, &WireError::Undecodable(why));
            }
            (Err(error), _) => {
                self.failed(question, &thrown(error));
            }
        }
        Ok(())
    }
}
