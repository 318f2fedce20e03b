//! Frames from the peer: the opening exchange, reassembly of chunks, decoding, and
//! a router that hands each message to the table or path it concerns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Context;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::answers::IncomingCall;
use super::questions::Returned;
use super::Actor;
use crate::cap::{CapRef, Reply};
use crate::codec::AnyCodec;
use crate::error::{CloseReason, RpcError, WireError};
use crate::transport::Transport;
use crate::wire::is_chunk;
use crate::wire::{decode_frame, CapDescriptor, Header, Hello, Outcome, QuestionId};

impl<T: Transport> Actor<T> {
    /// A call or return whose payload is in a codec this build lacks: the call fails
    /// (and what it carried is released), the return fails its question, saying
    /// which codec is missing.
    fn on_unknown_codec(&mut self, header: Header, id: u8) {
        let why = format!(
            "the payload is encoded in {}, which this build of farcall was compiled \
             without (enable the feature of that name)",
            AnyCodec::name_of(id)
        );
        let failed = self.reply_to().error(&WireError::Undecodable(why));
        match header {
            Header::Call { question, caps, .. } => {
                drop(self.resolve(caps));
                if let Some(question) = question {
                    self.send_return(question, failed);
                }
            }
            Header::Return { question, caps, .. } => {
                let returned = Header::Return {
                    question,
                    outcome: Outcome::Failed,
                    caps,
                };
                let codec = self.codec();
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let _ = self.on_message(returned, failed.payload, codec, &mut cx);
            }
            _ => {}
        }
    }

    /// Checks the peer's opening message: the first frame it sends.
    fn on_hello(&mut self, frame: &[u8]) -> Result<(), CloseReason> {
        let Some(peer) = Hello::decode(frame) else {
            return Err(self.violation(RpcError::BadMessage(
                "the peer's first message is not a farcall opening message \
                 (a peer of an older protocol version, or not farcall at all)"
                    .into(),
            )));
        };
        if let Some(why) = self.hello.mismatch(&peer) {
            return Err(self.violation(RpcError::BadMessage(why)));
        }
        tracing::trace!(?peer, "opening exchange done");
        self.peer = Some(peer);
        Ok(())
    }

    pub(super) fn on_frame(
        &mut self,
        frame: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        if self.peer.is_none() {
            return self.on_hello(&frame);
        }
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
        self.on_message(header, payload, self.codec(), cx)
    }

    /// Routes a decoded message whose payload is in `codec` to its handler.
    fn on_message(
        &mut self,
        header: Header,
        payload: Bytes,
        codec: AnyCodec,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        match header {
            Header::Call {
                question,
                target,
                method,
                caps,
            } => {
                let call = IncomingCall::new(question, target, method, payload, caps, codec);
                self.on_call(call, cx)
            }
            Header::Return {
                question,
                outcome,
                caps,
            } => self.on_return(question, outcome, caps, payload, codec),
            Header::Bootstrap {
                question,
                interface,
                fingerprint,
            } => self.on_bootstrap(question, &interface, fingerprint),
            Header::Finish { question } => {
                self.on_finish(question, cx);
                Ok(())
            }
            Header::Disembargo {
                question,
                reflected: false,
            } => self.on_disembargo(question),
            Header::Disembargo {
                question,
                reflected: true,
            } => {
                if let Some((sender, reply)) = self.questions.on_reflected(question) {
                    self.deliver_return(question, sender, reply);
                }
                Ok(())
            }
            Header::Release { id, count } => {
                self.exports
                    .release(id, count)
                    .map_err(|e| self.violation(e))?;
                self.close_if_unused();
                Ok(())
            }
            Header::Revoked { id } => {
                self.on_revoked(id);
                Ok(())
            }
            Header::Foreign { codec, header } => self.on_foreign(codec, *header, payload, cx),
            Header::Ping => Ok(()),
            Header::Abort { reason } => Err(CloseReason::PeerAborted(reason)),
        }
    }

    /// A return for one of our questions: to its caller, held by an embargo, or
    /// dropped (which releases what it carried) when nobody waits any more.
    fn on_return(
        &mut self,
        question: QuestionId,
        outcome: Outcome,
        caps: Vec<CapDescriptor>,
        payload: Bytes,
        codec: AnyCodec,
    ) -> Result<(), CloseReason> {
        // Resolved even if nobody waits: dropping them releases them.
        let caps = self.resolve(caps);
        let reply = Reply {
            outcome,
            payload,
            caps,
            codec,
            error_text: None,
        };
        let issued = self.conn.shared.next_question.load(Ordering::Relaxed);
        let ours = &self.conn.shared;
        let came_home = |reply: &Reply| {
            reply.outcome == Outcome::Value
                && reply.caps.first().is_some_and(
                    |cap| !matches!(cap, CapRef::Import(e) if Arc::ptr_eq(&e.conn.shared, ours)),
                )
        };
        match self.questions.on_return(question, reply, issued, came_home) {
            Returned::Deliver(sender, reply) => self.deliver_return(question, sender, reply),
            // Calls we pipelined on this answer are being reflected back to us; the
            // result waits until they all have arrived.
            Returned::Embargoed => self.enqueue_control(&Header::Disembargo {
                question,
                reflected: false,
            }),
            Returned::Unwanted => {}
            Returned::NeverAsked => {
                return Err(self.violation(RpcError::BadMessage(format!(
                    "return for question {question}, which was never asked"
                ))))
            }
        }
        Ok(())
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

    /// The peer asks for our root.
    fn on_bootstrap(
        &mut self,
        question: QuestionId,
        interface: &str,
        fingerprint: u64,
    ) -> Result<(), CloseReason> {
        if self.answers.contains(question) {
            return Err(self.violation(RpcError::BadMessage(format!(
                "question id {question} is already in flight"
            ))));
        }
        let reply = self.bootstrap(interface, fingerprint);
        self.send_return(question, reply);
        Ok(())
    }

    /// A call or return whose payload is in another codec than the connection's.
    fn on_foreign(
        &mut self,
        id: u8,
        header: Header,
        payload: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        if !matches!(header, Header::Call { .. } | Header::Return { .. }) {
            return Err(self.violation(RpcError::BadMessage(
                "only a call or a return can carry a payload in another codec".into(),
            )));
        }
        match AnyCodec::from_wire_id(id) {
            Some(codec) => self.on_message(header, payload, codec, cx),
            None => {
                self.on_unknown_codec(header, id);
                Ok(())
            }
        }
    }
}
