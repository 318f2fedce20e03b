//! `WritableStream`s: a farcall [`StreamSender`](crate::StreamSender) crosses as
//! one, both ways.
//!
//! - The peer's `["writable", e]` (a `WritableStream` it exports) reaches the actor
//!   as an ordinary import. The `StreamSender` Rust reads from it attaches a stream
//!   to it at once (`attach`, see `stream/writer.rs`); this side writes that
//!   stream's items into the peer's writable as it does into a pipe it opened
//!   (`out.rs`), and closes or aborts it at the end. The actor's release of the
//!   import waits until then: released earlier, the peer would abort the stream.
//! - A `StreamSender` going to the peer (`["$writer", i]`) becomes a
//!   `["writable", -x]` this side exports. The peer's writes to it are taken as
//!   writes to a pipe it opened (`pipes.rs`), whose readable end this side
//!   attaches to the sender's target at once.

use super::*;

/// Method id of `attach` on a stream sender's target (`stream/writer.rs`): not a
/// callback's, so a function of the peer's sent where a writer is expected is
/// not called with a stream.
const ATTACH: u32 = 3;

/// A `WritableStream` of the peer's, imported by the actor.
#[derive(Default)]
pub(super) struct Writable {
    /// The stream being written into it (the sink this side stands for).
    sink: Option<ExportId>,
    /// Times the peer introduced it and it was not given back yet.
    refs: u64,
    /// References given back while the stream was being written: given to the
    /// peer once it is closed.
    deferred: u64,
}

/// The actor's import id of the peer's `["writable", e]`.
pub(in crate::capnweb::translate) fn writable_id(e: i64) -> Checked<ExportId> {
    if e >= 0 {
        return malformed("a writable with a non-negative id (exporters pick negative ids)");
    }
    Ok(e.unsigned_abs())
}

impl Streams {
    /// `["writable", e]` in one of the peer's messages: the actor's import id.
    pub(in crate::capnweb::translate) fn writable(&mut self, e: i64) -> Checked<ExportId> {
        let id = writable_id(e)?;
        self.writables.entry(id).or_default().refs += 1;
        Ok(id)
    }

    /// Whether the actor's import `id` is a `WritableStream` of the peer's.
    pub(in crate::capnweb::translate) fn is_writable(&self, id: ExportId) -> bool {
        self.writables.contains_key(&id)
    }

    /// The pipe that messages to `target` (an id as the peer names it) write into:
    /// a pipe the peer opened, or a writable this side exported.
    pub(super) fn pipe_for(&self, target: i64) -> Option<u64> {
        if target > 0 {
            let p = target.unsigned_abs();
            self.pipes.contains_key(&p).then_some(p)
        } else {
            self.exported_pipes.get(&target.unsigned_abs()).copied()
        }
    }
}

impl Translator {
    /// A call the actor makes on the peer's writable `id`: a `StreamSender`
    /// attaching its stream. Anything else is refused.
    pub(in crate::capnweb::translate) fn on_writable_call(
        &mut self,
        question: Option<QuestionId>,
        id: ExportId,
        method: u32,
        caps: Vec<CapDescriptor>,
    ) {
        if let Some(question) = question {
            self.failed(question, &WireError::MethodNotFound);
        }
        let source = match caps.as_slice() {
            [CapDescriptor::SenderHosted(source)] if method == ATTACH => Some(*source),
            _ => None,
        };
        let free = self
            .streams
            .writables
            .get(&id)
            .is_some_and(|w| w.sink.is_none());
        let (Some(source), true) = (source, free) else {
            // A second stream for one writable: its producer finds it closed.
            return self.undescribe(&caps);
        };
        self.take_caps(&caps);
        let sink = self.pump_into(source, -(id as i64), Some(id));
        self.unhold_caps(&caps);
        if let Some(writable) = self.streams.writables.get_mut(&id) {
            writable.sink = Some(sink);
        }
    }

    /// `count` references to the peer's object `id` are given back (by the actor,
    /// or with a message not taken); returns whether `id` is a writable being
    /// written (the release then waits for its end).
    pub(in crate::capnweb::translate) fn on_writable_release(
        &mut self,
        id: ExportId,
        count: u64,
    ) -> bool {
        let Some(writable) = self.streams.writables.get_mut(&id) else {
            return false;
        };
        writable.refs = writable.refs.saturating_sub(count);
        if writable.sink.is_some() {
            writable.deferred += count;
            return true;
        }
        if writable.refs == 0 {
            self.streams.writables.remove(&id);
        }
        false
    }

    /// The stream written into the peer's writable `id` ended (closed or aborted).
    pub(super) fn writable_done(&mut self, id: ExportId) {
        let Some(writable) = self.streams.writables.get_mut(&id) else {
            return;
        };
        writable.sink = None;
        let count = std::mem::take(&mut writable.deferred);
        if writable.refs == 0 {
            self.streams.writables.remove(&id);
        }
        if count > 0 {
            self.send(serde_json::json!(["release", -(id as i64), count]));
        }
    }

    /// `["$writer", i]` in a value for the peer: a `WritableStream` this side
    /// exports, whose writes go to the stream sender's target.
    pub(in crate::capnweb::translate) fn writable_out(&mut self, cap: CapDescriptor) -> Value {
        let CapDescriptor::SenderHosted(target) = cap else {
            return error_expr("a stream sender received from this peer cannot be sent back to it");
        };
        if let Some(why) = self.streams.refused {
            // Not attached: the sender finds its stream closed.
            return error_expr(why);
        }
        if self.streams.exported_pipes.len() >= MAX_PIPES {
            return error_expr(&format!("more than {MAX_PIPES} writables sent at once"));
        }
        self.next_export += 1;
        let x = self.next_export;
        let source = self.streams.export_pipe(x);
        let args = capnweb_special(
            ARGS,
            [Value::Array(vec![capnweb_special(CAP, [Value::from(0)])])],
        );
        self.stream_call(
            target,
            ATTACH,
            vec![CapDescriptor::SenderHosted(source)],
            args,
        );
        serde_json::json!(["writable", -(x as i64)])
    }
}
