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
//!
//! A farcall [`StreamSender`](crate::StreamSender) crosses as a `WritableStream`
//! (`streams/writable.rs`), made of the same two halves.
//!
//! `streams/out.rs` has the streams going out, `streams/pipes.rs` the pipes the
//! peer opens.

use super::*;

mod out;
mod pipes;
mod writable;

use out::Out;
use pipes::Pipe;
pub(super) use writable::writable_id;
use writable::Writable;

/// The first id of an object the translator stands for (above any Cap'n Web id).
pub(super) const PSEUDO_BASE: u64 = 1 << 60;

/// The most bytes of the peer's writes held for readers without credit, over all
/// its pipes: a writer that respects the acknowledgements stays far below it.
pub(super) const MAX_QUEUED_BYTES: usize = 32 << 20;

/// The most pipes the peer may have open at once.
pub(super) const MAX_PIPES: usize = 1024;

/// Method ids of farcall's stream protocol (`stream.rs`).
const START: u32 = 5;
const CREDIT: u32 = 6;
const ITEMS: u32 = 7;
const END: u32 = 8;

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
    /// The peer's `WritableStream`s the actor imported, by its import id.
    writables: HashMap<ExportId, Writable>,
    /// `WritableStream`s this side exported (by the peer's id, negated) to the
    /// pipe their writes go to.
    exported_pipes: HashMap<u64, u64>,
    /// Why streams cannot cross this session, if they cannot (an HTTP batch).
    pub(super) refused: Option<&'static str>,
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
        if !self.writables.is_empty() {
            residue.push(format!("{} writables", self.writables.len()));
        }
        if !self.exported_pipes.is_empty() {
            residue.push(format!("{} writables exported", self.exported_pipes.len()));
        }
        residue
    }

    /// Whether `id` (an id the actor uses for an object of the peer's) is one the
    /// translator stands for.
    pub(super) fn stands_for(id: ExportId) -> bool {
        id >= PSEUDO_BASE
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
        // Writing a `Value` into a `Vec` cannot fail.
        let args = serde_json::to_vec(&args).unwrap_or_default();
        self.stream_call_raw(target, method, caps, args);
    }

    /// [`stream_call`](Self::stream_call) with its arguments written as text.
    fn stream_call_raw(
        &mut self,
        target: ExportId,
        method: u32,
        caps: Vec<CapDescriptor>,
        args: Vec<u8>,
    ) {
        let header = Header::Call {
            question: None,
            target: Target::Export(target),
            method,
            caps,
        };
        self.frame_raw(&header, args);
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

    /// The actor released an object the translator stands for; returns whether
    /// `id` is one.
    pub(super) fn on_pseudo_release(&mut self, id: ExportId) -> bool {
        if !Streams::stands_for(id) {
            return false;
        }
        if self.streams.out.contains_key(&id) {
            self.on_sink_release(id);
        } else if let Some(p) = self.streams.sources.remove(&id) {
            self.on_source_release(p);
        }
        true
    }
}
