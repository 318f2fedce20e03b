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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use super::{Command, Connection, Response};
use crate::context::CallContext;
use crate::dispatch::{Dispatch, Handler, Incoming, ReplyTo};
use crate::error::{RpcError, WireError};
use crate::transport::Transport;
use crate::wire::{decode_frame, encode_frame, Header, Outcome, QuestionId, Target, ROOT_EXPORT};

/// Items taken from one source before the others get a turn.
const BATCH: usize = 64;

pub(super) fn spawn<T: Transport>(
    conn: Connection,
    commands: mpsc::UnboundedReceiver<Command>,
    transport: T,
    root: Option<Arc<dyn Dispatch>>,
) {
    let span = tracing::debug_span!("farcall::connection", id = conn.id());
    tracing::debug!(parent: &span, root = root.as_ref().map(|r| r.interface().name), "connection open");
    let actor = Actor {
        transport,
        conn,
        commands,
        questions: HashMap::new(),
        answers: HashMap::new(),
        running: JoinSet::new(),
        root,
        outbound: VecDeque::new(),
        queued_bytes: 0,
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
    frame: Option<Bytes>,
}

struct Actor<T> {
    transport: T,
    conn: Connection,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Calls this side made that await a return.
    questions: HashMap<QuestionId, oneshot::Sender<Response>>,
    /// Calls the peer made whose handlers are still running (spawned).
    answers: HashMap<QuestionId, AbortHandle>,
    running: JoinSet<Finished>,
    root: Option<Arc<dyn Dispatch>>,
    outbound: VecDeque<Bytes>,
    queued_bytes: usize,
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
                        self.on_finished(finished);
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
                return Poll::Pending;
            }
        }
    }

    fn queue_full(&self) -> bool {
        self.queued_bytes >= self.conn.shared.config.max_queued_bytes
    }

    fn enqueue(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len();
        self.outbound.push_back(frame);
    }

    /// Moves queued frames into the transport and flushes once they are in.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(frame) = self.outbound.front() {
            let len = frame.len();
            match Pin::new(&mut self.transport).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
            let frame = self.outbound.pop_front().expect("front exists");
            self.queued_bytes -= len;
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

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Ask {
                question,
                frame,
                reply,
            } => {
                if self.closing.is_some() {
                    // Dropping `reply` fails the call with the close reason.
                    return;
                }
                self.questions.insert(question, reply);
                self.enqueue(frame);
            }
            Command::Send { frame } => {
                if self.closing.is_none() {
                    self.enqueue(frame);
                }
            }
            Command::Finish { question } => {
                if self.questions.remove(&question).is_some() {
                    if let Ok(frame) = encode_frame(self.codec(), &Header::Finish { question }, &())
                    {
                        self.enqueue(frame.into());
                    }
                }
            }
            Command::Abort => {
                let reason = "connection aborted locally";
                let _ = self.conn.shared.reason.set(Arc::from(reason));
                if let Ok(frame) = encode_frame(self.codec(), &Header::abort(reason), &()) {
                    self.enqueue(frame.into());
                }
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

    fn on_finished(&mut self, finished: Finished) {
        if let Some(question) = finished.question {
            // Gone if the caller sent `Finish` first: then it wants no return.
            if self.answers.remove(&question).is_none() {
                return;
            }
        }
        if let Some(frame) = finished.frame {
            self.enqueue(frame);
        }
    }

    fn codec(&self) -> crate::codec::AnyCodec {
        self.conn.codec()
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
        let (header, payload) = decode_frame(self.codec(), frame).map_err(|e| self.violation(e))?;
        match header {
            Header::Call {
                question,
                target,
                method,
            } => self.on_call(question, target, method, payload, cx),
            Header::Return { question, outcome } => {
                match self.questions.remove(&question) {
                    // A dropped receiver is normal: the caller stopped waiting.
                    Some(reply) => drop(reply.send(Response { outcome, payload })),
                    None if question
                        < self
                            .conn
                            .shared
                            .next_question
                            .load(std::sync::atomic::Ordering::Relaxed) =>
                    {
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
                let reply = self.reply_to(Some(question));
                let frame = match (&self.root, &self.closing) {
                    (_, Some(_)) => reply.error(&WireError::Closing),
                    (None, None) => reply.error(&WireError::NoRoot),
                    (Some(root), None) => {
                        let offered = root.interface();
                        if offered.name != interface {
                            reply.error(&WireError::WrongInterface {
                                found: offered.name.to_owned(),
                            })
                        } else {
                            if offered.fingerprint != fingerprint {
                                tracing::debug!(
                                    interface,
                                    "peer's interface differs from ours (another version)"
                                );
                            }
                            encode_frame(
                                self.codec(),
                                &Header::Return {
                                    question,
                                    outcome: Outcome::Value,
                                },
                                &(),
                            )
                            .ok()
                            .map(Bytes::from)
                        }
                    }
                };
                if let Some(frame) = frame {
                    self.enqueue(frame);
                }
                Ok(())
            }
            Header::Finish { question } => {
                if let Some(handle) = self.answers.remove(&question) {
                    tracing::trace!(question, "caller finished early; cancelling handler");
                    handle.abort();
                }
                Ok(())
            }
            Header::Abort { reason } => Err(format!("peer aborted: {reason}").into()),
        }
    }

    fn on_call(
        &mut self,
        question: Option<QuestionId>,
        target: Target,
        method: u32,
        payload: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), Arc<str>> {
        if let Some(q) = question {
            if self.answers.contains_key(&q) {
                return Err(self.violation(RpcError::BadMessage(format!(
                    "question id {q} is already in flight"
                ))));
            }
        }
        let reply = self.reply_to(question);
        let object = match target {
            Target::Export(ROOT_EXPORT) => self.root.clone(),
            Target::Export(_) => None,
        };
        let refused = match (&object, &self.closing) {
            (_, Some(_)) => Some(WireError::Closing),
            (None, None) => Some(WireError::ObjectNotFound),
            _ => None,
        };
        if let Some(error) = refused {
            if let Some(frame) = reply.error(&error) {
                self.enqueue(frame);
            }
            return Ok(());
        }
        let object = object.expect("checked above");
        let incoming = Incoming {
            method,
            payload,
            reply: reply.clone(),
            context: CallContext {
                connection: self.conn.clone(),
            },
        };
        // `dispatch` only decodes and builds a future, but a user's `Deserialize`
        // impl could still panic.
        let handler: Handler =
            match std::panic::catch_unwind(AssertUnwindSafe(|| object.dispatch(incoming))) {
                Ok(handler) => handler,
                Err(panic) => Box::pin(std::future::ready(reply.panic(panic))),
            };
        self.start(question, handler, cx);
        Ok(())
    }

    /// Polls a new handler once, here, so calls start in arrival order; spawns it
    /// only if it has to wait.
    fn start(&mut self, question: Option<QuestionId>, mut handler: Handler, cx: &mut Context<'_>) {
        match handler.as_mut().poll(cx) {
            Poll::Ready(frame) => {
                if let Some(frame) = frame {
                    self.enqueue(frame);
                }
            }
            Poll::Pending => {
                let abort = self.running.spawn(async move {
                    Finished {
                        question,
                        frame: handler.await,
                    }
                });
                if let Some(question) = question {
                    self.answers.insert(question, abort);
                }
            }
        }
    }

    fn reply_to(&self, question: Option<QuestionId>) -> ReplyTo {
        let config = &self.conn.shared.config;
        ReplyTo {
            question,
            codec: config.codec,
            max_frame_size: config.max_frame_size,
            expose_panics: config.expose_panics,
        }
    }

    /// Records a protocol violation by the peer and tells it why we hang up.
    fn violation(&mut self, error: RpcError) -> Arc<str> {
        let reason = error.to_string();
        tracing::warn!(%reason, "closing connection: protocol violation");
        if let Ok(frame) = encode_frame(self.codec(), &Header::abort(&reason), &()) {
            // Best effort: written once more before the actor stops, never waited for.
            self.enqueue(frame.into());
        }
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
        self.running.abort_all();
        self.answers.clear();
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
            self.conn.shared.closed.send_replace(true);
        }
    }
}
