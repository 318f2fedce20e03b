//! The translating transport: a farcall [`Transport`](crate::transport::Transport)
//! over a carrier of Cap'n Web text messages, with the [`Translator`] between them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::{Sink, Stream};

use super::translate::Translator;

/// A carrier of Cap'n Web messages: one JSON text per item, both ways. A WebSocket
/// (one text message each) or the lines of an HTTP batch.
pub trait Messages:
    Stream<Item = io::Result<String>> + Sink<String, Error = io::Error> + Send + Unpin + 'static
{
}

impl<T> Messages for T where
    T: Stream<Item = io::Result<String>> + Sink<String, Error = io::Error> + Send + Unpin + 'static
{
}

/// What the transport does when the peer's messages end.
pub(super) enum OnEnd {
    /// The session ends (a WebSocket closed).
    Close,
    /// The session goes on until every pulled result is sent, then says so (an
    /// HTTP batch: the request is all read, the response is being written).
    Settle(tokio::sync::watch::Sender<bool>),
}

/// Frames for the connection actor from Cap'n Web messages, and back.
pub(super) struct Translating<M> {
    inner: M,
    translator: Translator,
    on_end: OnEnd,
    ended: bool,
    /// The actor's read side, woken when a frame is queued for it from the write side
    /// (a reply the translator makes itself).
    reader: Option<Waker>,
}

impl<M: Messages> Translating<M> {
    pub(super) fn new(inner: M, translator: Translator, on_end: OnEnd) -> Self {
        Translating {
            inner,
            translator,
            on_end,
            ended: false,
            reader: None,
        }
    }

    /// Moves queued messages into the carrier as far as it takes them.
    fn send_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.translator.to_peer.is_empty() {
            match Pin::new(&mut self.inner).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            let message = self.translator.to_peer.pop_front().expect("not empty");
            Pin::new(&mut self.inner).start_send(message)?;
        }
        Poll::Ready(Ok(()))
    }

    /// For a batch: says so once the request is read and every pulled result sent.
    fn check_settled(&mut self) {
        if let OnEnd::Settle(done) = &self.on_end {
            if self.ended && self.translator.settled() && self.translator.to_peer.is_empty() {
                done.send_replace(true);
            }
        }
    }
}

impl<M: Messages> Stream for Translating<M> {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.translator.to_actor.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            // Replies the translator made itself (a pulled result, a release) go
            // into the carrier now, not with the actor's next write; they are
            // flushed once the peer has nothing more to read, so a burst of pulls
            // is answered in one write rather than one each.
            if let Poll::Ready(Err(e)) = this.send_queued(cx) {
                return Poll::Ready(Some(Err(e)));
            }
            this.check_settled();
            if this.ended {
                if let Poll::Ready(Err(e)) = Pin::new(&mut this.inner).poll_flush(cx) {
                    return Poll::Ready(Some(Err(e)));
                }
                this.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(text))) => {
                    let taken = this.translator.take_peer_message(&text);
                    #[cfg(test)]
                    this.translator.observe();
                    if let Err(reason) = taken {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            reason,
                        ))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => match this.on_end {
                    OnEnd::Close => return Poll::Ready(None),
                    OnEnd::Settle(_) => {
                        this.ended = true;
                        this.translator.peer_ended();
                    }
                },
                Poll::Pending => {
                    if let Poll::Ready(Err(e)) = Pin::new(&mut this.inner).poll_flush(cx) {
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<M: Messages> Sink<Bytes> for Translating<M> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().send_queued(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        let this = self.get_mut();
        this.translator.take_actor_frame(frame);
        #[cfg(test)]
        this.translator.observe();
        if !this.translator.to_actor.is_empty() {
            if let Some(reader) = this.reader.take() {
                reader.wake();
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.send_queued(cx))?;
        std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.check_settled();
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.send_queued(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}
