//! The consumer's side of a stream: the sink object that receives batches and the
//! end.

use super::*;

/// The consumer's object: receives batches and the end.
pub(super) struct SinkObject<T> {
    /// Weak, so that a consumer that drops its stream also lets go of the source
    /// (held by the shared state), whatever the producer still holds.
    pub(super) shared: Weak<SinkShared<T>>,
}

impl<T> SinkObject<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn on_items(&self, call: Incoming) {
        let context = call.context.clone();
        let decoded = bytes::with_payload(&call.payload, || {
            decode_message::<(Vec<T>, bool)>(call.codec, &call.payload, call.caps)
        });
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut state = lock(&shared.state);
        if state.end.is_some() {
            return;
        }
        let (items, blocked) = match decoded {
            Ok(batch) => batch,
            Err(e) => {
                state.end = Some(Err(e));
                wake(&mut state);
                return;
            }
        };
        let drained = state.items.is_empty();
        for item in items {
            let cost = cost_in(Some(call.codec), &item);
            if let Err(overrun) = state.window.receive(cost) {
                let why = format!(
                    "a stream's producer sent an item of {cost} bytes with {} bytes of credit left",
                    overrun.available
                );
                tracing::warn!(%why, "protocol violation");
                let reason = CloseReason::ProtocolViolation(why);
                state.end = Some(Err(RpcError::Disconnected(reason.clone())));
                wake(&mut state);
                drop(state);
                if let Some(context) = context {
                    drop(context.connection.abort_with(reason));
                }
                return;
            }
            state.items.push_back((item, cost));
        }
        let grant = state.window.after_batch(blocked, drained);
        wake(&mut state);
        drop(state);
        if let Some(grant) = grant {
            let _ = shared.source.send(CREDIT, &grant);
        }
    }

    fn on_end(&self, call: Incoming) {
        let end = decode_message::<End>(call.codec, &call.payload, call.caps);
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut state = lock(&shared.state);
        if state.end.is_none() {
            state.end = Some(match end {
                Ok(End::Done) => Ok(()),
                Ok(End::Failed(why)) => Err(RpcError::StreamFailed(why)),
                Ok(End::Refused(why)) => Err(RpcError::Overloaded(why)),
                Err(e) => Err(e),
            });
            wake(&mut state);
        }
    }
}

pub(super) fn wake<T>(state: &mut SinkState<T>) {
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

impl<T> Drop for SinkObject<T> {
    fn drop(&mut self) {
        // No producer can reach the sink any more: if it has not ended, it never will.
        if let Some(shared) = self.shared.upgrade() {
            let mut state = lock(&shared.state);
            if state.end.is_none() {
                state.end = Some(Err(disconnected(&shared.source)));
                wake(&mut state);
            }
        }
    }
}

impl<T> Dispatch for SinkObject<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn interface(&self) -> &'static Interface {
        &SINK
    }

    fn dispatch(&self, call: Incoming) -> Handler {
        match call.method() {
            id if id == ITEMS.id => self.on_items(call),
            id if id == END.id => self.on_end(call),
            _ => return call.method_not_found(&SINK),
        }
        Box::pin(std::future::ready(Reply::none()))
    }
}
