//! The answer table and the incoming-call path: calls the peer made, from arrival
//! (or a wait on an answer they depend on) through their handler to the return.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::codec::AnyCodec;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::Actor;
use crate::cap::{CapRef, Message};
use crate::cap::{Handler, Incoming, Reply};
use crate::connection::CallContext;
use crate::connection::Command;
use crate::error::{CloseReason, RpcError, WireError};
use crate::transport::Transport;
use crate::wire::{CapDescriptor, Header, Outcome, QuestionId, Target, ROOT_EXPORT};

/// The output of a spawned handler.
pub(super) struct Finished {
    question: Option<QuestionId>,
    reply: Reply,
}

/// A call the peer made, in the answer table, from arrival to the caller's `Finish`.
///
/// `finished` in every state: the caller sent `Finish` (it wants no return), but
/// calls pipelined on the answer still wait for it, so it goes on without a return
/// and is forgotten as soon as nothing waits for it any more.
pub(super) enum Answer {
    /// Waiting in `stalled` for an answer it depends on (its target, or a promise
    /// among its arguments).
    Waiting { finished: bool },
    /// Its handler is running (spawned).
    Running { abort: AbortHandle, finished: bool },
    /// It returned; pipelined calls go to this capability (or fail with its reason).
    Done { cap: CapRef, finished: bool },
}

impl Answer {
    fn finished(&self) -> bool {
        match self {
            Answer::Waiting { finished }
            | Answer::Running { finished, .. }
            | Answer::Done { finished, .. } => *finished,
        }
    }

    fn mark_finished(&mut self) {
        match self {
            Answer::Waiting { finished }
            | Answer::Running { finished, .. }
            | Answer::Done { finished, .. } => *finished = true,
        }
    }

    /// Whether calls pipelined on it must wait (it has no result yet).
    fn pending(&self) -> bool {
        !matches!(self, Answer::Done { .. })
    }
}

/// An incoming message that must wait for an answer.
pub(super) enum Stalled {
    Call(IncomingCall),
    Disembargo { question: QuestionId },
}

/// A call as it arrived, before its capabilities are resolved.
pub(super) struct IncomingCall {
    pub(super) question: Option<QuestionId>,
    pub(super) target: Target,
    pub(super) method: u32,
    pub(super) payload: Bytes,
    pub(super) caps: Vec<CapDescriptor>,
    /// The codec of its arguments.
    pub(super) codec: AnyCodec,
    /// The answers it needs (its target's, promises among its arguments), fixed
    /// when it arrives: those then in the answer table, never its own. An answer
    /// named before it exists is not waited for (it resolves as not found), so no
    /// set of calls can wait on each other in a cycle.
    pub(super) needs: Vec<QuestionId>,
}

impl IncomingCall {
    /// Every answer it names: its target's, and promises among its arguments.
    fn names(&self) -> impl Iterator<Item = QuestionId> + '_ {
        let target = match self.target {
            Target::Answer(q) => Some(q),
            Target::Export(_) => None,
        };
        target
            .into_iter()
            .chain(self.caps.iter().filter_map(|d| match d {
                CapDescriptor::ReceiverAnswer(q) => Some(*q),
                _ => None,
            }))
    }
}

impl<T: Transport> Actor<T> {
    pub(super) fn on_finished(&mut self, finished: Finished, cx: &mut Context<'_>) {
        let Some(question) = finished.question else {
            return;
        };
        // Gone if the caller sent `Finish` and nothing waited for it (then its task
        // was aborted, but may have finished first).
        if let Some(Answer::Running { finished: done, .. }) = self.answers.get(&question) {
            let done = *done;
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
        if finished {
            // Only calls pipelined on it still want it.
            if self.awaited(question) {
                let cap = reply.promised_cap();
                self.answers
                    .insert(question, Answer::Done { cap, finished });
                self.drain_stalled(cx);
            } else {
                self.answers.remove(&question);
            }
            return;
        }
        if reply.needs_finish() {
            let cap = reply.promised_cap();
            self.answers
                .insert(question, Answer::Done { cap, finished });
        } else {
            self.answers.remove(&question);
        }
        // Pipelined calls start (and calls reflected back to the caller are queued)
        // before the return, which keeps them ahead of calls on the result.
        self.drain_stalled(cx);
        self.send_return(question, reply);
    }

    /// The caller no longer wants the answer to `question`.
    pub(super) fn on_finish(&mut self, question: QuestionId, cx: &mut Context<'_>) {
        let Some(answer) = self.answers.get_mut(&question) else {
            // Already returned and forgotten, or never asked: nothing to free.
            return;
        };
        answer.mark_finished();
        self.forget_unwanted(vec![question], cx);
    }

    /// Forgets finished answers that no stalled call waits for any more: a waiting
    /// call is taken out of its queue, a running handler is stopped, a kept result
    /// is dropped. Forgetting one may leave others unwanted, so this works through
    /// a list.
    fn forget_unwanted(&mut self, mut candidates: Vec<QuestionId>, cx: &mut Context<'_>) {
        let mut unblocked = false;
        while let Some(question) = candidates.pop() {
            let unwanted = self
                .answers
                .get(&question)
                .is_some_and(|a| a.finished() && !self.awaited(question));
            if !unwanted {
                continue;
            }
            match self.answers.remove(&question) {
                Some(Answer::Waiting { .. }) => {
                    if let Some(call) = self.unstall(question) {
                        unblocked = true;
                        // What it waited for may be unwanted now.
                        candidates.extend(call.needs.iter().copied());
                        self.discard(call);
                    }
                }
                Some(Answer::Running { abort, .. }) => {
                    tracing::trace!(question, "caller finished early; cancelling handler");
                    abort.abort();
                }
                Some(Answer::Done { .. }) | None => {}
            }
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
        if self.pending(question) {
            return Err(self.violation(RpcError::BadMessage(format!(
                "disembargo for question {question}, which has not returned"
            ))));
        }
        let reflected = Header::Disembargo {
            question,
            reflected: true,
        };
        let Some(queue) = self.stalled.get_mut(&Target::Answer(question)) else {
            self.enqueue_control(&reflected);
            return Ok(());
        };
        if queue
            .iter()
            .any(|s| matches!(s, Stalled::Disembargo { .. }))
        {
            return Err(self.violation(RpcError::BadMessage(format!(
                "a second disembargo for question {question}"
            ))));
        }
        queue.push_back(Stalled::Disembargo { question });
        Ok(())
    }

    /// Drops a call that will not run, giving back the references it carried: the
    /// objects the peer passed in it are released.
    fn discard(&mut self, call: IncomingCall) {
        drop(self.resolve(call.caps));
    }

    /// Takes the stalled call that asked `question` out of its queue.
    fn unstall(&mut self, question: QuestionId) -> Option<IncomingCall> {
        let (&target, queue) = self.stalled.iter_mut().find(|(_, queue)| {
            queue
                .iter()
                .any(|s| matches!(s, Stalled::Call(c) if c.question == Some(question)))
        })?;
        let at = queue
            .iter()
            .position(|s| matches!(s, Stalled::Call(c) if c.question == Some(question)))?;
        let Some(Stalled::Call(call)) = queue.remove(at) else {
            unreachable!("found just above")
        };
        if queue.is_empty() {
            self.stalled.remove(&target);
        }
        self.stalled_count -= 1;
        Some(call)
    }

    /// Whether an answer has no result yet.
    fn pending(&self, question: QuestionId) -> bool {
        self.answers.get(&question).is_some_and(Answer::pending)
    }

    /// Whether a call must still wait for one of the answers it needs.
    fn blocked(&self, call: &IncomingCall) -> bool {
        call.needs.iter().any(|&q| self.pending(q))
    }

    /// Whether calls the peer made are still running or waiting to (a graceful close
    /// waits for them; kept results do not count).
    pub(super) fn answers_running(&self) -> bool {
        self.answers.values().any(Answer::pending)
    }

    /// Whether stalled calls need `question`'s answer.
    pub(super) fn awaited(&self, question: QuestionId) -> bool {
        self.stalled
            .values()
            .flatten()
            .any(|s| matches!(s, Stalled::Call(call) if call.needs.contains(&question)))
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
                        Some(Stalled::Call(call)) => !self.blocked(call),
                        // Queued only behind calls: its answer has returned.
                        Some(Stalled::Disembargo { .. }) => true,
                        None => break,
                    };
                    if !ready {
                        break;
                    }
                    let queue = self.stalled.get_mut(&target).expect("present");
                    let next = queue.pop_front().expect("front exists");
                    if matches!(next, Stalled::Call(_)) {
                        self.stalled_count -= 1;
                    }
                    if queue.is_empty() {
                        self.stalled.remove(&target);
                    }
                    progress = true;
                    match next {
                        Stalled::Call(call) => self.deliver(call, true, cx),
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
        // Finished answers kept only for the calls just started may go now.
        let lingering: Vec<QuestionId> = self
            .answers
            .iter()
            .filter(|(_, a)| matches!(a, Answer::Done { finished: true, .. }))
            .map(|(&q, _)| q)
            .collect();
        if !lingering.is_empty() {
            self.forget_unwanted(lingering, cx);
        }
    }

    pub(super) fn bootstrap(&mut self, interface: &str, fingerprint: u64) -> Reply {
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
            codec: self.codec(),
            error_text: None,
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
    pub(super) fn deliver_return(
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

    pub(super) fn on_call(
        &mut self,
        mut call: IncomingCall,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        if let Some(q) = call.question {
            // Whatever state the first one is in: waiting, running or kept.
            if self.answers.contains_key(&q) {
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
        let mut needs: Vec<QuestionId> = call
            .names()
            .filter(|q| Some(*q) != call.question && self.answers.contains_key(q))
            .collect();
        needs.sort_unstable();
        needs.dedup();
        call.needs = needs;
        // A call waits if an earlier call on its target waits (to stay in order), or
        // if an answer it needs has no result yet, however deep the chain of calls
        // that answer itself waits on.
        if self.stalled.contains_key(&call.target) || self.blocked(&call) {
            if let Some(question) = call.question {
                self.answers
                    .insert(question, Answer::Waiting { finished: false });
            }
            self.stalled_count += 1;
            self.stalled
                .entry(call.target)
                .or_default()
                .push_back(Stalled::Call(call));
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
            Target::Answer(q) => match self.answers.get(&q) {
                Some(Answer::Done { cap, .. }) => Some(cap.clone()),
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
                let finished = self.answers.remove(&question).is_some_and(|a| a.finished());
                if !finished {
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
        let finished = waited
            && question
                .and_then(|q| self.answers.get(&q))
                .is_some_and(Answer::finished);
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
            Poll::Pending => {
                let abort = self.running.spawn(async move {
                    Finished {
                        question,
                        reply: handler.await,
                    }
                });
                if let Some(question) = question {
                    self.answers
                        .insert(question, Answer::Running { abort, finished });
                }
            }
        }
    }
}
