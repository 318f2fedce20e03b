//! The answer table: calls the peer made, from arrival (or a wait on an answer
//! they depend on) through their running handler to the result kept for calls
//! pipelined on it, until the peer's `Finish`. The actor's incoming-call path
//! (`incoming.rs`) drives it; this file holds only the state and its rules.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::task::{AbortHandle, JoinError, JoinSet};

use crate::cap::{CapRef, Handler, Reply};
use crate::codec::AnyCodec;
use crate::error::WireError;
use crate::wire::{CapDescriptor, QuestionId, Target};

/// The output of a spawned handler.
pub(super) struct Finished {
    pub(super) question: Option<QuestionId>,
    pub(super) reply: Reply,
}

/// A call the peer made, in the answer table, from arrival to the caller's `Finish`.
///
/// `finished` in every state: the caller sent `Finish` (it wants no return), but
/// calls pipelined on the answer still wait for it, so it goes on without a return
/// and is forgotten as soon as nothing waits for it any more.
enum Answer {
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
    pub(super) fn new(
        question: Option<QuestionId>,
        target: Target,
        method: u32,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
        codec: AnyCodec,
    ) -> Self {
        IncomingCall {
            question,
            target,
            method,
            payload,
            caps,
            codec,
            needs: Vec::new(),
        }
    }

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

/// Calls the peer made: waiting, running or kept, with the queues of calls that
/// wait for an answer they depend on.
#[derive(Default)]
pub(super) struct Answers {
    entries: HashMap<QuestionId, Answer>,
    /// Handlers that had to wait, spawned.
    running: JoinSet<Finished>,
    /// Incoming calls waiting for an answer they depend on, per target so that
    /// calls on one reference stay in order.
    stalled: HashMap<Target, VecDeque<Stalled>>,
    /// Calls (not disembargoes) in `stalled`.
    stalled_calls: usize,
    /// Set while the stalled queues are being drained, so that delivery, which may
    /// complete answers, does not start another drain inside this one.
    draining: bool,
}

impl Answers {
    /// Answers held: waiting, running, or kept for pipelined calls.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `question` is in the table, in any state.
    pub(super) fn contains(&self, question: QuestionId) -> bool {
        self.entries.contains_key(&question)
    }

    /// Calls in flight: running handlers and calls waiting to start.
    pub(super) fn in_flight(&self) -> usize {
        self.running.len() + self.stalled_calls
    }

    /// Whether calls the peer made are still running or waiting to (a graceful close
    /// waits for them; kept results do not count).
    pub(super) fn any_running(&self) -> bool {
        self.entries.values().any(Answer::pending)
    }

    /// Whether an answer has no result yet.
    pub(super) fn pending(&self, question: QuestionId) -> bool {
        self.entries.get(&question).is_some_and(Answer::pending)
    }

    /// Whether the caller sent `Finish` for `question`.
    pub(super) fn is_finished(&self, question: QuestionId) -> bool {
        self.entries.get(&question).is_some_and(Answer::finished)
    }

    /// The capability calls pipelined on `question` go to, once it has returned.
    pub(super) fn result(&self, question: QuestionId) -> Option<CapRef> {
        match self.entries.get(&question) {
            Some(Answer::Done { cap, .. }) => Some(cap.clone()),
            _ => None,
        }
    }

    /// What a promise on `question` among a call's arguments stands for.
    pub(super) fn promised(&self, question: QuestionId) -> CapRef {
        match self.entries.get(&question) {
            Some(Answer::Done { cap, .. }) => cap.clone(),
            // Calls carrying a running answer wait for it; this is one that did not.
            Some(_) => CapRef::Broken(WireError::PromiseFailed(
                "the promised answer is not ready".into(),
            )),
            None => CapRef::Broken(WireError::ObjectNotFound),
        }
    }

    /// Fixes, when a call arrives, the answers it needs: those it names that are in
    /// the table then, never its own. An answer named before it exists is not
    /// waited for (it resolves as not found), so no calls can wait in a cycle.
    pub(super) fn fix_needs(&self, call: &mut IncomingCall) {
        let mut needs: Vec<QuestionId> = call
            .names()
            .filter(|q| Some(*q) != call.question && self.entries.contains_key(q))
            .collect();
        needs.sort_unstable();
        needs.dedup();
        call.needs = needs;
    }

    /// Whether a call must wait: an earlier call on its target waits (to stay in
    /// order), or an answer it needs has no result yet, however deep the chain of
    /// calls that answer itself waits on.
    pub(super) fn must_wait(&self, call: &IncomingCall) -> bool {
        self.stalled.contains_key(&call.target) || self.blocked(call)
    }

    fn blocked(&self, call: &IncomingCall) -> bool {
        call.needs.iter().any(|&q| self.pending(q))
    }

    /// Queues a call that must wait; its question gets a waiting entry.
    pub(super) fn stall(&mut self, call: IncomingCall) {
        if let Some(question) = call.question {
            self.entries
                .insert(question, Answer::Waiting { finished: false });
        }
        self.stalled_calls += 1;
        self.stalled
            .entry(call.target)
            .or_default()
            .push_back(Stalled::Call(call));
    }

    /// Queues the caller's `Disembargo` for `question` behind the calls waiting on
    /// that answer. `Ok(false)`: none wait, reflect it now. `Err`: it is the
    /// second one for this question.
    pub(super) fn stall_disembargo(&mut self, question: QuestionId) -> Result<bool, ()> {
        let Some(queue) = self.stalled.get_mut(&Target::Answer(question)) else {
            return Ok(false);
        };
        if queue
            .iter()
            .any(|s| matches!(s, Stalled::Disembargo { .. }))
        {
            return Err(());
        }
        queue.push_back(Stalled::Disembargo { question });
        Ok(true)
    }

    /// Takes the next stalled message whose answers are ready (in order per
    /// target), unless a drain is already under way.
    pub(super) fn next_ready(&mut self) -> Option<Stalled> {
        let target = *self
            .stalled
            .iter()
            .find(|(_, queue)| match queue.front() {
                Some(Stalled::Call(call)) => !self.blocked(call),
                // Queued only behind calls: its answer has returned.
                Some(Stalled::Disembargo { .. }) => true,
                None => false,
            })?
            .0;
        let queue = self.stalled.get_mut(&target).expect("found just above");
        let next = queue.pop_front().expect("has a front");
        if queue.is_empty() {
            self.stalled.remove(&target);
        }
        if matches!(next, Stalled::Call(_)) {
            self.stalled_calls -= 1;
        }
        Some(next)
    }

    /// Starts draining the stalled queues; `false` if there is nothing to drain or
    /// a drain is already under way (then that one picks up what is ready).
    pub(super) fn begin_drain(&mut self) -> bool {
        if self.draining || self.stalled.is_empty() {
            return false;
        }
        self.draining = true;
        true
    }

    pub(super) fn end_drain(&mut self) {
        self.draining = false;
    }

    /// Spawns a handler that has to wait; its question gets a running entry.
    pub(super) fn spawn(&mut self, question: Option<QuestionId>, finished: bool, handler: Handler) {
        let abort = self.running.spawn(async move {
            Finished {
                question,
                reply: handler.await,
            }
        });
        if let Some(question) = question {
            self.entries
                .insert(question, Answer::Running { abort, finished });
        }
    }

    /// The next spawned handler to finish. An `Err` is one aborted after a
    /// `Finish`: its entry is already gone.
    pub(super) fn poll_finished(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Finished, JoinError>>> {
        self.running.poll_join_next(cx)
    }

    /// Whether `question`'s handler is still running, and if so whether its caller
    /// sent `Finish`. A handler that finished after its entry was forgotten (it
    /// was aborted, but finished first) gets `None`.
    pub(super) fn running(&self, question: QuestionId) -> Option<bool> {
        match self.entries.get(&question) {
            Some(Answer::Running { finished, .. }) => Some(*finished),
            _ => None,
        }
    }

    /// Records `question`'s result. It is kept while it may still be wanted: until
    /// the caller's `Finish` when it carries capabilities or failed (see
    /// `Reply::needs_finish`), or, when the caller already finished it, while
    /// stalled calls need it.
    pub(super) fn settle(&mut self, question: QuestionId, reply: &Reply, finished: bool) {
        let keep = if finished {
            self.awaited(question)
        } else {
            reply.needs_finish()
        };
        if keep {
            let cap = reply.promised_cap();
            self.entries
                .insert(question, Answer::Done { cap, finished });
        } else {
            self.entries.remove(&question);
        }
    }

    /// Forgets `question` (a call refused before it ran); says whether its caller
    /// had already finished it.
    pub(super) fn forget(&mut self, question: QuestionId) -> bool {
        self.entries.remove(&question).is_some_and(|a| a.finished())
    }

    /// Marks `question` finished by its caller; `false` if it is not held.
    pub(super) fn mark_finished(&mut self, question: QuestionId) -> bool {
        match self.entries.get_mut(&question) {
            Some(answer) => {
                answer.mark_finished();
                true
            }
            None => false,
        }
    }

    /// Forgets finished answers that no stalled call waits for any more: a waiting
    /// call is taken out of its queue (and returned, to be discarded), a running
    /// handler is stopped, a kept result is dropped. Forgetting one may leave
    /// others unwanted, so this works through a list.
    pub(super) fn forget_unwanted(&mut self, mut candidates: Vec<QuestionId>) -> Vec<IncomingCall> {
        let mut discarded = Vec::new();
        while let Some(question) = candidates.pop() {
            let unwanted = self
                .entries
                .get(&question)
                .is_some_and(|a| a.finished() && !self.awaited(question));
            if !unwanted {
                continue;
            }
            match self.entries.remove(&question) {
                Some(Answer::Waiting { .. }) => {
                    if let Some(call) = self.unstall(question) {
                        // What it waited for may be unwanted now.
                        candidates.extend(call.needs.iter().copied());
                        discarded.push(call);
                    }
                }
                Some(Answer::Running { abort, .. }) => {
                    tracing::trace!(question, "caller finished early; cancelling handler");
                    abort.abort();
                }
                Some(Answer::Done { .. }) | None => {}
            }
        }
        discarded
    }

    /// Finished answers kept only for stalled calls: once those have started,
    /// they may go.
    pub(super) fn kept_for_others(&self) -> Vec<QuestionId> {
        self.entries
            .iter()
            .filter(|(_, a)| matches!(a, Answer::Done { finished: true, .. }))
            .map(|(&q, _)| q)
            .collect()
    }

    /// Whether stalled calls need `question`'s answer.
    fn awaited(&self, question: QuestionId) -> bool {
        self.stalled
            .values()
            .flatten()
            .any(|s| matches!(s, Stalled::Call(call) if call.needs.contains(&question)))
    }

    /// Takes the stalled call that asked `question` out of its queue.
    fn unstall(&mut self, question: QuestionId) -> Option<IncomingCall> {
        let asked = |s: &Stalled| matches!(s, Stalled::Call(c) if c.question == Some(question));
        let (&target, queue) = self
            .stalled
            .iter_mut()
            .find(|(_, queue)| queue.iter().any(asked))?;
        let at = queue.iter().position(asked)?;
        let Some(Stalled::Call(call)) = queue.remove(at) else {
            unreachable!("found just above")
        };
        if queue.is_empty() {
            self.stalled.remove(&target);
        }
        self.stalled_calls -= 1;
        Some(call)
    }

    /// Forgets everything and stops every running handler: the connection ended.
    pub(super) fn clear(&mut self) {
        // Dropping a `JoinSet` aborts its tasks.
        self.running = JoinSet::new();
        self.entries.clear();
        self.stalled.clear();
        self.stalled_calls = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(question: Option<QuestionId>, target: Target, promises: &[QuestionId]) -> IncomingCall {
        IncomingCall {
            question,
            target,
            method: 1,
            payload: Bytes::new(),
            caps: promises
                .iter()
                .map(|&q| CapDescriptor::ReceiverAnswer(q))
                .collect(),
            codec: AnyCodec::default(),
            needs: Vec::new(),
        }
    }

    /// A reply that carries a capability, so it is kept until `Finish`.
    fn with_cap() -> Reply {
        let mut reply = Reply::none();
        reply.caps = vec![CapRef::Broken(WireError::ObjectNotFound)];
        reply
    }

    fn never() -> Handler {
        Box::pin(std::future::pending())
    }

    /// Arrives as the actor receives it: needs fixed, then stalled or started.
    fn arrive(answers: &mut Answers, mut call: IncomingCall) -> bool {
        answers.fix_needs(&mut call);
        if answers.must_wait(&call) {
            answers.stall(call);
            return false;
        }
        if let Some(q) = call.question {
            answers.spawn(Some(q), false, never());
        }
        true
    }

    #[tokio::test]
    async fn calls_on_a_running_answer_wait_in_order_and_start_when_it_returns() {
        let mut answers = Answers::default();
        assert!(arrive(&mut answers, call(Some(1), Target::Export(0), &[])));
        assert!(!arrive(&mut answers, call(Some(2), Target::Answer(1), &[])));
        assert!(!arrive(&mut answers, call(Some(3), Target::Answer(1), &[])));
        assert_eq!((answers.len(), answers.in_flight()), (3, 3));
        assert!(answers.begin_drain());
        assert!(
            answers.next_ready().is_none(),
            "question 1 is still running"
        );
        answers.end_drain();

        answers.settle(1, &with_cap(), false);
        assert!(answers.result(1).is_some());
        let order: Vec<_> = std::iter::from_fn(|| answers.next_ready())
            .map(|s| match s {
                Stalled::Call(c) => c.question,
                Stalled::Disembargo { .. } => None,
            })
            .collect();
        assert_eq!(order, [Some(2), Some(3)]);
        assert_eq!(answers.in_flight(), 1, "only the running handler is left");
    }

    #[tokio::test]
    async fn a_call_behind_a_waiting_call_on_its_target_waits_too() {
        let mut answers = Answers::default();
        assert!(arrive(&mut answers, call(Some(1), Target::Export(0), &[])));
        // Needs answer 1 through a promise argument, on export 5.
        assert!(!arrive(
            &mut answers,
            call(Some(2), Target::Export(5), &[1])
        ));
        // Needs nothing, but an earlier call on export 5 waits.
        assert!(!arrive(&mut answers, call(Some(3), Target::Export(5), &[])));
        answers.settle(1, &Reply::none(), false);
        assert!(!answers.contains(1), "a plain value is not kept");
        let first = answers.next_ready();
        assert!(matches!(first, Some(Stalled::Call(c)) if c.question == Some(2)));
    }

    #[tokio::test]
    async fn an_answer_named_before_it_exists_is_not_waited_for() {
        let answers = Answers::default();
        let mut own = call(Some(4), Target::Answer(4), &[4, 9]);
        answers.fix_needs(&mut own);
        assert!(own.needs.is_empty(), "neither itself nor an unknown answer");
        assert!(!answers.must_wait(&own));
    }

    #[tokio::test]
    async fn finishing_a_waiting_call_frees_it_and_what_only_it_needed() {
        let mut answers = Answers::default();
        assert!(arrive(&mut answers, call(Some(1), Target::Export(0), &[])));
        assert!(!arrive(&mut answers, call(Some(2), Target::Answer(1), &[])));
        // The caller finishes both: 2 waits, 1 runs and only 2 needs it.
        assert!(answers.mark_finished(1));
        assert!(
            answers.forget_unwanted(vec![1]).is_empty(),
            "1 is still needed by 2"
        );
        assert!(answers.contains(1));
        assert!(answers.mark_finished(2));
        let discarded = answers.forget_unwanted(vec![2]);
        assert_eq!(discarded.len(), 1);
        assert_eq!(discarded[0].question, Some(2));
        assert_eq!((answers.len(), answers.in_flight()), (0, 1));
        // The running handler was aborted: it ends with a cancellation.
        let ended = std::future::poll_fn(|cx| answers.poll_finished(cx)).await;
        assert!(matches!(ended, Some(Err(e)) if e.is_cancelled()));
        assert_eq!(answers.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_finished_answer_is_kept_only_while_stalled_calls_need_it() {
        let mut answers = Answers::default();
        assert!(arrive(&mut answers, call(Some(1), Target::Export(0), &[])));
        assert!(!arrive(&mut answers, call(Some(2), Target::Answer(1), &[])));
        assert!(answers.mark_finished(1));
        answers.settle(1, &with_cap(), true);
        assert!(answers.result(1).is_some(), "2 still needs it");
        assert_eq!(answers.kept_for_others(), [1]);
        let _started = answers.next_ready();
        assert!(answers
            .forget_unwanted(answers.kept_for_others())
            .is_empty());
        assert!(!answers.contains(1));
    }

    #[tokio::test]
    async fn a_disembargo_waits_behind_the_calls_queued_on_its_answer_once() {
        let mut answers = Answers::default();
        assert_eq!(answers.stall_disembargo(1), Ok(false), "nothing queued");
        assert!(arrive(&mut answers, call(Some(1), Target::Export(0), &[])));
        assert!(!arrive(&mut answers, call(Some(2), Target::Answer(1), &[])));
        assert_eq!(answers.stall_disembargo(1), Ok(true));
        assert_eq!(answers.stall_disembargo(1), Err(()));
        answers.settle(1, &with_cap(), false);
        assert!(matches!(answers.next_ready(), Some(Stalled::Call(_))));
        assert!(matches!(
            answers.next_ready(),
            Some(Stalled::Disembargo { question: 1 })
        ));
        assert!(answers.next_ready().is_none());
    }

    #[tokio::test]
    async fn clearing_stops_every_handler_and_empties_the_table() {
        let mut answers = Answers::default();
        assert!(arrive(&mut answers, call(Some(1), Target::Export(0), &[])));
        assert!(!arrive(&mut answers, call(Some(2), Target::Answer(1), &[])));
        assert!(answers.any_running());
        answers.clear();
        assert_eq!((answers.len(), answers.in_flight()), (0, 0));
        assert!(!answers.any_running());
        assert!(!answers.begin_drain());
    }
}
