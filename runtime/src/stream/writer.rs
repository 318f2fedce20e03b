//! A [`StreamSender`] (or a byte pipe's [`ByteWriter`](super::ByteWriter)) passed
//! to another side: the receiver writes into a stream this side reads.
//!
//! It travels as a reference to a local *writer target* holding a clone of the
//! channel. The side that receives it makes a channel of its own and, at once,
//! hands the target a [`Stream`] of that channel's items (`attach(stream)`,
//! one-way). The target forwards what that stream yields into the original
//! channel. So the items cross as an ordinary stream, with its flow control: a
//! remote `send` waits while the reader's channel and the stream's window are
//! full, and fails once the reader is gone. The forwarding ends when the remote
//! senders are all dropped (the reader's stream ends once every sender, here and
//! there, is gone), when a remote sender fails it (the reader gets
//! [`RpcError::StreamFailed`] with the text), or when the link breaks (the reader
//! gets `StreamFailed` saying so).

use super::*;

/// `attach` has an id no other method of the runtime's, nor a callback's (1),
/// nor a generated one (a hash with the low bits set) has: a writer target
/// mistaken for another object is refused, not called.
pub(super) static WRITER_METHODS: [Method; 1] = [Method {
    interface: "StreamWriter",
    name: "attach",
    id: 3,
}];

static WRITER: Interface = Interface {
    name: "StreamWriter",
    fingerprint: 0,
    methods: &WRITER_METHODS,
};

const ATTACH: &Method = &WRITER_METHODS[0];

/// The items (or chunks) a remote writer hands over before it waits on the link.
pub(super) const REMOTE_CAPACITY: usize = 16;

/// The object a sent writer ([`StreamSender`], or a byte pipe's
/// [`ByteWriter`](super::ByteWriter)) refers to: forwards each stream of `W`s
/// attached to it into the channel, as `C`s.
pub(super) struct WriterTarget<W, C> {
    pub(super) tx: mpsc::Sender<Result<C, String>>,
    /// What an item of an attached stream becomes in the channel.
    pub(super) convert: fn(W) -> C,
    /// Set when an attached stream ended whole (a byte pipe's `shutdown()`).
    pub(super) finished: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Whether a stream was attached (the writer reached a side that writes).
    pub(super) attached: std::sync::atomic::AtomicBool,
}

/// A target let go of before any writer attached, holding the channel's last
/// sender, would end the reader's stream as if whole though nothing was written:
/// it fails it instead (the writer never reached the other side: the call
/// carrying it failed, or the peer refused it).
impl<W, C> Drop for WriterTarget<W, C> {
    fn drop(&mut self) {
        if !self.attached.load(Ordering::Acquire) && self.tx.strong_count() == 1 {
            let why = "the stream's writer never reached the other side".to_owned();
            let _ = self.tx.try_send(Err(why));
        }
    }
}

impl<W, C> Dispatch for WriterTarget<W, C>
where
    W: Serialize + DeserializeOwned + Send + 'static,
    C: Send + 'static,
{
    fn interface(&self) -> &'static Interface {
        &WRITER
    }

    fn dispatch(&self, call: Incoming) -> Handler {
        if call.method() != ATTACH.id {
            return call.method_not_found(&WRITER);
        }
        if let Ok((items,)) = decode_message::<(Stream<W>,)>(call.codec, &call.payload, call.caps) {
            self.attached.store(true, Ordering::Release);
            let forwarding = forward(items, self.tx.clone(), self.convert, self.finished.clone());
            tokio::spawn(forwarding);
        }
        Box::pin(std::future::ready(Reply::none()))
    }
}

/// Moves the items of an attached stream into the channel until either ends.
async fn forward<W, C>(
    mut items: Stream<W>,
    tx: mpsc::Sender<Result<C, String>>,
    convert: fn(W) -> C,
    finished: Option<Arc<std::sync::atomic::AtomicBool>>,
) where
    W: Serialize + DeserializeOwned + Send + 'static,
{
    loop {
        let next = tokio::select! {
            next = items.next() => next,
            // The reader is gone: dropping `items` stops the remote producer.
            () = tx.closed() => return,
        };
        let item = match next {
            None => {
                if let Some(finished) = finished {
                    finished.store(true, Ordering::Release);
                }
                return;
            }
            Some(Ok(item)) => Ok(convert(item)),
            Some(Err(RpcError::StreamFailed(why))) => Err(why),
            Some(Err(e)) => Err(format!("the remote writer's stream broke: {e}")),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// Writes a sent writer: a reference to `target`, inside the [`WRITER_NEWTYPE`]
/// newtype struct.
pub(super) fn serialize_target<S: Serializer>(
    target: impl Dispatch,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let target = Client::from_local(target);
    serializer.serialize_newtype_struct(WRITER_NEWTYPE, &CapArg(target))
}

/// Reads a sent writer and attaches `items`, the stream a local writer feeds, to
/// its target at once.
pub(super) fn attach<'de, D, W>(deserializer: D, items: Stream<W>) -> Result<(), D::Error>
where
    D: Deserializer<'de>,
    W: Serialize + DeserializeOwned + Send + 'static,
{
    let CapArg(target) = deserializer.deserialize_newtype_struct(WRITER_NEWTYPE, TargetVisitor)?;
    // Fails only when the target can no longer be reached: the local writer then
    // finds its stream closed.
    let _ = target.send(ATTACH, &(items,));
    Ok(())
}

impl<T> Serialize for StreamSender<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let target = WriterTarget {
            tx: self.tx.clone(),
            convert: |item: T| item,
            finished: None,
            attached: Default::default(),
        };
        serialize_target(target, serializer)
    }
}

impl<'de, T> Deserialize<'de> for StreamSender<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let CapArg(target) =
            deserializer.deserialize_newtype_struct(WRITER_NEWTYPE, TargetVisitor)?;
        let (tx, items) = Stream::channel(REMOTE_CAPACITY);
        // Fails only when the target can no longer be reached: the sender then
        // finds its stream closed.
        let _ = target.send(ATTACH, &(items,));
        Ok(tx)
    }
}

/// Reads the target inside the [`WRITER_NEWTYPE`] newtype struct.
struct TargetVisitor;

impl<'de> serde::de::Visitor<'de> for TargetVisitor {
    type Value = CapArg;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stream sender")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<CapArg, D::Error> {
        CapArg::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::__private::Plain;

    #[crate::remote]
    trait Holder {
        /// Misuses the writer target it is given.
        async fn misuse(&self, target: CapArg);
    }

    struct H;

    static OTHER: Method = Method {
        interface: "StreamWriter",
        name: "other",
        id: 7,
    };

    impl Holder for H {
        async fn misuse(&self, CapArg(target): CapArg) {
            // Payloads that are not a stream, another method, a call expecting an
            // answer, and the same target attached three times.
            let _ = target.send(ATTACH, &("garbage", 1u8));
            let _ = target.send(ATTACH, &());
            let _ = target.send(&OTHER, &(Stream::iter([9u64]),));
            let _ = target
                .call::<_, Plain<()>>(ATTACH, &(Stream::iter([5u64]),))
                .await;
            for _ in 0..3 {
                let _ = target.send(ATTACH, &(Stream::iter(0..3u64),));
            }
        }
    }

    #[tokio::test]
    async fn a_peer_misusing_a_writer_target_gets_only_streams_through() {
        let (a, b) = crate::transport::memory();
        let server = Connection::builder().root(HolderServer::new(H)).connect(a);
        let client = Connection::builder().connect(b);
        let holder: HolderClient = client.root().await.unwrap();
        let (tx, items) = Stream::<u64>::channel(4);
        let target = CapArg(Client::from_local(WriterTarget {
            tx: tx.tx.clone(),
            convert: |n: u64| n,
            finished: None,
            attached: Default::default(),
        }));
        drop(tx);
        holder.misuse(target).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), items.collect::<Vec<_>>())
            .await
            .expect("the stream ends once the target is released");
        let mut got: Vec<u64> = got.into_iter().map(Result::unwrap).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 0, 0, 1, 1, 1, 2, 2, 2, 5]);
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (s, c) = (server.stats().await.unwrap(), client.stats().await.unwrap());
                if s.is_zero() && c.is_zero() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the tables return to zero");
    }
}
