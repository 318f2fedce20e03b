//! The incoming-call path: calls the peer made, from arrival (or a wait in the
//! answer table for an answer they depend on) through their handler to the
//! return; `Finish` and `Disembargo` from the caller; the bootstrap.

use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::answers::{Finished, IncomingCall, Stalled};
use super::Actor;
use crate::cap::{CapRef, Handler, Incoming, Message, Reply};
use crate::connection::{CallContext, Command};
use crate::error::{CloseReason, RpcError, WireError};
use crate::transport::Transport;
use crate::wire::{Header, Outcome, QuestionId, Target, ROOT_EXPORT};

impl<T: Transport> Actor<T> {
    pub(super) fn on_finished(&mut self, finished: Finished, cx: &mut Context<'_>) {
        let Some(question) = finished.question else {
            return;
        };
        if let Some(done) = self.answers.running(question) {
            self.complete(question, finished.reply, done, cx);
        }
    }

    /// Records a finished answer, starts the calls that waited for it, then returns
    /// it, unless the caller already sent `Finish` (`finished`).
    fn complete(
        &mut self,
        question: QuestionId,
        reply: Reply,
        finished: bool,
        cx: &mut Context<'_>,
    ) {
        self.answers.settle(question, &reply, finished);
        // Pipelined calls start (and calls reflected back to the caller are queued)
        // before the return, which keeps them ahead of calls on the result.
        self.drain_stalled(cx);
        if !finished {
            self.send_return(question, reply);
        }
    }

    /// The caller no longer wants the answer to `question`.
    pub(super) fn on_finish(&mut self, question: QuestionId, cx: &mut Context<'_>) {
        // Not held: already returned and forgotten, or never asked; nothing to free.
        if self.answers.mark_finished(question) {
            self.forget_unwanted(vec![question], cx);
        }
    }

    /// Forgets finished answers nothing waits for (see `Answers::forget_unwanted`),
    /// releasing what the calls taken out of their queues carried.
    fn forget_unwanted(&mut self, candidates: Vec<QuestionId>, cx: &mut Context<'_>) {
        let discarded = self.answers.forget_unwanted(candidates);
        let unblocked = !discarded.is_empty();
        for call in discarded {
            self.discard(call);
        }
        if unblocked {
            // A call taken out of a queue may have held up the ones behind it.
            self.drain_stalled(cx);
        }
    }

    /// A caller's `Disembargo` for `question`: reflected once every call queued on
    /// that answer before it has been delivered. It is only sent after the return,
    /// and once per question.
    pub(super) fn on_disembargo(&mut self, question: QuestionId) -> Result<(), CloseReason> {
        if self.answers.pending(question) {
            return Err(self.violation(RpcError::BadMessage(format!(
                "disembargo for question {question}, which has not returned"
            ))));
        }
        match self.answers.stall_disembargo(question) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.enqueue_control(&Header::Disembargo {
                    question,
                    reflected: true,
                });
                Ok(())
            }
            Err(()) => Err(self.violation(RpcError::BadMessage(format!(
                "a second disembargo for question {question}"
            )))),
        }
    }

    /// Drops a call that will not run, giving back the references it carried: the
    /// objects the peer passed in it are released.
    fn discard(&mut self, call: IncomingCall) {
        drop(self.resolve(call.caps));
    }

    /// Delivers stalled messages whose answers are ready, in order per target.
    fn drain_stalled(&mut self, cx: &mut Context<'_>) {
        if !self.answers.begin_drain() {
            return;
        }
        while let Some(next) = self.answers.next_ready() {
            match next {
                Stalled::Call(call) => self.deliver(call, true, cx),
                Stalled::Disembargo { question } => self.enqueue_control(&Header::Disembargo {
                    question,
                    reflected: true,
                }),
            }
        }
        self.answers.end_drain();
        // Finished answers kept only for the calls just started may go now.
        let kept = self.answers.kept_for_others();
        if !kept.is_empty() {
            self.forget_unwanted(kept, cx);
        }
    }

    pub(super) fn bootstrap(&mut self, interface: &str, fingerprint: u64) -> Reply {
        let reply = self.reply_to();
        if self.phase.is_closing() {
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
            codec: self.codec(),
            error_text: None,
        }
    }

    /// Which limit a new incoming call would exceed, if any.
    fn over_limit(&self, question: Option<QuestionId>) -> Option<String> {
        let config = &self.conn.shared.config;
        if self.answers.in_flight() >= config.max_inflight_calls {
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

    pub(super) fn on_call(
        &mut self,
        mut call: IncomingCall,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        if let Some(q) = call.question {
            // Whatever state the first one is in: waiting, running or kept.
            if self.answers.contains(q) {
                return Err(self.violation(RpcError::BadMessage(format!(
                    "question id {q} is already in flight"
                ))));
            }
        }
        if let Some(limit) = self.over_limit(call.question) {
            if let Some(question) = call.question {
                let refused = self.reply_to().error(&WireError::Overloaded(limit));
                self.send_return(question, refused);
            }
            self.discard(call);
            return Ok(());
        }
        self.answers.fix_needs(&mut call);
        if self.answers.must_wait(&call) {
            self.answers.stall(call);
            return Ok(());
        }
        self.deliver(call, false, cx);
        Ok(())
    }

    /// Starts a call whose dependencies are ready; `waited`: it waited in `stalled`
    /// (and so has an answer entry, which a `Finish` may have marked).
    fn deliver(&mut self, call: IncomingCall, waited: bool, cx: &mut Context<'_>) {
        let IncomingCall {
            question,
            target,
            method,
            payload,
            caps,
            codec,
            ..
        } = call;
        let caps = self.resolve(caps);
        let reply = self.reply_to();
        let object = match target {
            Target::Export(id) => self.exports.get(id).cloned(),
            Target::Answer(q) => self.answers.result(q),
        };
        let refused = match &object {
            _ if self.phase.is_closing() => Some(WireError::Closing),
            None => Some(WireError::ObjectNotFound),
            Some(_) => None,
        };
        if let Some(error) = refused {
            if let Some(question) = question {
                if !self.answers.forget(question) {
                    self.send_return(question, reply.error(&error));
                }
            }
            return;
        }
        let incoming = Incoming {
            method,
            payload,
            caps,
            codec,
            wants_reply: question.is_some(),
            reply,
            context: Some(CallContext {
                connection: self.counted(),
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
        // Only a call that waited can have been finished already; a fresh one has no
        // entry yet, so the common path looks nothing up.
        let finished = waited && question.is_some_and(|q| self.answers.is_finished(q));
        self.start(question, finished, handler, cx);
    }

    /// Sends a call back to the peer that owns its target, as our own question.
    fn reflect(&mut self, target: Target, incoming: Incoming) -> Handler {
        let message = Message {
            payload: incoming.payload,
            caps: incoming.caps,
            codec: incoming.codec,
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
        self.questions.asked(question, sender);
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
    fn start(
        &mut self,
        question: Option<QuestionId>,
        finished: bool,
        mut handler: Handler,
        cx: &mut Context<'_>,
    ) {
        match handler.as_mut().poll(cx) {
            Poll::Ready(reply) => {
                if let Some(question) = question {
                    self.complete(question, reply, finished, cx);
                }
            }
            Poll::Pending => self.answers.spawn(question, finished, handler),
        }
    }
}
