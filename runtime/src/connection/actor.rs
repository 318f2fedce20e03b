//! The per-connection actor: one task that owns the transport and the tables.
//!
//! It is a hand-written future rather than a `select!` loop so that one wake-up can
//! drain every ready source (local commands, finished handlers, incoming frames) and
//! then write everything queued with a single flush. Reading stops while the outbound
//! queue is over its limit, which is how a peer that stops reading slows us down
//! instead of growing our memory.
//!
//! Handlers are polled once inline, in arrival order, before anything else happens:
//! that is what delivers calls in the order they were sent, and a handler that is
//! ready at once (most are) is answered without spawning a task or crossing a
//! channel. Only handlers that are still pending are spawned.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use super::outbound::{is_chunk, Order, Outbound, Reassembly};
use super::{Command, Connection, Outgoing, Stats};
use crate::cap::{CapRef, ImportEntry, LocalObject, Message};
use crate::context::CallContext;
use crate::dispatch::{Handler, Incoming, Reply, ReplyTo};
use crate::error::{RpcError, WireError};
use crate::transport::Transport;
use crate::wire::{
    decode_frame, encode_frame, finish_frame, CapDescriptor, ExportId, Header, Outcome, QuestionId,
    Target, ROOT_EXPORT,
};

/// How long a chunked message may stay unfinished between two of its chunks.
const CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Items taken from one source before the others get a turn.
const BATCH: usize = 64;

pub(super) fn spawn<T: Transport>(
    conn: Connection,
    commands: mpsc::UnboundedReceiver<Command>,
    transport: T,
    root: Option<Arc<LocalObject>>,
) {
    let span = tracing::debug_span!("farcall::connection", id = conn.id());
    tracing::debug!(parent: &span, root = root.as_ref().map(|r| r.dispatch.interface().name), "connection open");
    let conn_chunk_size = conn.shared.config.chunk_size;
    let mut exports = Exports::default();
    if let Some(root) = root {
        exports.insert_root(CapRef::Local(root));
    }
    let actor = Actor {
        transport,
        conn,
        commands,
        questions: HashMap::new(),
        answers: HashMap::new(),
        running: JoinSet::new(),
        stalled: HashMap::new(),
        stalled_count: 0,
        timers: Timers::default(),
        draining: false,
        pipelined: HashSet::new(),
        embargoed: HashMap::new(),
        exports,
        imports: HashMap::new(),
        next_generation: 0,
        outbound: Outbound::new(conn_chunk_size),
        reassembly: Reassembly::default(),
        needs_flush: false,
        closing: None,
        aborted: false,
        ended: false,
    };
    tokio::spawn(actor.instrument(span));
}

/// The output of a spawned handler.
struct Finished {
    question: Option<QuestionId>,
    reply: Reply,
}

/// A call the peer made, in the answer table.
enum Answer {
    /// Its handler is running. `finished`: the caller sent `Finish`, but calls
    /// pipelined on the answer wait for it, so it runs on without a return.
    Running(AbortHandle, bool),
    /// It returned; pipelined calls go to this capability (or fail with its reason).
    Done(CapRef),
}

/// An incoming message that must wait for an answer.
enum Stalled {
    Call {
        question: Option<QuestionId>,
        method: u32,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
    },
    Disembargo {
        question: QuestionId,
    },
}

/// Keepalive and idle timers, made on first use (and only when configured).
#[derive(Default)]
struct Timers {
    last_received: Option<Instant>,
    /// When the last chunk of a message still being reassembled arrived.
    last_chunk: Option<Instant>,
    chunk: Option<Pin<Box<Sleep>>>,
    last_sent: Option<Instant>,
    idle: Option<Pin<Box<Sleep>>>,
    keepalive: Option<Pin<Box<Sleep>>>,
}

/// Polls a timer for `deadline`, making or moving it as needed.
fn due(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    sleep.as_mut().poll(cx).is_ready()
}

/// An object exported to the peer, with the references the peer holds.
struct Export {
    cap: CapRef,
    count: u64,
}

/// Objects this side exported, by id and by identity (so the same object exported
/// twice gets the same id, and the peer sees one identity).
#[derive(Default)]
struct Exports {
    by_id: HashMap<ExportId, Export>,
    by_key: HashMap<usize, ExportId>,
    next: ExportId,
}

impl Exports {
    fn insert_root(&mut self, cap: CapRef) {
        self.by_key.insert(cap.key(), ROOT_EXPORT);
        self.by_id.insert(ROOT_EXPORT, Export { cap, count: 0 });
    }

    /// Adds one reference to `cap`'s export, creating it if needed.
    fn add(&mut self, cap: &CapRef) -> ExportId {
        let key = cap.key();
        // Broken references have no identity: each gets its own export.
        if key != 0 {
            if let Some(&id) = self.by_key.get(&key) {
                if let Some(export) = self.by_id.get_mut(&id) {
                    export.count += 1;
                    return id;
                }
            }
        }
        self.next += 1;
        let id = self.next;
        if key != 0 {
            self.by_key.insert(key, id);
        }
        self.by_id.insert(
            id,
            Export {
                cap: cap.clone(),
                count: 1,
            },
        );
        id
    }

    /// Drops `count` references; frees the export when none are left. The root is
    /// never freed: any peer may ask for it again.
    fn release(&mut self, id: ExportId, count: u64) -> Result<(), RpcError> {
        let Some(export) = self.by_id.get_mut(&id) else {
            return Err(RpcError::BadMessage(format!(
                "release of unknown export {id}"
            )));
        };
        if id == ROOT_EXPORT {
            export.count = export.count.saturating_sub(count);
            return Ok(());
        }
        if count > export.count {
            return Err(RpcError::BadMessage(format!(
                "release of {count} references to export {id}, which has {}",
                export.count
            )));
        }
        export.count -= count;
        if export.count == 0 {
            let export = self.by_id.remove(&id).expect("present");
            if self.by_key.get(&export.cap.key()) == Some(&id) {
                self.by_key.remove(&export.cap.key());
            }
        }
        Ok(())
    }

    fn get(&self, id: ExportId) -> Option<&CapRef> {
        self.by_id.get(&id).map(|e| &e.cap)
    }

    /// Exports, not counting the root.
    fn len(&self) -> usize {
        self.by_id.len() - usize::from(self.by_id.contains_key(&ROOT_EXPORT))
    }
}

/// An object the peer exported, as this side's table holds it.
struct Import {
    entry: Weak<ImportEntry>,
    generation: u64,
    /// References received: what the `Release` gives back.
    count: u64,
}

struct Actor<T> {
    transport: T,
    conn: Connection,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Calls this side made that await a return.
    questions: HashMap<QuestionId, oneshot::Sender<Reply>>,
    /// Calls the peer made: running (spawned) handlers, and finished answers kept
    /// for pipelined calls until the peer's `Finish`.
    answers: HashMap<QuestionId, Answer>,
    running: JoinSet<Finished>,
    /// Incoming calls waiting for an answer they depend on, per target so that calls
    /// on one reference stay in order.
    stalled: HashMap<Target, VecDeque<Stalled>>,
    /// Calls (not disembargoes) in `stalled`.
    stalled_count: usize,
    timers: Timers,
    /// Set while `stalled` is being drained, so delivery does not recurse into it.
    draining: bool,
    /// Our questions on which we pipelined calls.
    pipelined: HashSet<QuestionId>,
    /// Returns held until the callee reflects our `Disembargo` (see `Header`).
    embargoed: HashMap<QuestionId, (oneshot::Sender<Reply>, Reply)>,
    exports: Exports,
    imports: HashMap<ExportId, Import>,
    next_generation: u64,
    outbound: Outbound,
    reassembly: Reassembly,
    needs_flush: bool,
    /// `Some` once `close()` was asked: who waits for it.
    closing: Option<Vec<oneshot::Sender<()>>>,
    /// `abort()` was asked: stop after one last write.
    aborted: bool,
    ended: bool,
}

/// Why the actor stops.
type End = Result<(), Arc<str>>;

impl<T: Transport> Future for Actor<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.turn(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(end) => {
                let reason: Arc<str> = match end {
                    Ok(()) => Arc::from("connection closed locally"),
                    Err(reason) => {
                        // Best effort to deliver a queued `Abort` before hanging up.
                        let _ = this.write(cx);
                        reason
                    }
                };
                this.end(reason);
                Poll::Ready(())
            }
        }
    }
}

impl<T: Transport> Actor<T> {
    /// Does all the work that is ready; returns `Ready` when the connection is over.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            let mut progress = false;

            for _ in 0..BATCH {
                if self.queue_full() {
                    break;
                }
                match self.commands.poll_recv(cx) {
                    Poll::Ready(Some(command)) => {
                        progress = true;
                        self.on_command(command);
                    }
                    // The `Connection` inside `self` holds a sender, so this only
                    // happens if that changes; treat it as a local close.
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }

            for _ in 0..BATCH {
                match self.running.poll_join_next(cx) {
                    Poll::Ready(Some(Ok(finished))) => {
                        progress = true;
                        self.on_finished(finished, cx);
                    }
                    // Aborted after a `Finish`: its answer entry is already gone.
                    Poll::Ready(Some(Err(_))) => progress = true,
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }

            for _ in 0..BATCH {
                if self.queue_full() {
                    break;
                }
                match Pin::new(&mut self.transport).poll_next(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        progress = true;
                        if self.conn.shared.config.idle_timeout.is_some() {
                            self.timers.last_received = Some(Instant::now());
                        }
                        self.on_frame(frame, cx)?;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(format!("transport error: {e}").into()))
                    }
                    Poll::Ready(None) => {
                        return Poll::Ready(Err("peer closed the connection".into()))
                    }
                    Poll::Pending => break,
                }
            }

            if let Poll::Ready(Err(e)) = self.write(cx) {
                return Poll::Ready(Err(format!("transport error: {e}").into()));
            }
            if self.aborted {
                let _ = Pin::new(&mut self.transport).poll_close(cx);
                return Poll::Ready(Err("connection aborted locally".into()));
            }

            if self.closing.is_some() && self.answers.is_empty() && self.outbound.is_empty() {
                return match Pin::new(&mut self.transport).poll_close(cx) {
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }

            if !progress {
                match self.check_timers(cx) {
                    Err(reason) => return Poll::Ready(Err(reason)),
                    // A keepalive was queued: one more turn writes it.
                    Ok(true) => continue,
                    Ok(false) => return Poll::Pending,
                }
            }
        }
    }

    /// Closes a connection whose peer went silent, and keeps ours from looking so;
    /// returns whether a keepalive was queued.
    fn check_timers(&mut self, cx: &mut Context<'_>) -> Result<bool, Arc<str>> {
        let config = &self.conn.shared.config;
        let (idle, keepalive) = (config.idle_timeout, config.keepalive);
        if self.reassembly.in_progress() {
            let since = *self.timers.last_chunk.get_or_insert_with(Instant::now);
            if due(&mut self.timers.chunk, since + CHUNK_TIMEOUT, cx) {
                return Err(
                    format!("a chunked message stayed unfinished for {CHUNK_TIMEOUT:?}").into(),
                );
            }
        }
        if let Some(idle) = idle {
            let since = *self.timers.last_received.get_or_insert_with(Instant::now);
            if due(&mut self.timers.idle, since + idle, cx) {
                return Err(format!("nothing received for {idle:?}: the peer is gone").into());
            }
        }
        if let Some(every) = keepalive {
            let since = *self.timers.last_sent.get_or_insert_with(Instant::now);
            if due(&mut self.timers.keepalive, since + every, cx) {
                self.timers.last_sent = Some(Instant::now());
                self.enqueue_control(&Header::Ping);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The message left the command channel: it now counts in the outbound queue.
    fn unreserve(&self, message: &Message) {
        self.conn
            .shared
            .pending_bytes
            .fetch_sub(message.payload.len(), Ordering::Relaxed);
    }

    fn queue_full(&self) -> bool {
        self.outbound.bytes() >= self.conn.shared.config.queue_limit()
    }

    fn enqueue(&mut self, frame: Bytes, order: Order) {
        self.outbound.push(frame, order);
    }

    /// Queues a control frame (no payload, no capabilities).
    fn enqueue_control(&mut self, header: &Header) {
        match encode_frame(self.codec(), header, &()) {
            Ok(frame) => self.enqueue(frame, Order::of(header)),
            Err(e) => tracing::error!(error = %e, "cannot encode a control frame"),
        }
    }

    /// Moves queued frames into the transport and flushes once they are in.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.outbound.is_empty() {
            match Pin::new(&mut self.transport).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
            let frame = self.outbound.pop().expect("not empty");
            if self.conn.shared.config.keepalive.is_some() {
                self.timers.last_sent = Some(Instant::now());
            }
            Pin::new(&mut self.transport).start_send(frame)?;
            self.needs_flush = true;
        }
        if self.needs_flush {
            match Pin::new(&mut self.transport).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Ok(()))
    }

    fn codec(&self) -> crate::codec::AnyCodec {
        self.conn.codec()
    }

    /// Turns a message's capabilities into descriptors, exporting local objects; fails
    /// if that would export more than `max_exports` objects.
    fn describe(&mut self, caps: &[CapRef]) -> Result<Vec<CapDescriptor>, WireError> {
        let max = self.conn.shared.config.max_exports;
        if !caps.is_empty() && self.exports.len() + caps.len() > max {
            return Err(WireError::Overloaded(format!(
                "more than {max} objects exported"
            )));
        }
        Ok(caps
            .iter()
            .map(|cap| match cap {
                // The peer's own object, going home.
                CapRef::Import(entry) if self.is_ours(&entry.conn) => {
                    CapDescriptor::ReceiverHosted(entry.id)
                }
                // The peer's own answer, not yet (known to be) resolved.
                CapRef::Promise(answer) if self.is_ours(&answer.conn) => {
                    CapDescriptor::ReceiverAnswer(answer.question)
                }
                // Local objects, and imports from other connections (which calls
                // from this peer will be forwarded to).
                other => CapDescriptor::SenderHosted(self.exports.add(other)),
            })
            .collect())
    }

    /// Turns received descriptors into references, importing what the peer exports.
    fn resolve(&mut self, descriptors: Vec<CapDescriptor>) -> Vec<CapRef> {
        descriptors
            .into_iter()
            .map(|d| match d {
                CapDescriptor::SenderHosted(id) => CapRef::Import(self.import(id)),
                // An id we never exported (or already freed) names nothing: calls on
                // it fail, and it grants no access.
                CapDescriptor::ReceiverHosted(id) => self
                    .exports
                    .get(id)
                    .cloned()
                    .unwrap_or(CapRef::Broken(WireError::ObjectNotFound)),
                // Calls carrying a running answer wait for it (see `on_call`).
                CapDescriptor::ReceiverAnswer(question) => match self.answers.get(&question) {
                    Some(Answer::Done(cap)) => cap.clone(),
                    Some(Answer::Running(..)) => CapRef::Broken(WireError::PromiseFailed(
                        "the promised answer is not ready".into(),
                    )),
                    None => CapRef::Broken(WireError::ObjectNotFound),
                },
            })
            .collect()
    }

    fn is_ours(&self, conn: &Connection) -> bool {
        Arc::ptr_eq(&conn.shared, &self.conn.shared)
    }

    fn import(&mut self, id: ExportId) -> Arc<ImportEntry> {
        if let Some(import) = self.imports.get_mut(&id) {
            if let Some(entry) = import.entry.upgrade() {
                import.count += 1;
                return entry;
            }
            // The last handle is gone but its drop notice is still queued: give its
            // references back now and start a new entry.
            let count = import.count;
            self.enqueue_control(&Header::Release { id, count });
        }
        self.next_generation += 1;
        let entry = Arc::new(ImportEntry::new(
            self.conn.clone(),
            id,
            self.next_generation,
        ));
        self.imports.insert(
            id,
            Import {
                entry: Arc::downgrade(&entry),
                generation: self.next_generation,
                count: 1,
            },
        );
        entry
    }

    /// Frames a message with `header` built from its capability descriptors.
    fn send_message(
        &mut self,
        message: Message,
        header: impl FnOnce(Vec<CapDescriptor>) -> Header,
    ) -> Result<(), WireError> {
        let caps = self.describe(&message.caps)?;
        let header = header(caps);
        let frame = finish_frame(self.codec(), message.payload, &header)
            .map_err(|e| WireError::Encode(e.to_string()))?;
        self.enqueue(frame, Order::of(&header));
        Ok(())
    }

    fn send_return(&mut self, question: QuestionId, reply: Reply) {
        let outcome = reply.outcome;
        let message = Message {
            payload: reply.payload,
            caps: reply.caps,
        };
        let header = |caps| Header::Return {
            question,
            outcome,
            caps,
        };
        if let Err(error) = self.send_message(message, header) {
            // The result cannot go out as it is; its caller learns why.
            let failed = self.reply_to().error(&error);
            let message = Message {
                payload: failed.payload,
                caps: Vec::new(),
            };
            let _ = self.send_message(message, |caps| Header::Return {
                question,
                outcome: Outcome::Failed,
                caps,
            });
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Ask {
                question,
                outgoing,
                message,
                reply,
            } => {
                self.unreserve(&message);
                if self.closing.is_some() {
                    // Dropping `reply` fails the call with the close reason.
                    return;
                }
                if let Outgoing::Call {
                    target: Target::Answer(on),
                    ..
                } = outgoing
                {
                    self.pipelined.insert(on);
                }
                let sent = self.send_message(message, |caps| match outgoing {
                    Outgoing::Call { target, method } => Header::Call {
                        question: Some(question),
                        target,
                        method,
                        caps,
                    },
                    Outgoing::Bootstrap {
                        interface,
                        fingerprint,
                    } => Header::Bootstrap {
                        question,
                        interface,
                        fingerprint,
                    },
                });
                match sent {
                    Ok(()) => {
                        self.questions.insert(question, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(self.reply_to().error(&error));
                    }
                }
            }
            Command::Send {
                target,
                method,
                message,
            } => {
                self.unreserve(&message);
                if let Target::Answer(on) = target {
                    self.pipelined.insert(on);
                }
                if self.closing.is_none() {
                    let sent = self.send_message(message, |caps| Header::Call {
                        question: None,
                        target,
                        method,
                        caps,
                    });
                    if let Err(error) = sent {
                        tracing::warn!(?error, "one-way call dropped");
                    }
                }
            }
            Command::Finish { question, answered } => {
                self.pipelined.remove(&question);
                let held = self.embargoed.remove(&question);
                let asked = self.questions.remove(&question).is_some();
                if asked || answered || held.is_some_and(|(_, reply)| reply.needs_finish()) {
                    self.enqueue_control(&Header::Finish { question });
                }
            }
            Command::ImportDropped { id, generation } => {
                if self
                    .imports
                    .get(&id)
                    .is_some_and(|i| i.generation == generation)
                {
                    let import = self.imports.remove(&id).expect("present");
                    self.enqueue_control(&Header::Release {
                        id,
                        count: import.count,
                    });
                }
            }
            Command::Stats { reply } => {
                let _ = reply.send(Stats {
                    questions: self.questions.len() + self.embargoed.len(),
                    answers: self.answers.len(),
                    exports: self.exports.len(),
                    imports: self.imports.len(),
                });
            }
            Command::Abort { reason } => {
                let _ = self.conn.shared.reason.set(reason.clone());
                self.enqueue_control(&Header::abort(&reason));
                self.aborted = true;
            }
            Command::Close { done } => {
                tracing::debug!("closing gracefully");
                let _ = self
                    .conn
                    .shared
                    .reason
                    .set(Arc::from("connection closed locally"));
                // Our own pending calls will not be answered after we close.
                self.questions.clear();
                self.closing.get_or_insert_with(Vec::new).push(done);
            }
        }
    }

    fn on_finished(&mut self, finished: Finished, cx: &mut Context<'_>) {
        if let Some(question) = finished.question {
            // Not running any more if the caller sent `Finish` first: then it wants
            // no return.
            match self.answers.get(&question) {
                Some(Answer::Running(_, false)) => self.answer_done(question, finished.reply, cx),
                Some(Answer::Running(_, true)) => {
                    // Only its pipelined calls still want it.
                    let cap = finished.reply.promised_cap(self.codec());
                    self.answers.insert(question, Answer::Done(cap));
                    self.drain_stalled(cx);
                    self.answers.remove(&question);
                }
                _ => {}
            }
        }
    }

    /// Records a finished answer, starts the calls that waited for it, then returns.
    fn answer_done(&mut self, question: QuestionId, reply: Reply, cx: &mut Context<'_>) {
        if reply.needs_finish() {
            let cap = reply.promised_cap(self.codec());
            self.answers.insert(question, Answer::Done(cap));
        } else {
            self.answers.remove(&question);
        }
        // Pipelined calls start (and calls reflected back to the caller are queued)
        // before the return, which keeps them ahead of calls on the result.
        self.drain_stalled(cx);
        self.send_return(question, reply);
    }

    /// Whether an incoming message must wait for one of our answers.
    fn blocked(&self, target: Target, caps: &[CapDescriptor]) -> bool {
        let running = |q: &QuestionId| matches!(self.answers.get(q), Some(Answer::Running(..)));
        matches!(target, Target::Answer(q) if running(&q))
            || caps
                .iter()
                .any(|d| matches!(d, CapDescriptor::ReceiverAnswer(q) if running(q)))
    }

    /// Whether stalled calls wait for `question`'s answer.
    fn awaited(&self, question: QuestionId) -> bool {
        self.stalled.contains_key(&Target::Answer(question))
            || self.stalled.values().flatten().any(|s| {
                matches!(s, Stalled::Call { caps, .. }
                    if caps.contains(&CapDescriptor::ReceiverAnswer(question)))
            })
    }

    /// Delivers stalled messages whose answers are ready, in order per target.
    fn drain_stalled(&mut self, cx: &mut Context<'_>) {
        if self.draining || self.stalled.is_empty() {
            return;
        }
        self.draining = true;
        loop {
            let mut progress = false;
            let targets: Vec<Target> = self.stalled.keys().copied().collect();
            for target in targets {
                loop {
                    let ready = match self.stalled.get(&target).and_then(VecDeque::front) {
                        Some(Stalled::Call { caps, .. }) => !self.blocked(target, caps),
                        Some(Stalled::Disembargo { .. }) => !self.blocked(target, &[]),
                        None => break,
                    };
                    if !ready {
                        break;
                    }
                    let queue = self.stalled.get_mut(&target).expect("present");
                    let next = queue.pop_front().expect("front exists");
                    if matches!(next, Stalled::Call { .. }) {
                        self.stalled_count -= 1;
                    }
                    if queue.is_empty() {
                        self.stalled.remove(&target);
                    }
                    progress = true;
                    match next {
                        Stalled::Call {
                            question,
                            method,
                            payload,
                            caps,
                        } => self.deliver(question, target, method, payload, caps, cx),
                        Stalled::Disembargo { question } => {
                            self.enqueue_control(&Header::Disembargo {
                                question,
                                reflected: true,
                            })
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
        self.draining = false;
    }

    fn on_frame(&mut self, frame: Bytes, cx: &mut Context<'_>) -> Result<(), Arc<str>> {
        let limit = self.conn.max_frame_size();
        if frame.len() > limit {
            // Transports that frame their own messages (memory, user parts) are
            // checked here; byte streams already refuse before allocating.
            return Err(self.violation(RpcError::FrameTooLarge {
                size: frame.len(),
                limit,
            }));
        }
        let frame = if is_chunk(&frame) {
            self.timers.last_chunk = Some(Instant::now());
            match self.reassembly.push(&frame, limit) {
                Ok(Some(whole)) => whole,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.violation(e)),
            }
        } else {
            frame
        };
        let (header, payload) = decode_frame(self.codec(), frame).map_err(|e| self.violation(e))?;
        match header {
            Header::Call {
                question,
                target,
                method,
                caps,
            } => self.on_call(question, target, method, payload, caps, cx),
            Header::Return {
                question,
                outcome,
                caps,
            } => {
                // Resolved even if nobody waits: dropping them releases them.
                let caps = self.resolve(caps);
                let reply = Reply {
                    outcome,
                    payload,
                    caps,
                };
                match self.questions.remove(&question) {
                    Some(sender) => {
                        let came_home = reply.outcome == Outcome::Value
                            && reply.caps.first().is_some_and(
                                |cap| !matches!(cap, CapRef::Import(e) if self.is_ours(&e.conn)),
                            );
                        if self.pipelined.remove(&question) && came_home {
                            // Calls we pipelined on this answer are being reflected back
                            // to us; hold the result until they all have arrived.
                            self.embargoed.insert(question, (sender, reply));
                            self.enqueue_control(&Header::Disembargo {
                                question,
                                reflected: false,
                            });
                        } else {
                            self.deliver_return(question, sender, reply);
                        }
                    }
                    None if question < self.conn.shared.next_question.load(Ordering::Relaxed) => {
                        // Finished by us, or failed by `close()`, before this arrived.
                    }
                    None => {
                        return Err(self.violation(RpcError::BadMessage(format!(
                            "return for question {question}, which was never asked"
                        ))))
                    }
                }
                Ok(())
            }
            Header::Bootstrap {
                question,
                interface,
                fingerprint,
            } => {
                let reply = self.bootstrap(&interface, fingerprint);
                self.send_return(question, reply);
                Ok(())
            }
            Header::Finish { question } => {
                let awaited = self.awaited(question);
                match self.answers.get_mut(&question) {
                    Some(Answer::Running(_, finished)) if awaited => {
                        // Calls pipelined on it still need its result.
                        *finished = true;
                    }
                    Some(Answer::Running(handle, _)) => {
                        tracing::trace!(question, "caller finished early; cancelling handler");
                        handle.abort();
                        self.answers.remove(&question);
                    }
                    Some(Answer::Done(_)) => {
                        self.answers.remove(&question);
                    }
                    None => {}
                }
                Ok(())
            }
            Header::Disembargo {
                question,
                reflected: false,
            } => {
                let target = Target::Answer(question);
                match self.stalled.get_mut(&target) {
                    Some(queue) => queue.push_back(Stalled::Disembargo { question }),
                    None => self.enqueue_control(&Header::Disembargo {
                        question,
                        reflected: true,
                    }),
                }
                Ok(())
            }
            Header::Disembargo {
                question,
                reflected: true,
            } => {
                if let Some((sender, reply)) = self.embargoed.remove(&question) {
                    self.deliver_return(question, sender, reply);
                }
                Ok(())
            }
            Header::Release { id, count } => self
                .exports
                .release(id, count)
                .map_err(|e| self.violation(e)),
            Header::Ping => Ok(()),
            Header::Abort { reason } => Err(format!("peer aborted: {reason}").into()),
        }
    }

    fn bootstrap(&mut self, interface: &str, fingerprint: u64) -> Reply {
        let reply = self.reply_to();
        if self.closing.is_some() {
            return reply.error(&WireError::Closing);
        }
        let Some(root) = self.exports.get(ROOT_EXPORT).cloned() else {
            return reply.error(&WireError::NoRoot);
        };
        let CapRef::Local(object) = &root else {
            return reply.error(&WireError::NoRoot);
        };
        let offered = object.dispatch.interface();
        if offered.name != interface {
            return reply.error(&WireError::WrongInterface {
                found: offered.name.to_owned(),
            });
        }
        if offered.fingerprint != fingerprint {
            tracing::debug!(
                interface,
                "peer's interface differs from ours (another version)"
            );
        }
        Reply {
            outcome: Outcome::Value,
            payload: crate::wire::encode_payload(self.codec(), &())
                .map(Bytes::from)
                .unwrap_or_default(),
            caps: vec![root],
        }
    }

    /// Which limit a new incoming call would exceed, if any.
    fn over_limit(&self, question: Option<QuestionId>) -> Option<String> {
        let config = &self.conn.shared.config;
        if self.running.len() + self.stalled_count >= config.max_inflight_calls {
            return Some(format!(
                "more than {} calls in flight",
                config.max_inflight_calls
            ));
        }
        if question.is_some() && self.answers.len() >= config.max_answers {
            return Some(format!("more than {} answers held", config.max_answers));
        }
        None
    }

    /// Hands a return to the task that asked; if it stopped waiting, frees the
    /// callee's answer ourselves.
    fn deliver_return(
        &mut self,
        question: QuestionId,
        sender: oneshot::Sender<Reply>,
        reply: Reply,
    ) {
        if let Err(reply) = sender.send(reply) {
            if reply.needs_finish() {
                self.enqueue_control(&Header::Finish { question });
            }
        }
    }

    fn on_call(
        &mut self,
        question: Option<QuestionId>,
        target: Target,
        method: u32,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
        cx: &mut Context<'_>,
    ) -> Result<(), Arc<str>> {
        if let Some(q) = question {
            if self.answers.contains_key(&q) {
                return Err(self.violation(RpcError::BadMessage(format!(
                    "question id {q} is already in flight"
                ))));
            }
        }
        if let Some(limit) = self.over_limit(question) {
            if let Some(question) = question {
                let refused = self.reply_to().error(&WireError::Overloaded(limit));
                self.send_return(question, refused);
            }
            return Ok(());
        }
        if self.stalled.contains_key(&target) || self.blocked(target, &caps) {
            self.stalled_count += 1;
            self.stalled
                .entry(target)
                .or_default()
                .push_back(Stalled::Call {
                    question,
                    method,
                    payload,
                    caps,
                });
            return Ok(());
        }
        self.deliver(question, target, method, payload, caps, cx);
        Ok(())
    }

    /// Starts a call whose dependencies are ready.
    fn deliver(
        &mut self,
        question: Option<QuestionId>,
        target: Target,
        method: u32,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
        cx: &mut Context<'_>,
    ) {
        let caps = self.resolve(caps);
        let reply = self.reply_to();
        let object = match target {
            Target::Export(id) => self.exports.get(id).cloned(),
            Target::Answer(q) => match self.answers.get(&q) {
                Some(Answer::Done(cap)) => Some(cap.clone()),
                _ => None,
            },
        };
        let refused = match (&object, &self.closing) {
            (_, Some(_)) => Some(WireError::Closing),
            (None, None) => Some(WireError::ObjectNotFound),
            _ => None,
        };
        if let Some(error) = refused {
            if let Some(question) = question {
                self.send_return(question, reply.error(&error));
            }
            return;
        }
        let incoming = Incoming {
            method,
            payload,
            caps,
            wants_reply: question.is_some(),
            reply,
            context: Some(CallContext {
                connection: self.conn.clone(),
            }),
        };
        let handler = match object.expect("checked above") {
            // The caller's own object (or answer): send the call straight back, now,
            // so it stays in order with everything else we send it.
            CapRef::Import(entry) if self.is_ours(&entry.conn) => {
                self.reflect(Target::Export(entry.id), incoming)
            }
            CapRef::Promise(answer) if self.is_ours(&answer.conn) => {
                self.reflect(Target::Answer(answer.question), incoming)
            }
            object => object.dispatch(incoming),
        };
        self.start(question, handler, cx);
    }

    /// Sends a call back to the peer that owns its target, as our own question.
    fn reflect(&mut self, target: Target, incoming: Incoming) -> Handler {
        let message = Message {
            payload: incoming.payload,
            caps: incoming.caps,
        };
        let method = incoming.method;
        if !incoming.wants_reply {
            let _ = self.send_message(message, |caps| Header::Call {
                question: None,
                target,
                method,
                caps,
            });
            return Box::pin(std::future::ready(Reply::none()));
        }
        let question = self.conn.next_question();
        let sent = self.send_message(message, |caps| Header::Call {
            question: Some(question),
            target,
            method,
            caps,
        });
        if let Err(error) = sent {
            return incoming.reply.fail_now(error);
        }
        let (sender, rx) = oneshot::channel();
        self.questions.insert(question, sender);
        let conn = self.conn.clone();
        let reply_to = incoming.reply;
        Box::pin(async move {
            match rx.await {
                Ok(reply) => {
                    if reply.needs_finish() {
                        let _ = conn.command(Command::Finish {
                            question,
                            answered: true,
                        });
                    }
                    reply
                }
                Err(_) => reply_to.error(&WireError::Forward("connection closed".into())),
            }
        })
    }

    /// Polls a new handler once, here, so calls start in arrival order; spawns it
    /// only if it has to wait.
    fn start(&mut self, question: Option<QuestionId>, mut handler: Handler, cx: &mut Context<'_>) {
        match handler.as_mut().poll(cx) {
            Poll::Ready(reply) => {
                if let Some(question) = question {
                    self.answer_done(question, reply, cx);
                }
            }
            Poll::Pending => {
                let abort = self.running.spawn(async move {
                    Finished {
                        question,
                        reply: handler.await,
                    }
                });
                if let Some(question) = question {
                    self.answers.insert(question, Answer::Running(abort, false));
                }
            }
        }
    }

    fn reply_to(&self) -> ReplyTo {
        let config = &self.conn.shared.config;
        ReplyTo {
            codec: config.codec,
            max_frame_size: config.max_frame_size,
            expose_panics: config.expose_panics,
        }
    }

    /// Records a protocol violation by the peer and tells it why we hang up.
    fn violation(&mut self, error: RpcError) -> Arc<str> {
        let reason = error.to_string();
        tracing::warn!(%reason, "closing connection: protocol violation");
        // Best effort: written once more before the actor stops, never waited for.
        self.enqueue_control(&Header::abort(&reason));
        reason.into()
    }

    /// Fails everything still pending and marks the connection closed.
    fn end(&mut self, reason: Arc<str>) {
        if self.ended {
            return;
        }
        self.ended = true;
        // The reason must be set before pending calls fail, so they can report it.
        let _ = self.conn.shared.reason.set(reason.clone());
        tracing::debug!(%reason, "connection ended");
        self.questions.clear();
        self.embargoed.clear();
        self.running.abort_all();
        self.answers.clear();
        self.stalled.clear();
        self.stalled_count = 0;
        // Exported objects are dropped (their `Drop` runs if this was the last
        // holder); imports are broken because the command channel is closed.
        self.exports = Exports::default();
        self.imports.clear();
        self.commands.close();
        for done in self.closing.take().into_iter().flatten() {
            let _ = done.send(());
        }
        self.conn.shared.closed.send_replace(true);
    }
}

impl<T> Drop for Actor<T> {
    fn drop(&mut self) {
        if !self.ended {
            // The runtime is shutting down (or the task was aborted) mid-connection.
            let _ = self
                .conn
                .shared
                .reason
                .set(Arc::from("connection task stopped"));
            self.questions.clear();
            self.exports = Exports::default();
            self.conn.shared.closed.send_replace(true);
        }
    }
}
