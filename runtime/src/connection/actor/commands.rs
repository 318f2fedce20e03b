//! Commands from the connection's handles: calls to send, finishes, dropped
//! imports, stats, close and abort.

use std::sync::atomic::Ordering;

use super::{Actor, Phase};
use crate::cap::Message;
use crate::connection::{Command, Outgoing, Stats};
use crate::error::CloseReason;
use crate::transport::Transport;
use crate::wire::{Header, Target, ROOT_EXPORT};

impl<T: Transport> Actor<T> {
    /// The message left the command channel: it now counts in the outbound queue.
    fn unreserve(&self, message: &Message) {
        let shared = &self.conn.shared;
        let len = message.payload.len();
        let before = shared.pending_bytes.fetch_sub(len, Ordering::Relaxed);
        let limit = shared.config.queue_limit();
        if before >= limit && before - len < limit {
            // Senders refused as overloaded may try again (see `Connection::room`).
            shared.room.notify_waiters();
        }
    }

    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Ask {
                question,
                outgoing,
                message,
                reply,
            } => {
                self.unreserve(&message);
                if self.phase.is_closing() {
                    // Dropping `reply` fails the call with the close reason.
                    return;
                }
                if let Outgoing::Call {
                    target: Target::Answer(on),
                    ..
                } = outgoing
                {
                    self.questions.pipelined_on(on);
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
                        self.questions.asked(question, reply);
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
                refusals,
            } => {
                self.unreserve(&message);
                if let Target::Answer(on) = target {
                    self.questions.pipelined_on(on);
                }
                if !self.phase.is_closing() {
                    let sent = self.send_message(message, |caps| Header::Call {
                        question: None,
                        target,
                        method,
                        caps,
                    });
                    if let Err(error) = sent {
                        tracing::warn!(?error, "one-way call dropped");
                        if let Some(refusals) = refusals {
                            let why = error.into_rpc("a one-way call", "its method");
                            refusals.refuse(why.to_string());
                        }
                    }
                }
            }
            Command::Finish { question, answered } => {
                if self.questions.finish(question) || answered {
                    self.enqueue_control(&Header::Finish { question });
                }
            }
            Command::Revoked { key } => {
                if let Some(id) = self.exports.id_of(key) {
                    self.enqueue_control(&Header::Revoked { id });
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
                    questions: self.questions.len(),
                    answers: self.answers.len(),
                    exports: self.exports.len(),
                    // The peer's root, like ours among the exports, is not counted.
                    imports: self.imports.len()
                        - usize::from(self.imports.contains_key(&ROOT_EXPORT)),
                    streams: self.conn.shared.streams.load(Ordering::Acquire),
                });
            }
            Command::Abort { reason } => {
                self.enqueue_control(&Header::abort(&reason.to_string()));
                let _ = self.conn.shared.reason.set(reason);
                self.phase = Phase::Aborting;
            }
            Command::HandlesGone => self.close_if_unused(),
            Command::Close { done } => {
                tracing::debug!("closing gracefully");
                let _ = self.conn.shared.reason.set(CloseReason::ClosedLocally);
                // Our own pending calls will not be answered after we close.
                self.questions.fail_waiting();
                self.closers.extend(done);
                if matches!(self.phase, Phase::Open) {
                    self.phase = Phase::Closing;
                }
            }
        }
    }
}
