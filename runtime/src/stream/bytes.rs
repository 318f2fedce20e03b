//! Byte streams: a [`Stream`] of [`Bytes`] chunks, bridged to tokio's `AsyncRead`
//! and `AsyncWrite`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::Stream;
use crate::error::RpcError;

/// The chunk size of readers, writers and [`ByteStream::from_bytes`]: two fit one
/// batch at the default `chunk_size` (see `pump`).
const CHUNK: usize = 28 * 1024;

thread_local! {
    /// The payload of the batch being decoded, so chunks can share its buffer.
    static PAYLOAD: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `payload` as the buffer chunks decoded from it may share.
pub(super) fn with_payload<R>(payload: &Bytes, decode: impl FnOnce() -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            PAYLOAD.with(|p| *p.borrow_mut() = previous);
        }
    }
    let _restore = Restore(PAYLOAD.with(|p| p.borrow_mut().replace(payload.clone())));
    decode()
}

/// `slice` as a view of the payload being decoded, if it lies inside it.
fn shared(slice: &[u8]) -> Option<Bytes> {
    PAYLOAD.with(|p| {
        let p = p.borrow();
        let payload = p.as_ref()?;
        let (start, base) = (slice.as_ptr() as usize, payload.as_ptr() as usize);
        let inside = start >= base && start + slice.len() <= base + payload.len();
        (inside && !slice.is_empty()).then(|| payload.slice_ref(slice))
    })
}

/// A chunk of a byte stream: on the wire a byte string, like `Bytes`; decoded
/// without a copy where the codec lends the bytes (bincode, postcard), as a view
/// of the received frame.
pub(super) struct Chunk(Bytes);

impl Serialize for Chunk {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(ChunkVisitor)
    }
}

struct ChunkVisitor;

impl<'de> Visitor<'de> for ChunkVisitor {
    type Value = Chunk;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Chunk, E> {
        Ok(Chunk(
            shared(v).unwrap_or_else(|| Bytes::copy_from_slice(v)),
        ))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Chunk, E> {
        Ok(Chunk(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Chunk, E> {
        Ok(Chunk(Bytes::from(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Chunk, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(Chunk(Bytes::from(bytes)))
    }
}

/// A stream of bytes that can be passed to, or returned from, a remote method: a
/// [`Stream`] of [`Bytes`] chunks, with its flow control (each chunk costs its
/// length against the window), readable as a [`tokio::io::AsyncRead`]
/// ([`into_reader`](Self::into_reader)) and made from one
/// ([`from_reader`](Self::from_reader)) or written through an
/// [`AsyncWrite`](tokio::io::AsyncWrite) ([`pipe`](Self::pipe)). A file or socket
/// piped through a call travels in chunks; neither side holds more than the window.
///
/// ```
/// use farcall::{ByteStream, Connection};
/// use tokio::io::AsyncWriteExt;
///
/// #[farcall::remote]
/// pub trait Store {
///     /// Stores the upload under `name`; returns its length.
///     async fn upload(&self, name: String, data: ByteStream) -> Result<u64, String>;
/// }
/// struct S;
/// impl Store for S {
///     async fn upload(&self, _name: String, data: ByteStream) -> Result<u64, String> {
///         let mut reader = data.into_reader();
///         tokio::io::copy(&mut reader, &mut tokio::io::sink()).await.map_err(|e| e.to_string())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (a, b) = farcall::transport::memory();
/// # let _server = Connection::builder().root(StoreServer::new(S)).connect(a);
/// # let store: StoreClient = Connection::builder().connect(b).root().await?;
/// // From any AsyncRead: a file, a socket, or here a slice.
/// let data = ByteStream::from_reader(&b"hello world"[..]);
/// assert_eq!(store.upload("a".into(), data).await?, 11);
///
/// // Or written as it is produced.
/// let (mut writer, data) = ByteStream::pipe(4);
/// let upload = store.upload("b".into(), data);
/// writer.write_all(&[7; 100_000]).await?;
/// writer.shutdown().await?;
/// assert_eq!(upload.await?, 100_000);
/// # Ok(()) }
/// ```
pub struct ByteStream(Stream<Chunk>);

impl ByteStream {
    /// A byte stream of `chunks`.
    pub fn new<S>(chunks: S) -> Self
    where
        S: futures_util::Stream<Item = Bytes> + Send + 'static,
    {
        ByteStream(Stream::new(chunks.map(Chunk)))
    }

    /// A byte stream of the `Ok` chunks of `chunks`; the first `Err` ends it with
    /// [`RpcError::StreamFailed`] carrying the error's text.
    pub fn try_new<S, E>(chunks: S) -> Self
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: fmt::Display,
    {
        ByteStream(Stream::try_new(chunks.map(|c| c.map(Chunk))))
    }

    /// A byte stream of `bytes`, in chunks of 64 KiB.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let mut bytes: Bytes = bytes.into();
        let chunks = std::iter::from_fn(move || {
            (!bytes.is_empty()).then(|| bytes.split_to(bytes.len().min(CHUNK)))
        });
        ByteStream(Stream::iter(chunks.map(Chunk)))
    }

    /// A byte stream read from `reader` in chunks of up to 64 KiB, as the consumer's
    /// credit allows; a read error ends it with [`RpcError::StreamFailed`].
    pub fn from_reader<R>(reader: R) -> Self
    where
        R: AsyncRead + Send + 'static,
    {
        let chunks = tokio_util::io::ReaderStream::with_capacity(Box::pin(reader), CHUNK);
        ByteStream::try_new(chunks)
    }

    /// A byte stream fed by the returned writer, through a channel of `chunks`
    /// writes (at least one): writes wait while it is full, and fail with
    /// `BrokenPipe` once the consumer is gone. `shutdown()` ends the stream; a
    /// writer dropped without it ends the stream with [`RpcError::StreamFailed`], so
    /// a truncated upload is never taken for a complete one.
    pub fn pipe(chunks: usize) -> (ByteWriter, ByteStream) {
        let (tx, mut rx) = mpsc::channel::<Result<Bytes, String>>(chunks.max(1));
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let items = futures_util::stream::poll_fn(move |cx| {
            Poll::Ready(match ready!(rx.poll_recv(cx)) {
                // A chunk, or why a remote writer's stream failed.
                Some(item) => Some(item),
                None if done.load(Ordering::Acquire) => None,
                None => Some(Err("the writer was dropped before shutdown".to_owned())),
            })
        });
        // Nothing follows an error.
        let items = items.scan(false, |failed, item| {
            let next = (!*failed).then_some(item);
            *failed = matches!(next, Some(Err(_)));
            std::future::ready(next)
        });
        let writer = ByteWriter {
            tx: PollSender::new(tx),
            finished,
        };
        (writer, ByteStream::try_new(items))
    }

    /// Reads the stream as an [`AsyncRead`]; a stream error becomes an
    /// `io::Error` wrapping the [`RpcError`].
    pub fn into_reader(self) -> impl AsyncRead + Send + Sync + Unpin + 'static {
        tokio_util::io::StreamReader::new(self.map(|chunk| chunk.map_err(io::Error::other)))
    }

    /// Reads the whole stream into memory.
    pub async fn to_vec(mut self) -> Result<Vec<u8>, RpcError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    /// Whether the stream was started (polled) on this side.
    pub fn is_started(&self) -> bool {
        self.0.is_started()
    }
}

impl futures_util::Stream for ByteStream {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|chunk| chunk.map(|c| c.map(|Chunk(bytes)| bytes)))
    }
}

impl fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ByteStream").field(&self.0).finish()
    }
}

impl Serialize for ByteStream {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ByteStream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Stream::deserialize(deserializer).map(ByteStream)
    }
}

/// The writing half of [`ByteStream::pipe`]: each write becomes a chunk (of at most
/// 64 KiB; wrap it in a `BufWriter` when writes are small).
///
/// Like [`StreamSender`](crate::StreamSender), a writer can be passed to, or
/// returned from, a remote method: the side that receives it writes into the byte
/// stream this side reads, within its window (a `WritableStream` of `Uint8Array`
/// chunks over Cap'n Web). Its `shutdown()` there ends the stream here; dropped
/// there without it, the stream here fails, as here.
pub struct ByteWriter {
    tx: PollSender<Result<Bytes, String>>,
    finished: Arc<AtomicBool>,
}

impl Serialize for ByteWriter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tx = self.tx.get_ref().cloned().ok_or_else(|| {
            serde::ser::Error::custom("a byte writer that was shut down cannot be sent")
        })?;
        let target = super::writer::WriterTarget {
            tx,
            convert: |Chunk(bytes)| bytes,
            finished: Some(self.finished.clone()),
            attached: Default::default(),
        };
        super::writer::serialize_target(target, serializer)
    }
}

impl<'de> Deserialize<'de> for ByteWriter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (writer, ByteStream(items)) = ByteStream::pipe(super::writer::REMOTE_CAPACITY);
        super::writer::attach(deserializer, items)?;
        Ok(writer)
    }
}

impl fmt::Debug for ByteWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteWriter")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the byte stream's consumer is gone",
    )
}

impl AsyncWrite for ByteWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| gone())?;
        let n = buf.len().min(CHUNK);
        self.tx
            .send_item(Ok(Bytes::copy_from_slice(&buf[..n])))
            .map_err(|_| gone())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finished.store(true, Ordering::Release);
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}
