//! Streams across the session. A farcall [`Stream`](crate::Stream) (or
//! [`ByteStream`](crate::ByteStream)) sent to the peer arrives there as a
//! `ReadableStream`: this side opens a pipe on the peer (`["pipe"]`), hands over its
//! readable end (`["readable", k]`) and writes the items into it. A `ReadableStream`
//! the peer sends (its `["pipe"]`, `["readable", p]` in a message, then its writes)
//! arrives here as a `Stream`.
//!
//! The translator stands in for the far end of farcall's own stream protocol (see
//! `stream.rs`), so the actor and the stream types are the ordinary ones:
//! - going out, it is the consumer: it starts the stream's source with a sink of its
//!   own, writes each item of the batches that sink receives to the peer's pipe as a
//!   `["stream", ...]` write, and grants credit back as the peer acknowledges writes
//!   (its reader took them), so a page that stops reading stops the producer;
//! - coming in, it is the producer: the reader starts a source of its own, which
//!   forwards the peer's writes as batches within the reader's credit and
//!   acknowledges each write once forwarded. The peer's writer waits for those
//!   acknowledgements, so a Rust reader that stops reading stops the page's writer.
//!
//! Credit counts items on these sessions (the peer cannot size a value the way
//! Rust types do). The objects the translator stands for have ids from
//! [`PSEUDO_BASE`] up, which no Cap'n Web id reaches.

use super::from_peer::Importing;
use super::*;

/// The first id of an object the translator stands for (above any Cap'n Web id).
pub(super) const PSEUDO_BASE: u64 = 1 << 60;

/// Writes to the peer's pipe that may wait for its acknowledgement (the window of
/// a stream going out, in items).
const OUT_WINDOW: u64 = 64;

/// The most bytes of the peer's writes held for readers without credit, over all
/// its pipes: a writer that respects the acknowledgements stays far below it.
pub(super) const MAX_QUEUED_BYTES: usize = 32 << 20;

/// The most pipes the peer may have open at once.
pub(super) const MAX_PIPES: usize = 1024;

/// Method ids of farcall's stream protocol (`stream.rs`).
const START: u32 = 1;
const CREDIT: u32 = 2;
const ITEMS: u32 = 1;
const END: u32 = 2;

/// The streams of one session.
#[derive(Default)]
pub(super) struct Streams {
    next_id: u64,
    /// Streams going to the peer, by the id of the sink this side stands for.
    out: HashMap<ExportId, Out>,
    /// Messages to the peer's pipes awaiting their result: our import id to the
    /// stream's sink id, and whether it is a write.
    writes: HashMap<u64, (ExportId, bool)>,
    /// Pipes the peer opened, by their push id.
    pipes: HashMap<u64, Pipe>,
    /// The sources this side stands for, to their pipe.
    sources: HashMap<ExportId, u64>,
    queued_bytes: usize,
}

/// A stream going to the peer.
struct Out {
    /// The peer's pipe (our import id).
    pipe: u64,
    /// The stream's source on the actor's export table; this side holds one
    /// reference until the stream ends.
    source: Option<ExportId>,
    /// Acknowledged writes not granted back yet.
    acked: u64,
}

/// A pipe the peer opened: a stream coming in.
struct Pipe {
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
}

impl Pipe {
    fn new() -> Self {
        Pipe {
            reader: Reader::Unclaimed,
            credit: 0,
            queued: VecDeque::new(),
            ending: None,
            released: false,
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
    chunk: Value,
    caps: Vec<CapDescriptor>,
    size: usize,
}

impl Streams {
    fn new_id(&mut self) -> ExportId {
        self.next_id += 1;
        PSEUDO_BASE + self.next_id
    }

    /// The tables that still hold something (for the tests).
    #[cfg(test)]
    pub(super) fn residue(&self) -> Vec<String> {
        let mut residue = Vec::new();
        if !self.out.is_empty() {
            residue.push(format!("{} streams going out", self.out.len()));
        }
        if !self.writes.is_empty() {
            residue.push(format!("{} writes unanswered", self.writes.len()));
        }
        if !self.pipes.is_empty() {
            residue.push(format!("pipes {:?}", self.pipes.keys().collect::<Vec<_>>()));
        }
        if !self.sources.is_empty() {
            residue.push(format!("{} sources", self.sources.len()));
        }
        if self.queued_bytes != 0 {
            residue.push(format!("{} bytes queued", self.queued_bytes));
        }
        residue
    }

    /// Whether `id` (an id the actor uses for an object of the peer's) is one the
    /// translator stands for.
    pub(super) fn stands_for(id: ExportId) -> bool {
        id >= PSEUDO_BASE
    }

    /// Whether the peer's push id `p` is a pipe.
    pub(super) fn is_pipe(&self, p: u64) -> bool {
        self.pipes.contains_key(&p)
    }

    /// `["readable", p]` in one of the peer's messages: the id of the source that
    /// stands for the pipe's readable end.
    pub(super) fn readable(&mut self, p: i64) -> Checked<ExportId> {
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

/// The items of a batch (`(Vec<T>, bool)` as the codec writes it).
fn batch_items(payload: &[u8]) -> Option<Vec<Value>> {
    let mut value = capnweb::parse(payload).ok()?;
    let args = value.as_array_mut()?;
    if args.len() != 2 || args[0] != ARGS {
        return None;
    }
    let list = args[1].as_array_mut()?;
    match list.first_mut()?.as_array_mut()?.as_mut_slice() {
        [Value::Array(items)] => Some(std::mem::take(items)),
        _ => None,
    }
}

/// How a stream ended, from the source's `end` (`End` as the codec writes it).
fn end_reason(payload: &[u8]) -> Option<String> {
    match capnweb::parse(payload) {
        Ok(Value::String(done)) if done == "Done" => None,
        Ok(Value::Object(map)) => Some(match map.into_iter().next() {
            Some((_, Value::String(why))) => why,
            _ => "the stream failed".into(),
        }),
        _ => Some("the stream's end could not be read".into()),
    }
}

/// Adds `offset` to the index of every `["$cap", i]` in `value`.
fn shift_caps(value: &mut Value, offset: usize) {
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

impl Translator {
    fn stream_call(
        &mut self,
        target: ExportId,
        method: u32,
        caps: Vec<CapDescriptor>,
        args: Value,
    ) {
        let header = Header::Call {
            question: None,
            target: Target::Export(target),
            method,
            caps,
        };
        self.frame(&header, &args);
    }

    // ---- going out ------------------------------------------------------------

    /// `["$stream", i]` in a value for the peer: opens a pipe on the peer, starts
    /// the stream's source with a sink this side stands for, and returns the
    /// readable end.
    pub(super) fn stream_out(&mut self, cap: CapDescriptor) -> Value {
        let CapDescriptor::SenderHosted(source) = cap else {
            return error_expr("a stream received from this peer cannot be sent back to it");
        };
        // The stream holds its source until it ends (see `holds.rs`).
        self.holds.hold(source);
        self.send(serde_json::json!(["pipe"]));
        self.next_push += 1;
        let pipe = self.next_push;
        let sink = self.streams.new_id();
        self.streams.out.insert(
            sink,
            Out {
                pipe,
                source: Some(source),
                acked: 0,
            },
        );
        let args = capnweb_special(
            ARGS,
            [Value::Array(vec![
                capnweb_special(CAP, [Value::from(0)]),
                Value::from(OUT_WINDOW),
            ])],
        );
        self.stream_call(source, START, vec![CapDescriptor::SenderHosted(sink)], args);
        serde_json::json!(["readable", pipe])
    }

    /// A call the actor makes on an object this side stands for.
    pub(super) fn on_pseudo_call(
        &mut self,
        id: ExportId,
        method: u32,
        payload: &[u8],
        caps: Vec<CapDescriptor>,
    ) {
        if self.streams.out.contains_key(&id) {
            self.on_sink_call(id, method, payload, caps)
        } else {
            self.on_source_call(id, method, payload, caps)
        }
    }

    /// A call of the stream's source on the sink this side stands for: a batch of
    /// items or the end.
    fn on_sink_call(
        &mut self,
        sink: ExportId,
        method: u32,
        payload: &[u8],
        caps: Vec<CapDescriptor>,
    ) {
        // After the end (the peer's reader cancelled, say) the pipe is released:
        // a write to it would break the session. The producer may still send
        // what its credit allowed while something else holds the source (a kept
        // result it is a field of): that goes nowhere.
        let live = self.streams.out.get(&sink).filter(|o| o.source.is_some());
        let Some(pipe) = live.map(|o| o.pipe) else {
            self.undescribe(&caps);
            return;
        };
        match method {
            ITEMS => {
                let Some(items) = batch_items(payload) else {
                    self.undescribe(&caps);
                    return self.end_out(sink, Some("a batch that could not be read".into()));
                };
                self.take_caps(&caps);
                for item in items {
                    let item = if caps.is_empty() {
                        item
                    } else {
                        self.export(item, &caps)
                    };
                    self.next_push += 1;
                    self.streams.writes.insert(self.next_push, (sink, true));
                    self.send(serde_json::json!([
                        "stream",
                        ["pipeline", pipe, ["write"], [item]]
                    ]));
                }
                self.unhold_caps(&caps);
            }
            END => {
                self.undescribe(&caps);
                self.end_out(sink, end_reason(payload));
            }
            _ => self.undescribe(&caps),
        }
    }

    /// Ends a stream going out: closes (or aborts) the peer's pipe, releases it and
    /// the source.
    fn end_out(&mut self, sink: ExportId, failure: Option<String>) {
        let Some(out) = self.streams.out.get_mut(&sink) else {
            return;
        };
        let Some(source) = out.source.take() else {
            return;
        };
        let pipe = out.pipe;
        let call = match &failure {
            None => serde_json::json!(["pipeline", pipe, ["close"], []]),
            Some(why) => serde_json::json!(["pipeline", pipe, ["abort"], [error_expr(why)]]),
        };
        self.next_push += 1;
        self.streams.writes.insert(self.next_push, (sink, false));
        self.send(serde_json::json!(["stream", call]));
        self.send(serde_json::json!(["release", pipe, 1]));
        self.unhold(source);
    }

    /// The peer's result for one of the messages to its pipes, if `id` is one.
    /// Returns whether it was.
    pub(super) fn on_write_result(&mut self, id: u64, ok: bool) -> bool {
        let Some((sink, is_write)) = self.streams.writes.remove(&id) else {
            return false;
        };
        if !is_write {
            return true;
        }
        let Some(out) = self.streams.out.get_mut(&sink) else {
            return true;
        };
        match (ok, out.source) {
            (true, Some(source)) => {
                out.acked += 1;
                if out.acked >= OUT_WINDOW / 4 {
                    let grant = std::mem::take(&mut out.acked);
                    self.stream_call(source, CREDIT, Vec::new(), Value::from(grant));
                }
            }
            // The page's reader cancelled: stop the producer.
            (false, Some(_)) => self.end_out(sink, Some("the reader cancelled the stream".into())),
            (_, None) => {}
        }
        true
    }

    // ---- coming in ------------------------------------------------------------

    /// The peer's `["pipe"]`: a pipe on this side, numbered like a push.
    pub(super) fn on_pipe(&mut self) -> Checked<()> {
        if self.streams.pipes.len() >= MAX_PIPES {
            return malformed(format!("more than {MAX_PIPES} pipes open at once"));
        }
        self.pushes += 1;
        self.streams.pipes.insert(self.pushes, Pipe::new());
        Ok(())
    }

    /// The peer's `["stream", ["pipeline", p, ["write"], [chunk]]]`, numbered like a
    /// push, pulled and released by itself.
    pub(super) fn on_stream_message(&mut self, expr: &Value, size: usize) -> Checked<()> {
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
            Some((p, [Value::String(method)], [chunk]))
                if method == "write" && p > 0 && self.streams.is_pipe(p as u64) =>
            {
                Some((p as u64, chunk))
            }
            // `close()` and `abort()` come the same way, pulled and released by
            // themselves too.
            Some((p, path, args)) if self.on_pipe_push(write, p, path, args, true) => return Ok(()),
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
        let chunk = importing.expr(chunk)?;
        let Importing {
            caps, unsupported, ..
        } = importing;
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
    pub(super) fn on_pipe_push(
        &mut self,
        question: u64,
        target: i64,
        path: &[Value],
        args: &[Value],
        streamed: bool,
    ) -> bool {
        let Some(p) = u64::try_from(target)
            .ok()
            .filter(|p| self.streams.is_pipe(*p))
        else {
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
        pipe.ending = Some((ending, Some(question)));
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
    pub(super) fn on_pipe_release(&mut self, p: u64) -> bool {
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
    fn on_source_call(
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
        let mut items = Vec::new();
        let mut caps = Vec::new();
        let mut writes = Vec::new();
        while pipe.credit > 0 {
            let Some(mut q) = pipe.queued.pop_front() else {
                break;
            };
            pipe.credit -= 1;
            self.streams.queued_bytes -= q.size;
            if !q.caps.is_empty() {
                shift_caps(&mut q.chunk, caps.len());
                caps.append(&mut q.caps);
            }
            items.push(q.chunk);
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
        if !items.is_empty() {
            let batch = capnweb_special(
                ARGS,
                [Value::Array(vec![
                    capnweb::array(items),
                    Value::Bool(blocked),
                ])],
            );
            self.stream_call(sink, ITEMS, caps, batch);
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
            self.answers.remove(&question);
        }
    }

    /// The actor released an object the translator stands for; returns whether
    /// `id` is one.
    pub(super) fn on_pseudo_release(&mut self, id: ExportId) -> bool {
        if !Streams::stands_for(id) {
            return false;
        }
        if self.streams.out.contains_key(&id) {
            // The source let go of our sink: it ended, or it was dropped.
            self.end_out(id, Some("the stream's producer went away".into()));
            self.streams.out.remove(&id);
        } else if let Some(p) = self.streams.sources.remove(&id) {
            // The reader dropped the stream (or never read it).
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
        true
    }

    /// A capability this side stands for, carried by a message that is not taken.
    pub(super) fn drop_pseudo(&mut self, id: ExportId) {
        self.on_pseudo_release(id);
    }

    /// Drops pipe `p` once neither side can use it.
    fn forget_pipe(&mut self, p: u64) {
        if let Some(pipe) = self.streams.pipes.get(&p) {
            let unread = matches!(pipe.reader, Reader::Unclaimed | Reader::Gone);
            if pipe.released && unread && pipe.queued.is_empty() {
                self.streams.pipes.remove(&p);
            }
        }
    }
}
