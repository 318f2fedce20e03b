//! The caller's side of one question: the future that yields its reply, and the
//! answer as a target for pipelined calls. Either tells the callee, once, when the
//! answer is no longer wanted (`Finish`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use tokio::sync::oneshot;

use super::{Command, Connection};
use crate::cap::Reply;
use crate::error::RpcError;
use crate::wire::QuestionId;

/// A question in flight: resolves to its reply, and tells the callee when the answer
/// is no longer wanted (`Finish`), unless pipelined handles on it still exist.
pub(crate) struct Question {
    conn: Connection,
    id: QuestionId,
    rx: oneshot::Receiver<Reply>,
    done: bool,
    /// Created when calls are pipelined on the answer; takes over sending `Finish`.
    answer: OnceLock<Arc<AnswerRef>>,
}

/// The answer to a question, as the target of pipelined calls. The last reference
/// to go sends `Finish`, if the callee keeps the answer.
pub(crate) struct AnswerRef {
    pub(crate) conn: Connection,
    pub(crate) question: QuestionId,
    finish_owed: AtomicBool,
    answered: AtomicBool,
}

impl Drop for AnswerRef {
    fn drop(&mut self) {
        if self.finish_owed.load(Ordering::Acquire) {
            let _ = self.conn.command(Command::Finish {
                question: self.question,
                answered: self.answered.load(Ordering::Acquire),
            });
        }
    }
}

impl Question {
    pub(super) fn new(conn: Connection, id: QuestionId, rx: oneshot::Receiver<Reply>) -> Self {
        Question {
            conn,
            id,
            rx,
            done: false,
            answer: OnceLock::new(),
        }
    }

    /// The answer as a pipelining target.
    pub(crate) fn answer(&self) -> Arc<AnswerRef> {
        self.answer
            .get_or_init(|| {
                Arc::new(AnswerRef {
                    conn: self.conn.clone(),
                    question: self.id,
                    finish_owed: AtomicBool::new(true),
                    answered: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Settles who owes the callee a `Finish` once the reply is known.
    fn settle(&self, reply: Option<&Reply>) {
        let owed = reply.is_none_or(Reply::needs_finish);
        match self.answer.get() {
            Some(answer) => {
                answer.answered.store(reply.is_some(), Ordering::Release);
                answer.finish_owed.store(owed, Ordering::Release);
            }
            None if owed => {
                let _ = self.conn.command(Command::Finish {
                    question: self.id,
                    answered: reply.is_some(),
                });
            }
            None => {}
        }
    }
}

impl Future for Question {
    type Output = Result<Reply, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let received = ready!(Pin::new(&mut self.rx).poll(cx));
        self.done = true;
        match received {
            Ok(reply) => {
                self.settle(Some(&reply));
                Poll::Ready(Ok(reply))
            }
            Err(_) => Poll::Ready(Err(self.conn.disconnect_error())),
        }
    }
}

impl Drop for Question {
    fn drop(&mut self) {
        if !self.done {
            // The answer may already be here, unread.
            let reply = self.rx.try_recv().ok();
            self.settle(reply.as_ref());
        }
    }
}
