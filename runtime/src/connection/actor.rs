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

mod answers;
mod commands;
mod inbound;
mod incoming;
mod questions;
mod tables;
mod timers;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use tokio::time::Instant;
use tracing::Instrument;

use super::outbound::{Order, Outbound, Reassembly};
use super::{Command, Connection, Handle};
use crate::cap::{CapRef, LocalObject, Message};
use crate::cap::{Reply, ReplyTo};
use crate::error::{CloseReason, RpcError, WireError};
use crate::transport::Transport;
use crate::wire::{
    encode_frame, finish_frame, CapDescriptor, ExportId, Header, Hello, Outcome, QuestionId,
};

use answers::Answers;
use questions::Questions;
use tables::{Exports, Import};
use timers::Timers;

/// Items taken from one source before the others get a turn.
const BATCH: usize = 64;

/// How long a connection that failed keeps trying to deliver its last frames (the
/// `Abort` that tells the peer why) before it drops the transport.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn spawn<T: Transport>(
    conn: Connection,
    handle: Weak<Handle>,
    commands: mpsc::UnboundedReceiver<Command>,
    transport: T,
    root: Option<Arc<LocalObject>>,
) {
    let span = tracing::debug_span!("farcall::connection", id = conn.id());
    tracing::debug!(parent: &span, root = root.as_ref().map(|r| r.dispatch.interface().name), "connection open");
    let config = &conn.shared.config;
    let mut outbound = Outbound::new(config.chunk_size);
    // Our opening message goes first; calls made before the peer's arrives follow it
    // at once, so the exchange costs no round trip.
    let hello = Hello::ours(config.codec, config.max_frame_size);
    outbound.push(hello.encode(), Order::Free);
    let mut exports = Exports::default();
    if let Some(root) = root {
        exports.insert_root(CapRef::Local(root));
    }
    let actor = Actor {
        transport,
        conn,
        commands,
        questions: Questions::default(),
        answers: Answers::default(),
        timers: Timers::default(),
        exports,
        imports: HashMap::new(),
        next_generation: 0,
        outbound,
        hello,
        peer: None,
        reassembly: Reassembly::default(),
        needs_flush: false,
        phase: Phase::Open,
        closers: Vec::new(),
        handle,
    };
    tokio::spawn(actor.instrument(span));
}

struct Actor<T> {
    transport: T,
    conn: Connection,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Calls this side made that await a return.
    questions: Questions,
    /// Calls the peer made: waiting, running, or kept for pipelined calls.
    answers: Answers,
    timers: Timers,
    exports: Exports,
    imports: HashMap<ExportId, Import>,
    next_generation: u64,
    outbound: Outbound,
    /// Our opening message, and the peer's once it arrived: until then, every frame
    /// but the opening one is a protocol violation.
    hello: Hello,
    peer: Option<Hello>,
    reassembly: Reassembly,
    needs_flush: bool,
    phase: Phase,
    /// Who waits for a graceful close to end.
    closers: Vec<oneshot::Sender<()>>,
    /// The handles that keep the connection in use (see `Connection`).
    handle: Weak<Handle>,
}

/// Why the actor stops.
type End = Result<(), CloseReason>;

/// Where a connection is in its life.
enum Phase {
    /// Serving both ways.
    Open,
    /// Closing gracefully: new incoming calls are refused; it ends once the running
    /// ones are done and everything queued is written, or at the drain deadline.
    Closing,
    /// `abort()` was asked: it ends after one last write (the `Abort` frame).
    Aborting,
    /// Ended (everything pending failed); the last frames are written until the
    /// deadline, then the transport is dropped.
    Lingering(Pin<Box<tokio::time::Sleep>>),
    /// Over.
    Ended,
}

impl Phase {
    /// Whether the connection still serves: nothing has failed yet.
    fn is_live(&self) -> bool {
        matches!(self, Phase::Open | Phase::Closing | Phase::Aborting)
    }

    fn is_closing(&self) -> bool {
        matches!(self, Phase::Closing)
    }
}

impl<T: Transport> Future for Actor<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.phase.is_live() {
            match this.turn(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    this.end(CloseReason::ClosedLocally);
                    return Poll::Ready(());
                }
                Poll::Ready(Err(reason)) => {
                    // Everything pending fails now; the transport gets a little
                    // longer to deliver what is queued (the `Abort` saying why).
                    this.end(reason);
                    this.phase = Phase::Lingering(Box::pin(tokio::time::sleep(LINGER)));
                }
            }
        }
        this.linger(cx)
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
                match self.answers.poll_finished(cx) {
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
                        // Reading failed (an oversized frame, say); writing may still
                        // work, so the peer is told.
                        let reason = CloseReason::Transport(e.to_string());
                        return Poll::Ready(Err(self.tell_peer(reason)));
                    }
                    Poll::Ready(None) => return Poll::Ready(Err(CloseReason::PeerClosed)),
                    Poll::Pending => break,
                }
            }

            if let Poll::Ready(Err(e)) = self.write(cx) {
                return Poll::Ready(Err(CloseReason::Transport(e.to_string())));
            }
            if matches!(self.phase, Phase::Aborting) {
                // The `Abort` is queued; lingering writes it.
                return Poll::Ready(Err(CloseReason::AbortedLocally));
            }

            if self.phase.is_closing() && !self.answers.any_running() && self.outbound.is_empty() {
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

    fn is_ours(&self, conn: &Connection) -> bool {
        Arc::ptr_eq(&conn.shared, &self.conn.shared)
    }

    /// Frames a message with `header` built from its capability descriptors.
    fn send_message(
        &mut self,
        message: Message,
        header: impl FnOnce(Vec<CapDescriptor>) -> Header,
    ) -> Result<(), WireError> {
        let caps = self.describe(&message.caps)?;
        let header = header(caps);
        let order = Order::of(&header);
        // A payload in another codec (forwarded from another connection) says so.
        let framed = if message.codec == self.codec() {
            finish_frame(self.codec(), message.payload, &header)
        } else {
            let foreign = Header::Foreign {
                codec: message.codec.wire_id(),
                header: Box::new(header.clone()),
            };
            finish_frame(self.codec(), message.payload, &foreign)
        };
        let refused = match framed {
            Ok(frame) if frame.len() <= self.send_limit() => {
                self.enqueue(frame, order);
                return Ok(());
            }
            Ok(frame) => WireError::FrameTooLarge {
                size: frame.len() as u64,
                limit: self.send_limit() as u64,
            },
            Err(e) => WireError::Encode(e.to_string()),
        };
        // Nothing was sent: the references just counted for the peer are not its.
        self.undescribe(&header);
        Err(refused)
    }

    fn send_return(&mut self, question: QuestionId, reply: Reply) {
        let outcome = reply.outcome;
        let message = Message {
            payload: reply.payload,
            caps: reply.caps,
            codec: reply.codec,
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
                codec: failed.codec,
            };
            let _ = self.send_message(message, |caps| Header::Return {
                question,
                outcome: Outcome::Failed,
                caps,
            });
        }
    }
    /// A handle that keeps the connection in use, for what the peer hands us (imports)
    /// and for running handlers.
    fn counted(&mut self) -> Connection {
        let handle = self.handle.upgrade().unwrap_or_else(|| {
            let handle = Arc::new(Handle {
                commands: self.conn.shared.commands.clone(),
            });
            self.handle = Arc::downgrade(&handle);
            handle
        });
        Connection {
            shared: self.conn.shared.clone(),
            _handle: Some(handle),
        }
    }

    /// Closes gracefully once nothing uses the connection: no handle on this side,
    /// and nothing the peer could call (no root, no exports).
    fn close_if_unused(&mut self) {
        let unused = self.handle.strong_count() == 0
            && self.exports.get(crate::wire::ROOT_EXPORT).is_none()
            && self.exports.len() == 0
            && matches!(self.phase, Phase::Open);
        if unused {
            tracing::debug!("every handle dropped; closing");
            let _ = self.conn.shared.reason.set(CloseReason::Unused);
            self.phase = Phase::Closing;
        }
    }

    fn reply_to(&self) -> ReplyTo {
        let config = &self.conn.shared.config;
        ReplyTo {
            codec: config.codec,
            expose_panics: config.expose_panics,
        }
    }

    /// The largest frame this side sends: its own limit, and the peer's once its
    /// opening message told it.
    fn send_limit(&self) -> usize {
        let ours = self.conn.max_frame_size();
        match &self.peer {
            Some(peer) => ours.min(usize::try_from(peer.max_frame_size).unwrap_or(usize::MAX)),
            None => ours,
        }
    }

    /// Records a protocol violation by the peer and tells it why we hang up.
    fn violation(&mut self, error: RpcError) -> CloseReason {
        let reason = error.to_string();
        tracing::warn!(%reason, "closing connection: protocol violation");
        self.tell_peer(CloseReason::ProtocolViolation(reason))
    }

    /// Queues an `Abort` telling the peer why this side hangs up; it goes out while
    /// the connection lingers, on every transport.
    fn tell_peer(&mut self, reason: CloseReason) -> CloseReason {
        self.enqueue_control(&Header::abort(&reason.to_string()));
        reason
    }

    /// After a failure: writes what is queued, flushes and closes the transport,
    /// giving up at the linger deadline or on the first error.
    fn linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let expired = match &mut self.phase {
            Phase::Lingering(deadline) => deadline.as_mut().poll(cx).is_ready(),
            _ => true,
        };
        if expired {
            return Poll::Ready(());
        }
        match self.write(cx) {
            Poll::Ready(Ok(())) if self.outbound.is_empty() && !self.needs_flush => {}
            Poll::Ready(Ok(())) | Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
        }
        Pin::new(&mut self.transport).poll_close(cx).map(|_| ())
    }

    /// Fails everything still pending and marks the connection closed.
    fn end(&mut self, reason: CloseReason) {
        if !self.phase.is_live() {
            return;
        }
        self.phase = Phase::Ended;
        // The reason must be set before pending calls fail, so they can report it.
        let _ = self.conn.shared.reason.set(reason.clone());
        tracing::debug!(%reason, "connection ended");
        self.questions.clear();
        self.answers.clear();
        // Exported objects are dropped (their `Drop` runs if this was the last
        // holder); imports are broken because the command channel is closed.
        self.exports = Exports::default();
        self.imports.clear();
        self.commands.close();
        for done in self.closers.drain(..) {
            let _ = done.send(());
        }
        self.conn.shared.closed.send_replace(true);
    }
}

impl<T> Drop for Actor<T> {
    fn drop(&mut self) {
        if self.phase.is_live() {
            // The runtime is shutting down (or the task was aborted) mid-connection.
            let _ = self.conn.shared.reason.set(CloseReason::TaskStopped);
            self.questions.clear();
            self.exports = Exports::default();
            self.conn.shared.closed.send_replace(true);
        }
    }
}
