//! The question table: calls this side made that await a return, with what
//! pipelining adds to them. A question on which we pipelined calls may return a
//! capability that lives here (or with a third party): its return is then held
//! (embargoed) until our `Disembargo` comes back reflected, which shows that every
//! call we pipelined on it has been delivered, so calls made on the result cannot
//! overtake them.

use std::collections::{HashMap, HashSet};

use tokio::sync::oneshot;

use crate::cap::Reply;
use crate::wire::QuestionId;

/// What to do with a return the peer sent.
pub(super) enum Returned {
    /// Hand it to the caller now.
    Deliver(oneshot::Sender<Reply>, Reply),
    /// Held until the peer reflects the `Disembargo` the caller must now send.
    Embargoed,
    /// Nobody waits for it: the caller finished the question, or a close failed it.
    /// It was dropped, which releases what it carried.
    Unwanted,
    /// No such question was ever asked: a protocol violation.
    NeverAsked,
}

/// Calls this side made that await a return.
#[derive(Default)]
pub(super) struct Questions {
    waiting: HashMap<QuestionId, oneshot::Sender<Reply>>,
    /// Questions on which we pipelined calls.
    pipelined: HashSet<QuestionId>,
    /// Returns held until the peer reflects our `Disembargo`.
    embargoed: HashMap<QuestionId, (oneshot::Sender<Reply>, Reply)>,
}

impl Questions {
    /// A question was sent; its return goes to `reply`.
    pub(super) fn asked(&mut self, question: QuestionId, reply: oneshot::Sender<Reply>) {
        self.waiting.insert(question, reply);
    }

    /// A call was pipelined on `question`'s answer.
    pub(super) fn pipelined_on(&mut self, question: QuestionId) {
        self.pipelined.insert(question);
    }

    /// Routes the return of `question`. `issued` is the next question id handles
    /// will use (ids below it were asked at some point); `came_home` says whether the
    /// returned capability is not one the peer hosts, in which case calls we
    /// pipelined on the answer are being reflected and the return is embargoed.
    pub(super) fn on_return(
        &mut self,
        question: QuestionId,
        reply: Reply,
        issued: QuestionId,
        came_home: impl FnOnce(&Reply) -> bool,
    ) -> Returned {
        let Some(sender) = self.waiting.remove(&question) else {
            if question < issued {
                drop(reply);
                return Returned::Unwanted;
            }
            return Returned::NeverAsked;
        };
        if self.pipelined.remove(&question) && came_home(&reply) {
            self.embargoed.insert(question, (sender, reply));
            return Returned::Embargoed;
        }
        Returned::Deliver(sender, reply)
    }

    /// Our `Disembargo` for `question` came back: its held return may go.
    pub(super) fn on_reflected(
        &mut self,
        question: QuestionId,
    ) -> Option<(oneshot::Sender<Reply>, Reply)> {
        self.embargoed.remove(&question)
    }

    /// The caller gave up on `question`; says whether the callee still holds
    /// something for it (the question is still out, or its held return keeps an
    /// answer), so that a `Finish` is owed.
    pub(super) fn finish(&mut self, question: QuestionId) -> bool {
        self.pipelined.remove(&question);
        let held = self.embargoed.remove(&question);
        let asked = self.waiting.remove(&question).is_some();
        asked || held.is_some_and(|(_, reply)| reply.needs_finish())
    }

    /// Fails every question still waiting (their callers see the close reason);
    /// held returns stay until their disembargo.
    pub(super) fn fail_waiting(&mut self) {
        self.waiting.clear();
    }

    /// Forgets everything: the connection ended.
    pub(super) fn clear(&mut self) {
        self.waiting.clear();
        self.pipelined.clear();
        self.embargoed.clear();
    }

    /// Questions still waiting for, or holding, their return.
    pub(super) fn len(&self) -> usize {
        self.waiting.len() + self.embargoed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::CapRef;
    use crate::error::WireError;

    fn reply(caps: usize) -> Reply {
        let mut reply = Reply::none();
        reply.caps = (0..caps)
            .map(|_| CapRef::Broken(WireError::ObjectNotFound))
            .collect();
        reply
    }

    #[test]
    fn a_return_reaches_the_caller_once() {
        let mut questions = Questions::default();
        let (tx, mut rx) = oneshot::channel();
        questions.asked(1, tx);
        assert_eq!(questions.len(), 1);
        match questions.on_return(1, reply(0), 2, |_| true) {
            Returned::Deliver(sender, reply) => sender.send(reply).unwrap(),
            _ => panic!("expected delivery"),
        }
        assert!(rx.try_recv().is_ok());
        assert_eq!(questions.len(), 0);
        // A second return for the same question is late, not a new one.
        assert!(matches!(
            questions.on_return(1, reply(0), 2, |_| true),
            Returned::Unwanted
        ));
    }

    #[test]
    fn a_return_for_a_question_never_asked_is_refused() {
        let mut questions = Questions::default();
        assert!(matches!(
            questions.on_return(7, reply(0), 3, |_| false),
            Returned::NeverAsked
        ));
    }

    #[test]
    fn a_pipelined_question_returning_a_capability_from_home_is_held_until_reflected() {
        let mut questions = Questions::default();
        let (tx, _rx) = oneshot::channel();
        questions.asked(4, tx);
        questions.pipelined_on(4);
        assert!(matches!(
            questions.on_return(4, reply(1), 5, |_| true),
            Returned::Embargoed
        ));
        assert_eq!(questions.len(), 1, "a held return still counts");
        assert!(questions.on_reflected(4).is_some());
        assert!(questions.on_reflected(4).is_none());
        assert_eq!(questions.len(), 0);
    }

    #[test]
    fn a_pipelined_question_returning_the_peers_capability_is_not_held() {
        let mut questions = Questions::default();
        let (tx, _rx) = oneshot::channel();
        questions.asked(4, tx);
        questions.pipelined_on(4);
        assert!(matches!(
            questions.on_return(4, reply(1), 5, |_| false),
            Returned::Deliver(..)
        ));
    }

    #[test]
    fn finishing_says_whether_the_callee_still_holds_something() {
        let mut questions = Questions::default();
        let (tx, _rx) = oneshot::channel();
        questions.asked(1, tx);
        assert!(questions.finish(1), "still out: the callee holds its call");
        assert!(!questions.finish(1), "already finished");

        let (tx, _rx) = oneshot::channel();
        questions.asked(2, tx);
        questions.pipelined_on(2);
        let _ = questions.on_return(2, reply(1), 3, |_| true);
        assert!(
            questions.finish(2),
            "a held return with a capability is kept"
        );
        assert_eq!(questions.len(), 0);
    }

    #[test]
    fn failing_the_waiting_keeps_held_returns() {
        let mut questions = Questions::default();
        let (tx, mut rx) = oneshot::channel();
        questions.asked(1, tx);
        let (tx, _rx) = oneshot::channel();
        questions.asked(2, tx);
        questions.pipelined_on(2);
        let _ = questions.on_return(2, reply(1), 3, |_| true);
        questions.fail_waiting();
        assert!(
            rx.try_recv().is_err(),
            "the waiting caller sees its sender gone"
        );
        assert_eq!(questions.len(), 1);
        questions.clear();
        assert_eq!(questions.len(), 0);
    }
}
