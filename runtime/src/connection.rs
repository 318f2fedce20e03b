//! Connections: the handle users hold (this file), its configuration and builder
//! (`config.rs`), the commands handles send (`command.rs`), the caller's side of a
//! question (`question.rs`), the call context (`context.rs`), and the actor task
//! that owns the transport and the tables (`actor/`).
//!
//! Each connection is served by one actor task (see `actor.rs`) that owns the
//! transport and the protocol tables. [`Connection`] handles and the clients made from
//! them talk to the actor over a channel, so a call costs no lock, only channel
//! operations; the caller's own task encodes arguments and decodes results.

mod actor;
mod command;
mod config;
mod context;
mod outbound;
mod question;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use self::command::{Command, Outgoing, Refusals};
pub use self::config::{Builder, Config};
pub use self::context::CallContext;
pub(crate) use self::context::CONTEXT;
pub(crate) use self::question::{AnswerRef, Question};
use crate::cap::Message;
use crate::codec::AnyCodec;
use crate::error::{CloseReason, RpcError};
use crate::wire::{QuestionId, Target};

/// The sizes of a connection's tables, from [`Connection::stats`]. Neither side's
/// root is counted (not among the exports of the side offering it, not among the
/// imports of the side holding it), so once every other handle, callback and pending
/// call is dropped, all are zero: a number that keeps growing is a leak.
///
/// ```
/// # use farcall::Stats;
/// assert!(Stats::default().is_zero());
/// assert_eq!(Stats::new(0, 0, 1, 0).exports, 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls this side made that await a return (questions).
    pub questions: usize,
    /// Calls the peer made that this side still holds: running, waiting for an
    /// answer they depend on, or finished and kept for calls pipelined on them
    /// (answers).
    pub answers: usize,
    /// Objects and callbacks this side exported to the peer, not counting the root.
    pub exports: usize,
    /// Objects and callbacks the peer exported that this side still holds, not
    /// counting the peer's root.
    pub imports: usize,
    /// Streams open on the connection, in either direction: started and not yet
    /// ended ([`Stream`](crate::Stream), [`ByteStream`](crate::ByteStream)).
    pub streams: usize,
}

impl Stats {
    /// Table sizes to compare [`Connection::stats`] with in tests (no open streams).
    pub fn new(questions: usize, answers: usize, exports: usize, imports: usize) -> Self {
        Stats {
            questions,
            answers,
            exports,
            imports,
            streams: 0,
        }
    }

    /// Whether every table is empty.
    pub fn is_zero(&self) -> bool {
        *self == Stats::default()
    }
}

pub(crate) struct Shared {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
    next_question: AtomicU64,
    /// Bytes of calls handed to the connection task and not yet taken into its
    /// outbound queue: what `max_queued_bytes` bounds for local callers.
    pub(crate) pending_bytes: AtomicUsize,
    /// Streams open on the connection (see `stream.rs`).
    pub(crate) streams: AtomicUsize,
    /// Notified when `pending_bytes` falls below the limit again.
    pub(crate) room: tokio::sync::Notify,
    config: Config,
    /// Why the connection ended; set before any pending call is failed, so every
    /// failed call can say why.
    reason: OnceLock<CloseReason>,
    closed: watch::Sender<bool>,
}

/// A handle to a live connection; cheap to clone, usable from any task.
///
/// A connection is symmetric: each side may offer a root object (see
/// [`Builder::root`]) and may ask for the other's with [`root`](Self::root).
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
    /// Present in every handle that keeps the connection in use; the connection
    /// task's own handle has none. When the last one goes, a connection that offers
    /// nothing to its peer closes itself.
    _handle: Option<Arc<Handle>>,
}

/// Shared by the handles that keep a connection in use.
pub(crate) struct Handle {
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::HandlesGone);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// A builder with the default [`Config`] and no root.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A process-unique number identifying this connection (in logs, and to tell
    /// peers apart in a handler through [`CallContext`](crate::CallContext)).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The connection's settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The sizes of this side's tables: pending calls, running handlers, exports and
    /// imports. See [`Stats`]. On a connection that has ended, the tables are gone
    /// and this fails with [`RpcError::Disconnected`] giving the close reason.
    pub async fn stats(&self) -> Result<Stats, RpcError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Stats { reply })?;
        rx.await.map_err(|_| self.disconnect_error())
    }

    /// Closes gracefully: incoming calls already running finish and their results
    /// are sent, new incoming calls are refused with [`RpcError::Closing`], this
    /// side's pending calls fail with [`RpcError::Disconnected`], then the transport
    /// is closed. Calls still running when [`Config::drain_timeout`] passes are
    /// dropped and the connection ends anyway, so this always resolves: when the
    /// connection has ended.
    pub fn close(&self) -> impl Future<Output = ()> + Send + 'static {
        let (done, wait) = oneshot::channel();
        let sent = self.command(Command::Close { done: Some(done) }).is_ok();
        let closed = self.closed();
        async move {
            if sent {
                let _ = wait.await;
            }
            closed.await;
        }
    }

    /// Closes at once: running handlers are dropped, every pending call on both sides
    /// fails with [`RpcError::Disconnected`], and the peer is told why. Resolves when
    /// the connection has ended.
    pub fn abort(&self) -> impl Future<Output = ()> + Send + 'static {
        self.abort_with(CloseReason::AbortedLocally)
    }

    /// [`abort`](Self::abort) with `reason` as the close reason (unless the
    /// connection already has one), so pending calls say why they failed.
    pub(crate) fn abort_with(
        &self,
        reason: CloseReason,
    ) -> impl Future<Output = ()> + Send + 'static {
        let _ = self.command(Command::Abort { reason });
        self.closed()
    }

    /// Resolves once the connection has ended, for whatever reason.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Why the connection ended (or is ending), if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().cloned()
    }

    pub(crate) fn codec(&self) -> AnyCodec {
        self.shared.config.codec
    }

    pub(crate) fn max_frame_size(&self) -> usize {
        self.shared.config.max_frame_size
    }

    pub(crate) fn next_question(&self) -> QuestionId {
        self.shared.next_question.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn commands(&self) -> &mpsc::UnboundedSender<Command> {
        &self.shared.commands
    }

    pub(crate) fn command(&self, command: Command) -> Result<(), RpcError> {
        self.shared
            .commands
            .send(command)
            .map_err(|_| self.disconnect_error())
    }

    /// Sends a question; the returned future yields its reply.
    pub(crate) fn ask(&self, outgoing: Outgoing, message: Message) -> Result<Question, RpcError> {
        self.reserve(message.payload.len())?;
        let id = self.next_question();
        let (reply, rx) = oneshot::channel();
        self.command(Command::Ask {
            question: id,
            outgoing,
            message,
            reply,
        })?;
        Ok(Question::new(self.clone(), id, rx))
    }

    /// Sends a one-way call.
    pub(crate) fn send(
        &self,
        target: Target,
        method: u32,
        message: Message,
        refusals: Option<Arc<Refusals>>,
    ) -> Result<(), RpcError> {
        self.reserve(message.payload.len())?;
        self.command(Command::Send {
            target,
            method,
            message,
            refusals,
        })
    }

    /// Resolves once calls refused with [`RpcError::Overloaded`] because too many
    /// bytes were queued may be tried again, or the connection has ended (then
    /// they fail with its reason).
    pub(crate) async fn room(&self) {
        let limit = self.shared.config.queue_limit();
        let closed = self.closed();
        tokio::pin!(closed);
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a notification in between is kept.
            room.as_mut().enable();
            if self.shared.pending_bytes.load(Ordering::Relaxed) < limit || self.is_closed() {
                return;
            }
            tokio::select! {
                () = &mut room => {}
                () = &mut closed => return,
            }
        }
    }

    /// Counts `bytes` as queued for sending, refusing when the queue is full.
    fn reserve(&self, bytes: usize) -> Result<(), RpcError> {
        let pending = &self.shared.pending_bytes;
        let limit = self.shared.config.queue_limit();
        if pending.load(Ordering::Relaxed) >= limit {
            // An ended connection drains nothing: say why instead.
            if self.is_closed() {
                return Err(self.disconnect_error());
            }
            return Err(RpcError::Overloaded(format!(
                "more than {limit} bytes are queued for sending (the peer is not reading fast enough)"
            )));
        }
        pending.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn disconnect_error(&self) -> RpcError {
        let reason = self
            .shared
            .reason
            .get()
            .cloned()
            .unwrap_or_else(|| CloseReason::Other("connection closed".into()));
        RpcError::Disconnected(reason)
    }
}
