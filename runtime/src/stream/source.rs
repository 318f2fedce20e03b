//! The producer's side of a stream: the source object that holds the items until
//! the consumer starts it, the credit the consumer grants, and the pump that sends
//! batches within it.

use super::*;

/// The producer's object: holds the items until the consumer starts the stream, then
/// the pump that sends them. Dropping it (the consumer released it, or the connection
/// ended) stops the pump and drops the items.
pub(super) struct SourceObject<T> {
    pub(super) state: Mutex<SourceState<T>>,
}

pub(super) enum SourceState<T> {
    Ready(Items<T>),
    Running {
        credit: Arc<Credit>,
        pump: tokio::task::AbortHandle,
    },
    /// Only while `Ready` turns into `Running`.
    Starting,
}

impl<T> Drop for SourceObject<T> {
    fn drop(&mut self) {
        if let SourceState::Running { pump, .. } = &*lock(&self.state) {
            pump.abort();
        }
    }
}

impl<T> SourceObject<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn on_start(&self, call: Incoming) {
        let conn = call.context.as_ref().map(|c| c.connection.clone());
        let Ok((CapArg(sink), window)) =
            decode_message::<(CapArg, u64)>(call.codec, &call.payload, call.caps)
        else {
            return;
        };
        let refuse = |why: String| {
            let _ = sink.send(END, &End::Refused(why));
        };
        let open = match conn.as_ref().map(OpenStream::open).transpose() {
            Ok(open) => open,
            Err(e) => return refuse(e.to_string()),
        };
        let mut state = lock(&self.state);
        if !matches!(&*state, SourceState::Ready(_)) {
            // A stream can be read once: refuse a second start.
            drop(state);
            return refuse("the stream was already started".into());
        }
        let SourceState::Ready(items) = std::mem::replace(&mut *state, SourceState::Starting)
        else {
            unreachable!("checked above")
        };
        let credit = Arc::new(Credit::new(window));
        let task = tokio::spawn(pump(items, sink, credit.clone(), open));
        *state = SourceState::Running {
            credit,
            pump: task.abort_handle(),
        };
    }

    fn on_credit(&self, call: Incoming) {
        let Ok(grant) = decode_message::<u64>(call.codec, &call.payload, call.caps) else {
            return;
        };
        if let SourceState::Running { credit, .. } = &*lock(&self.state) {
            credit.grant(grant);
        }
    }
}

impl<T> Dispatch for SourceObject<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn interface(&self) -> &'static Interface {
        &SOURCE
    }

    fn dispatch(&self, call: Incoming) -> Handler {
        match call.method() {
            id if id == START.id => self.on_start(call),
            id if id == CREDIT.id => self.on_credit(call),
            _ => return call.method_not_found(&SOURCE),
        }
        Box::pin(std::future::ready(Reply::none()))
    }
}

/// The producer's view of its credit.
pub(super) struct Credit {
    available: AtomicI64,
    granted: Notify,
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Credit {
    fn new(initial: u64) -> Self {
        Credit {
            available: AtomicI64::new(signed(initial)),
            granted: Notify::new(),
        }
    }

    fn grant(&self, n: u64) {
        let _ = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_add(signed(n)))
            });
        self.granted.notify_one();
    }

    fn take(&self, n: u64) {
        let _ = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_sub(signed(n)))
            });
    }

    fn available(&self) -> i64 {
        self.available.load(Ordering::Acquire)
    }

    /// Resolves once there is credit.
    async fn positive(&self) {
        while self.available() <= 0 {
            self.granted.notified().await;
        }
    }
}

/// Sends the items to the sink as credit allows, then the end.
pub(super) async fn pump<T>(
    mut items: Items<T>,
    sink: Client,
    credit: Arc<Credit>,
    _open: Option<OpenStream>,
) where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    // Batches fit one transport message where they can: they then need no copy
    // into chunks nor reassembly, and small frames (other calls, credit) pass
    // queued batches as they pass the chunks of a large frame.
    let limit = sink.connection().map_or(MAX_BATCH, |c| {
        let chunk = c.config().chunk_size as u64;
        MAX_BATCH.min(chunk.saturating_sub(4096).max(chunk / 2))
    });
    let codec = sink.connection().map(|c| c.config().codec);
    // Batches the connection refused after they left (too many objects exported, a
    // frame too large): the stream fails rather than lose them.
    let refusals = Arc::new(Refusals::default());
    // An item taken that did not fit the last batch.
    let mut held = None;
    let end = loop {
        tokio::select! {
            biased;
            why = refusals.refused() => break End::Failed(why),
            () = credit.positive() => {}
        }
        let first = match held.take() {
            Some(item) => item,
            None => match items.next().await {
                None => break End::Done,
                Some(Err(e)) => break End::Failed(e),
                Some(Ok(item)) => item,
            },
        };
        // Take what is ready without waiting: one message carries many small items.
        let available = credit.available();
        let mut cost = cost_in(codec, &first);
        let mut batch = vec![first];
        let mut then = None;
        while available - signed(cost) > 0 {
            match items.next().now_or_never() {
                Some(Some(Ok(item))) => {
                    let more = cost_in(codec, &item);
                    if cost + more > limit {
                        held = Some(item);
                        break;
                    }
                    cost += more;
                    batch.push(item);
                }
                Some(Some(Err(e))) => {
                    then = Some(End::Failed(e));
                    break;
                }
                Some(None) => {
                    then = Some(End::Done);
                    break;
                }
                None => break,
            }
        }
        credit.take(cost);
        let blocked = then.is_none() && available - signed(cost) <= 0;
        if let Err(e) = send_batch(&sink, batch, blocked, &refusals).await {
            match e {
                RpcError::FrameTooLarge { .. } | RpcError::Encode(_) => {
                    break End::Failed(e.to_string())
                }
                // The consumer is gone.
                _ => return,
            }
        }
        if let Some(end) = then {
            break end;
        }
    };
    // Every batch has reached the connection task, which handles commands in
    // order: once it answers, a refusal among them is known.
    let end = match (&end, sink.connection()) {
        (End::Done, Some(conn)) => {
            let _ = conn.stats().await;
            refusals.first().map_or(end, End::Failed)
        }
        _ => end,
    };
    let _ = deliver(&sink, END, &end).await;
}

/// Waits until a send refused because its connection's outbound queue is full
/// ([`Config::max_queued_bytes`](crate::Config::max_queued_bytes)) may be tried
/// again. A local sink never refuses.
async fn room(sink: &Client) {
    if let Some(conn) = sink.connection() {
        conn.room().await;
    }
}

/// Sends a batch, split in halves as often as needed to fit the connection's frames.
async fn send_batch<T: Serialize>(
    sink: &Client,
    batch: Vec<T>,
    blocked: bool,
    refusals: &Arc<Refusals>,
) -> Result<(), RpcError> {
    let mut parts = VecDeque::from([batch]);
    while let Some(mut part) = parts.pop_front() {
        let last = parts.is_empty();
        // Not through `deliver`: a reference to the items must not live across an
        // `.await`, or the pump would need `T: Sync`.
        let sent = loop {
            let sent = sink.send_watched(ITEMS, &(&part, blocked && last), Some(refusals));
            match sent {
                Err(RpcError::Overloaded(_)) => room(sink).await,
                other => break other,
            }
        };
        match sent {
            Err(RpcError::FrameTooLarge { .. }) if part.len() > 1 => {
                let second = part.split_off(part.len() / 2);
                parts.push_front(second);
                parts.push_front(part);
            }
            other => other?,
        }
    }
    Ok(())
}

/// Sends a one-way call to the sink, waiting while the connection's outbound queue
/// is full rather than failing the stream.
async fn deliver<A: Serialize + ?Sized>(
    sink: &Client,
    method: &'static Method,
    args: &A,
) -> Result<(), RpcError> {
    loop {
        match sink.send(method, args) {
            Err(RpcError::Overloaded(_)) => room(sink).await,
            other => return other,
        }
    }
}
