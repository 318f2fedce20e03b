//! Streams coming in: a pipe the peer opens is read here as a farcall stream, its
//! writes queued until the reader's credit lets them through and acknowledged
//! then.

use super::super::from_peer::Importing;
use super::*;

/// A pipe the peer opened: a stream coming in.
pub(super) struct Pipe {
    reader: Reader,
    /// Items the reader may still be sent.
    credit: i64,
    queued: VecDeque<Queued>,
    /// How the writer ended it (`close()`, `abort()` or a release), waiting for
    /// the queue to drain, and the push to answer when it is delivered. Nothing
    /// can be written after it.
    ending: Option<(Ending, Option<u64>)>,
    /// The peer released its pipe.
    released: bool,
    /// The peer's id for it (negated) when this side exported it as a
    /// `WritableStream` rather than the peer opening it.
    exported: Option<u64>,
}

impl Pipe {
    fn new() -> Self {
        Pipe {
            reader: Reader::Unclaimed,
            credit: 0,
            queued: VecDeque::new(),
            ending: None,
            released: false,
            exported: None,
        }
    }
}

/// Where the reader of a pipe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// The readable end was not handed over yet.
    Unclaimed,
    /// Handed over, as the source this side stands for (`["readable", p]` can be
    /// used once per pipe); the reader has not started it.
    Claimed { source: ExportId },
    /// Started: the reader's sink on the actor's export table, of which this side
    /// holds one reference until it delivers the end (`None` after).
    Reading {
        source: ExportId,
        sink: Option<ExportId>,
    },
    /// The reader let go of the source: writes fail.
    Gone,
}

enum Ending {
    Closed,
    Aborted(String),
}

/// A write held until the reader grants credit.
struct Queued {
    write: u64,
    chunk: Chunk,
    caps: Vec<CapDescriptor>,
    size: usize,
}

/// What a write carries.
enum Chunk {
    /// Any expression, as imported.
    Value(Value),
    /// A `Uint8Array`, as the base64 text of its `["bytes", ...]` expression,
    /// taken without building a tree (see [`Translator::quick_write`]).
    Bytes(String),
}

impl Chunk {
    /// Writes the chunk's payload expression.
    fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            // Writing a `Value` into a `Vec` cannot fail.
            Chunk::Value(value) => drop(serde_json::to_writer(&mut *out, value)),
            Chunk::Bytes(base64) => {
                out.extend_from_slice(b"[\"bytes\",\"");
                out.extend_from_slice(base64.as_bytes());
                out.extend_from_slice(b"\"]");
            }
        }
    }
}

/// The base64 text of a write of bytes to a pipe as the `capnweb` package writes
/// it, `["stream",["pipeline",p,["write"],[["bytes","..."]]]]`, and `p`; else
/// `None` (the message goes the general way).
fn bytes_write(text: &str) -> Option<(u64, &str)> {
    let rest = text.strip_prefix(r#"["stream",["pipeline","#)?;
    let (p, rest) = rest.split_once(',')?;
    let ok = !p.is_empty()
        && p.len() <= 15
        && p.bytes().all(|b| b.is_ascii_digit())
        && !(p.len() > 1 && p.starts_with('0'));
    let p = ok.then(|| p.parse::<u64>().ok()).flatten()?;
    let base64 = rest
        .strip_prefix(r#"["write"],[["bytes",""#)?
        .strip_suffix(r#""]]]]"#)?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    base64.bytes().all(plain).then_some((p, base64))
}

impl Streams {
    /// Whether the peer's push id `p` is a pipe.
    fn is_pipe(&self, p: u64) -> bool {
        self.pipes.contains_key(&p)
    }

    /// A pipe for a `WritableStream` this side exports as `-x`, its readable end
    /// handed over already: returns the source that stands for it.
    pub(super) fn export_pipe(&mut self, x: u64) -> ExportId {
        let key = self.new_id();
        let source = self.new_id();
        let mut pipe = Pipe::new();
        pipe.reader = Reader::Claimed { source };
        pipe.exported = Some(x);
        self.pipes.insert(key, pipe);
        self.sources.insert(source, key);
        self.exported_pipes.insert(x, key);
        source
    }

    /// The pipe of the `WritableStream` this side exported as `-x`, if it is one.
    pub(in crate::capnweb::translate) fn exported_pipe(&self, x: u64) -> Option<u64> {
        self.exported_pipes.get(&x).copied()
    }

    /// `["readable", p]` in one of the peer's messages: the id of the source that
    /// stands for the pipe's readable end.
    pub(in crate::capnweb::translate) fn readable(&mut self, p: i64) -> Checked<ExportId> {
        let unclaimed = u64::try_from(p).ok().filter(
            |p| matches!(self.pipes.get(p), Some(pipe) if pipe.reader == Reader::Unclaimed),
        );
        let Some(p) = unclaimed else {
            return malformed(format!(
                "`readable` of {p}, which is not a pipe or whose readable end was taken"
            ));
        };
        let source = self.new_id();
        self.pipes.get_mut(&p).expect("checked above").reader = Reader::Claimed { source };
        self.sources.insert(source, p);
        Ok(source)
    }
}

impl Translator {
    /// The peer's `["pipe"]`: a pipe on this side, numbered like a push.
    pub(in crate::capnweb::translate) fn on_pipe(&mut self) -> Checked<()> {
        // The peer's own pipes: writables this side sent are counted apart.
        if self.streams.pipes.len() - self.streams.exported_pipes.len() >= MAX_PIPES {
            return malformed(format!("more than {MAX_PIPES} pipes open at once"));
        }
        self.pushes += 1;
        self.streams.pipes.insert(self.pushes, Pipe::new());
        Ok(())
    }

    /// The peer's `["stream", ["pipeline", p, ["write"], [chunk]]]`, numbered like a
    /// push, pulled and released by itself.
    pub(in crate::capnweb::translate) fn on_stream_message(
        &mut self,
        expr: &Value,
        size: usize,
    ) -> Checked<()> {
        self.pushes += 1;
        let write = self.pushes;
        let target = match expr.as_array().map(Vec::as_slice) {
            Some([Value::String(code), id, Value::Array(path), Value::Array(args)])
                if code == "pipeline" || code == "import" =>
            {
                Some((int(id)?, path.as_slice(), args.as_slice()))
            }
            _ => None,
        };
        let pipe = match target {
            Some((p, [Value::String(method)], [chunk])) if method == "write" => {
                self.streams.pipe_for(p).map(|p| (p, chunk))
            }
            _ => None,
        };
        let pipe = match (pipe, target) {
            (Some(pipe), _) => Some(pipe),
            // `close()` and `abort()` come the same way, pulled and released by
            // themselves too.
            (None, Some((p, path, args))) if self.on_pipe_push(write, p, path, args, true) => {
                return Ok(())
            }
            _ => None,
        };
        let Some((p, chunk)) = pipe else {
            // What the message carried goes back, as for a refused push.
            let mut importing = self.importing();
            match target {
                Some((_, _, args)) => {
                    for arg in args {
                        importing.expr(arg)?;
                    }
                }
                None => {
                    importing.expr(expr)?;
                }
            }
            let caps = importing.caps;
            self.release_imports(&caps);
            let why = "only writes to pipes may be streamed to this server";
            self.send(serde_json::json!(["reject", write, error_expr(why)]));
            return Ok(());
        };
        let mut importing = self.importing();
        let chunk = Chunk::Value(importing.expr(chunk)?);
        let Importing {
            caps, unsupported, ..
        } = importing;
        self.queue_write(p, write, chunk, caps, unsupported, size)
    }

    /// A write of bytes to a pipe, taken from the message's text without parsing
    /// it into a tree: most of what a large upload costs. `None` when `text` is
    /// not one (the message then goes the general way, which checks everything).
    pub(in crate::capnweb::translate) fn quick_write(&mut self, text: &str) -> Option<Checked<()>> {
        let (p, base64) = bytes_write(text)?;
        if !self.streams.is_pipe(p) {
            return None;
        }
        self.pushes += 1;
        let write = self.pushes;
        let chunk = Chunk::Bytes(base64.to_owned());
        Some(self.queue_write(p, write, chunk, Vec::new(), None, text.len()))
    }

    /// Queues a write to pipe `p` (or refuses it), then forwards what the
    /// reader's credit allows.
    fn queue_write(
        &mut self,
        p: u64,
        write: u64,
        chunk: Chunk,
        caps: Vec<CapDescriptor>,
        unsupported: Option<String>,
        size: usize,
    ) -> Checked<()> {
        let state = &self.streams.pipes[&p];
        let refused = if let Some(why) = unsupported {
            Some(why)
        } else if state.reader == Reader::Gone {
            Some("the stream's reader is gone".to_owned())
        } else if state.ending.is_some() {
            Some("a write after the stream was closed".to_owned())
        } else {
            None
        };
        if let Some(why) = refused {
            self.release_imports(&caps);
            self.send(serde_json::json!(["reject", write, error_expr(&why)]));
            return Ok(());
        }
        if self.streams.queued_bytes + size > MAX_QUEUED_BYTES {
            return malformed(format!(
                "writes to streams beyond what their readers took exceed {MAX_QUEUED_BYTES} bytes \
                 (the writer does not wait for acknowledgements)"
            ));
        }
        self.streams.queued_bytes += size;
        let pipe = self.streams.pipes.get_mut(&p).expect("checked above");
        pipe.queued.push_back(Queued {
            write,
            chunk,
            caps,
            size,
        });
        self.flush(p);
        Ok(())
    }

    /// A push (or, when `streamed`, a stream message: pulled and released by
    /// itself) on one of the peer's pipes: `close()` or `abort(reason)`. Returns
    /// whether `target` is a pipe (the push is then answered here).
    pub(in crate::capnweb::translate) fn on_pipe_push(
        &mut self,
        question: u64,
        target: i64,
        path: &[Value],
        args: &[Value],
        streamed: bool,
    ) -> bool {
        let Some(p) = self.streams.pipe_for(target) else {
            return false;
        };
        let ending = match (path, args) {
            ([Value::String(m)], []) if m == "close" => Ending::Closed,
            ([Value::String(m)], []) if m == "abort" => {
                Ending::Aborted("the writer aborted the stream".into())
            }
            ([Value::String(m)], [reason, ..]) if m == "abort" => Ending::Aborted(format!(
                "the writer aborted the stream: {}",
                error_text(reason)
            )),
            ([Value::String(m)], _) if m == "write" => {
                let why = "writes to a pipe must be `stream` messages";
                self.refuse_local(question, why, streamed);
                return true;
            }
            _ => {
                let why = "a pipe's writable end has `write`, `close` and `abort` only";
                self.refuse_local(question, why, streamed);
                return true;
            }
        };
        let pipe = self.streams.pipes.get_mut(&p).expect("checked above");
        if pipe.ending.is_some() {
            self.refuse_local(question, "the stream was already closed", streamed);
            return true;
        }
        // An abort, as on a `WritableStream`, discards the writes not yet taken:
        // the reader learns of it at once rather than after them.
        let discarded: Vec<Queued> = match ending {
            Ending::Aborted(_) => pipe.queued.drain(..).collect(),
            Ending::Closed => Vec::new(),
        };
        pipe.ending = Some((ending, Some(question)));
        for q in discarded {
            self.streams.queued_bytes -= q.size;
            self.release_imports(&q.caps);
            let why = error_expr("the writer aborted the stream before this was read");
            self.send(serde_json::json!(["reject", q.write, why]));
        }
        if streamed {
            self.awaited += 1;
        }
        let mut answer = Answer::new(Stage::Local);
        answer.pulled = streamed;
        answer.streamed = streamed;
        self.answers.insert(question, answer);
        self.flush(p);
        true
    }

    /// Refuses a push (rejected when pulled) or a stream message (at once).
    fn refuse_local(&mut self, question: u64, why: &str, streamed: bool) {
        if streamed {
            self.send(serde_json::json!(["reject", question, error_expr(why)]));
        } else {
            self.done(question, Held::rejection(error_expr(why)), false);
        }
    }

    /// The peer released its pipe `p`; returns whether `p` is a pipe.
    pub(in crate::capnweb::translate) fn on_pipe_release(&mut self, p: u64) -> bool {
        let Some(pipe) = self.streams.pipes.get_mut(&p) else {
            return false;
        };
        pipe.released = true;
        if pipe.ending.is_none() {
            let why = "the writer went away without closing the stream".to_owned();
            pipe.ending = Some((Ending::Aborted(why), None));
        }
        self.flush(p);
        self.forget_pipe(p);
        true
    }

    /// A call of the reader on the source this side stands for: `start` or `credit`.
    pub(super) fn on_source_call(
        &mut self,
        source: ExportId,
        method: u32,
        payload: &[u8],
        caps: Vec<CapDescriptor>,
    ) {
        let Some(&p) = self.streams.sources.get(&source) else {
            return self.undescribe(&caps);
        };
        match method {
            START => {
                let window = capnweb::parse(payload).ok().and_then(|v| v[1][1].as_u64());
                let (Some(window), [CapDescriptor::SenderHosted(sink)]) = (window, caps.as_slice())
                else {
                    return self.undescribe(&caps);
                };
                let sink = *sink;
                let pipe = self
                    .streams
                    .pipes
                    .get_mut(&p)
                    .expect("sources map to pipes");
                let Reader::Claimed { source } = pipe.reader else {
                    let refused = serde_json::json!({"Refused": "the stream was already started"});
                    self.stream_call(sink, END, Vec::new(), refused);
                    return self.control(&Header::Release { id: sink, count: 1 });
                };
                pipe.reader = Reader::Reading {
                    source,
                    sink: Some(sink),
                };
                pipe.credit = i64::try_from(window).unwrap_or(i64::MAX);
                self.flush(p);
            }
            CREDIT => {
                let grant = capnweb::parse(payload).ok().and_then(|v| v.as_u64());
                let pipe = self
                    .streams
                    .pipes
                    .get_mut(&p)
                    .expect("sources map to pipes");
                if let Some(grant) = grant {
                    pipe.credit = pipe
                        .credit
                        .saturating_add(i64::try_from(grant).unwrap_or(i64::MAX));
                }
                self.undescribe(&caps);
                self.flush(p);
            }
            _ => self.undescribe(&caps),
        }
    }

    /// Forwards what the reader's credit allows, then the end once the queue is
    /// drained.
    fn flush(&mut self, p: u64) {
        let Some(pipe) = self.streams.pipes.get_mut(&p) else {
            return;
        };
        let (source, sink) = match pipe.reader {
            Reader::Reading {
                source,
                sink: Some(sink),
            } => (source, sink),
            Reader::Gone => {
                let queued: Vec<_> = pipe.queued.drain(..).collect();
                for q in queued {
                    self.streams.queued_bytes -= q.size;
                    self.release_imports(&q.caps);
                    let why = error_expr("the stream's reader is gone");
                    self.send(serde_json::json!(["reject", q.write, why]));
                }
                return self.answer_ending(p, Err("the stream's reader is gone".into()));
            }
            // Not started, or the end was delivered.
            _ => return,
        };
        // The batch's payload, `["$args",[[[item,...]],blocked]]`, written as text:
        // a byte chunk goes in as it came.
        let mut items = b"[\"$args\",[[[".to_vec();
        let mut caps = Vec::new();
        let mut writes = Vec::new();
        while pipe.credit > 0 {
            let Some(mut q) = pipe.queued.pop_front() else {
                break;
            };
            pipe.credit -= 1;
            self.streams.queued_bytes -= q.size;
            if !q.caps.is_empty() {
                if let Chunk::Value(value) = &mut q.chunk {
                    shift_caps(value, caps.len());
                }
                caps.append(&mut q.caps);
            }
            if !writes.is_empty() {
                items.push(b',');
            }
            q.chunk.write_to(&mut items);
            writes.push(q.write);
        }
        let drained = pipe.queued.is_empty();
        let blocked = pipe.credit <= 0;
        let end = match &pipe.ending {
            Some((ending, _)) if drained => {
                pipe.reader = Reader::Reading { source, sink: None };
                Some(match ending {
                    Ending::Closed => Value::from("Done"),
                    Ending::Aborted(why) => serde_json::json!({ "Failed": why }),
                })
            }
            _ => None,
        };
        if !writes.is_empty() {
            items.extend_from_slice(if blocked { b"]],true]]" } else { b"]],false]]" });
            self.stream_call_raw(sink, ITEMS, caps, items);
            for write in writes {
                self.send(serde_json::json!(["resolve", write, ["undefined"]]));
            }
        }
        if let Some(end) = end {
            self.stream_call(sink, END, Vec::new(), end);
            self.control(&Header::Release { id: sink, count: 1 });
            self.answer_ending(p, Ok(()));
        }
    }

    /// Answers the push that closed or aborted pipe `p`.
    fn answer_ending(&mut self, p: u64, outcome: Result<(), String>) {
        let Some(pipe) = self.streams.pipes.get_mut(&p) else {
            return;
        };
        let Some(question) = pipe.ending.as_mut().and_then(|(_, q)| q.take()) else {
            return;
        };
        let streamed = match self.answers.get(&question) {
            Some(answer) if matches!(answer.stage, Stage::Local) => answer.streamed,
            // Released already: nobody wants the answer.
            _ => return,
        };
        let held = match outcome {
            Ok(()) => Held::value(&capnweb_special("undefined", []), Vec::new()),
            Err(why) => Held::rejection(error_expr(&why)),
        };
        self.done(question, held, false);
        if streamed {
            if let Some(Answer {
                stage: Stage::Done { held, .. },
                ..
            }) = self.answers.remove(&question)
            {
                self.kept_bytes -= held.payload.len();
            }
        }
    }

    /// The reader let go of the source of pipe `p` (or never started it).
    pub(super) fn on_source_release(&mut self, p: u64) {
        if let Some(pipe) = self.streams.pipes.get_mut(&p) {
            let reader = std::mem::replace(&mut pipe.reader, Reader::Gone);
            if let Reader::Reading {
                sink: Some(sink), ..
            } = reader
            {
                self.control(&Header::Release { id: sink, count: 1 });
            }
        }
        self.flush(p);
        self.forget_pipe(p);
    }

    /// Drops pipe `p` once neither side can use it.
    fn forget_pipe(&mut self, p: u64) {
        if let Some(pipe) = self.streams.pipes.get(&p) {
            let unread = matches!(pipe.reader, Reader::Unclaimed | Reader::Gone);
            if pipe.released && unread && pipe.queued.is_empty() {
                if let Some(x) = pipe.exported {
                    self.streams.exported_pipes.remove(&x);
                }
                self.streams.pipes.remove(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_write;

    #[test]
    fn only_compact_writes_of_plain_base64_take_the_quick_way() {
        let write = |rest: &str| format!(r#"["stream",["pipeline",{rest}"]]]]"#);
        assert_eq!(
            bytes_write(&write(r#"7,["write"],[["bytes","aGk+/w=="#)),
            Some((7, "aGk+/w=="))
        );
        assert_eq!(
            bytes_write(&write(r#"7,["write"],[["bytes",""#)),
            Some((7, ""))
        );
        for other in [
            // An escape, another method, a leading zero, spaces, a second argument.
            write(r#"7,["write"],[["bytes","aG\u0041"#),
            write(r#"7,["close"],[["bytes","aGk="#),
            write(r#"07,["write"],[["bytes","aGk="#),
            r#"["stream", ["pipeline",7,["write"],[["bytes","aGk="]]]]"#.to_owned(),
            r#"["stream",["pipeline",7,["write"],[["bytes","aGk="],1]]]"#.to_owned(),
            r#"["stream",["pipeline",-7,["write"],[["bytes","aGk="]]]]"#.to_owned(),
        ] {
            assert_eq!(bytes_write(&other), None, "{other}");
        }
    }
}
