//! Binary payloads: raw bytes on the wire, large messages that do not hold up small
//! ones, and carriers with a per-message size limit.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::bounded;
use farcall::transport::{Delayed, MemoryTransport};
use farcall::{AnyCodec, Connection};
use futures_util::{Sink, Stream};
use tokio::time::Instant;

#[farcall::remote]
pub trait Files {
    /// A store to upload to (another object than the root).
    async fn store(&self) -> StoreClient;
    async fn ping(&self) -> u32;
    async fn size(&self, data: Bytes) -> usize;
    async fn blob_size(&self, blob: Blob) -> usize;
}

/// A struct with a `serde_bytes` field, which travels as raw bytes too.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Blob {
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[farcall::remote]
pub trait Store {
    async fn put(&self, data: Bytes) -> usize;
    async fn note(&self, n: u32);
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

struct FilesImpl(Log);
struct StoreImpl(Log);

impl Files for FilesImpl {
    async fn store(&self) -> StoreClient {
        StoreClient::from_local(StoreImpl(self.0.clone()))
    }
    async fn ping(&self) -> u32 {
        self.0 .0.lock().unwrap().push("ping".into());
        1
    }
    async fn size(&self, data: Bytes) -> usize {
        data.len()
    }
    async fn blob_size(&self, blob: Blob) -> usize {
        blob.data.len()
    }
}

impl Store for StoreImpl {
    async fn put(&self, data: Bytes) -> usize {
        self.0
             .0
            .lock()
            .unwrap()
            .push(format!("put {}", data.len()));
        data.len()
    }
    async fn note(&self, n: u32) {
        self.0 .0.lock().unwrap().push(format!("note {n}"));
    }
}

/// Counts the bytes a transport sends and refuses messages over a size limit.
struct Meter {
    inner: MemoryTransport,
    sent: Arc<AtomicUsize>,
    max_message: usize,
}

impl Stream for Meter {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Sink<Bytes> for Meter {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        if frame.len() > self.max_message {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message too large for this carrier",
            ));
        }
        self.sent.fetch_add(frame.len(), Ordering::SeqCst);
        Pin::new(&mut self.inner).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The link between the two ends: its bandwidth (bytes per second of virtual time)
/// and the largest message it carries.
#[derive(Clone, Copy)]
struct Carrier {
    rate: Option<f64>,
    max_message: usize,
}

const PLAIN: Carrier = Carrier {
    rate: None,
    max_message: usize::MAX,
};

impl Carrier {
    fn wrap(self, inner: MemoryTransport, sent: Arc<AtomicUsize>) -> Delayed<Meter> {
        let meter = Meter {
            inner,
            sent,
            max_message: self.max_message,
        };
        let link = farcall::transport::delayed(meter, Duration::ZERO);
        match self.rate {
            Some(rate) => link.bandwidth(rate),
            None => link,
        }
    }
}

struct Setup {
    files: FilesClient,
    log: Log,
    sent_by_client: Arc<AtomicUsize>,
    _server: Connection,
}

async fn setup(codec: AnyCodec, carrier: Carrier, builder: impl Fn() -> farcall::Builder) -> Setup {
    let log = Log::default();
    let (a, b) = farcall::transport::memory();
    let sent_by_client = Arc::new(AtomicUsize::new(0));
    let server_side = carrier.wrap(a, Arc::new(AtomicUsize::new(0)));
    let client_side = carrier.wrap(b, sent_by_client.clone());
    let server = builder()
        .codec(codec)
        .root(FilesServer::new(FilesImpl(log.clone())))
        .connect(server_side);
    let files = builder()
        .codec(codec)
        .connect(client_side)
        .root()
        .await
        .unwrap();
    Setup {
        files,
        log,
        sent_by_client,
        _server: server,
    }
}

#[tokio::test]
async fn bytes_travel_raw_without_per_element_overhead() {
    for codec in [AnyCodec::Bincode, AnyCodec::Postcard] {
        let s = setup(codec, PLAIN, Connection::builder).await;
        let before = s.sent_by_client.load(Ordering::SeqCst);
        let mib = Bytes::from(vec![0xA5u8; 1 << 20]);
        assert_eq!(bounded("1 MiB", s.files.size(mib)).await.unwrap(), 1 << 20);
        let sent = s.sent_by_client.load(Ordering::SeqCst) - before;
        let overhead = sent - (1 << 20);
        eprintln!(
            "{codec:?}: 1 MiB argument cost {sent} bytes on the wire ({overhead} bytes overhead)"
        );
        assert!(
            overhead < 1024,
            "{codec:?}: {overhead} bytes of overhead for 1 MiB"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_large_upload_does_not_hold_up_a_small_call() {
    const RATE: f64 = 64.0 * 1024.0 * 1024.0; // bytes per second
    let big = 64usize << 20;
    let s = setup(
        AnyCodec::default(),
        Carrier {
            rate: Some(RATE),
            ..PLAIN
        },
        || Connection::builder().max_frame_size(128 << 20),
    )
    .await;
    let store = s.files.store().await.unwrap();
    let started = Instant::now();
    let upload = store.put(Bytes::from(vec![7u8; big]));
    let ping = bounded("small call", s.files.ping()).await;
    let small = started.elapsed();
    assert_eq!(ping, Ok(1));
    assert_eq!(bounded("upload", upload).await, Ok(big));
    let large = started.elapsed();
    eprintln!("64 MiB upload took {large:?}; a small call made after it took {small:?}");
    // One chunk of 64 KiB takes about 1 ms at this rate.
    assert!(
        large >= Duration::from_millis(900),
        "the upload takes about a second: {large:?}"
    );
    assert!(
        small <= Duration::from_millis(5),
        "the small call waited {small:?}"
    );
    assert_eq!(s.log.0.lock().unwrap()[0], "ping");
}

#[tokio::test(start_paused = true)]
async fn calls_on_the_same_object_keep_their_order_behind_a_large_one() {
    let s = setup(
        AnyCodec::default(),
        Carrier {
            rate: Some(8.0 * 1024.0 * 1024.0),
            ..PLAIN
        },
        || Connection::builder().max_frame_size(32 << 20),
    )
    .await;
    let store = s.files.store().await.unwrap();
    let upload = store.put(Bytes::from(vec![1u8; 4 << 20]));
    let note = store.note(1);
    bounded("both", async {
        (upload.await.unwrap(), note.await.unwrap())
    })
    .await;
    assert_eq!(*s.log.0.lock().unwrap(), ["put 4194304", "note 1"]);
}

#[tokio::test]
async fn a_carrier_with_a_message_size_limit_still_carries_large_payloads() {
    let s = setup(
        AnyCodec::default(),
        Carrier {
            max_message: 64 * 1024,
            ..PLAIN
        },
        || Connection::builder().chunk_size(60 * 1024),
    )
    .await;
    let data = Bytes::from((0..(3 << 20)).map(|i| i as u8).collect::<Vec<u8>>());
    assert_eq!(
        bounded("3 MiB through 64 KiB messages", s.files.size(data)).await,
        Ok(3 << 20)
    );
}

#[farcall::remote]
pub trait Exact {
    /// Takes `data`, returns its length.
    async fn take(&self, data: Bytes) -> usize;
    /// Returns `n` bytes.
    async fn make(&self, n: usize) -> Bytes;
}

struct SizedImpl;

impl Exact for SizedImpl {
    async fn take(&self, data: Bytes) -> usize {
        data.len()
    }
    async fn make(&self, n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }
}

/// The largest `n` for which `fits(n)` holds, given it holds at `lo` and not at `hi`.
async fn largest_fitting<F, Fut>(mut lo: usize, mut hi: usize, fits: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid).await {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Checks the error of a frame one payload byte over the limit: its size is the real
/// frame's, one byte over under the binary codecs. JSON writes bytes as base64 (four
/// characters for every three bytes) and ids in decimal, so there the frame grows by
/// a few bytes.
fn one_over(err: &farcall::RpcError, codec: AnyCodec, limit: usize, what: &str) {
    let farcall::RpcError::FrameTooLarge { size, limit: got } = *err else {
        panic!("{what}: {err}");
    };
    assert_eq!(got, limit, "{what}");
    if codec == AnyCodec::Json {
        assert!((limit + 1..=limit + 4).contains(&size), "{what}: {size}");
    } else {
        assert_eq!(size, limit + 1, "{what}");
    }
}

#[tokio::test]
async fn a_frame_exactly_at_the_limit_passes_and_one_byte_more_is_refused_with_its_real_size() {
    // 4 KiB: whole frames; 200 KB: frames sent in chunks and reassembled.
    for limit in [4096usize, 200_000] {
        for &codec in AnyCodec::ALL {
            let (a, b) = farcall::transport::memory();
            let server = Connection::builder()
                .codec(codec)
                .max_frame_size(limit)
                .root(ExactServer::new(SizedImpl))
                .connect(a);
            let client = Connection::builder()
                .codec(codec)
                .max_frame_size(limit)
                .connect(b);
            let sized: ExactClient = bounded("root", client.root()).await.unwrap();
            let what = format!("{codec:?}, limit {limit}");

            // Arguments: the largest call that goes through, then one byte more.
            let at = largest_fitting(0, limit, |n| {
                let sized = sized.clone();
                async move { sized.take(Bytes::from(vec![1u8; n])).await == Ok(n) }
            })
            .await;
            let err = sized
                .take(Bytes::from(vec![1u8; at + 1]))
                .await
                .unwrap_err();
            one_over(
                &err,
                codec,
                limit,
                &format!("{what}: the call one byte over"),
            );

            // Results likewise, refused by the server.
            let at = largest_fitting(0, limit, |n| {
                let sized = sized.clone();
                async move { sized.make(n).await.map(|b| b.len()) == Ok(n) }
            })
            .await;
            let err = sized.make(at + 1).await.unwrap_err();
            one_over(
                &err,
                codec,
                limit,
                &format!("{what}: the result one byte over"),
            );
            if codec != AnyCodec::Json {
                assert!(limit - at < 32, "{what}: only {at} bytes of payload fit");
            }
            // Nothing else was lost.
            assert_eq!(sized.take(Bytes::from_static(b"ok")).await, Ok(2));
            assert!(!server.is_closed() && !client.is_closed());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_small_call_made_during_an_upload_passes_it_on_a_slow_link() {
    // 10 MiB/s: the 5 MiB upload takes about half a second; the link takes 64 KiB
    // ahead of what it has sent, as a socket does, so the small call, made 5 ms in,
    // waits for a chunk or two, not for the upload.
    const RATE: f64 = 10.0 * 1024.0 * 1024.0;
    let big = 5usize << 20;
    let s = setup(
        AnyCodec::default(),
        Carrier {
            rate: Some(RATE),
            ..PLAIN
        },
        Connection::builder,
    )
    .await;
    let store = s.files.store().await.unwrap();
    let started = Instant::now();
    let upload = tokio::spawn(store.put(Bytes::from(vec![7u8; big])));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let asked = Instant::now();
    assert_eq!(bounded("small call", s.files.ping()).await, Ok(1));
    let small = asked.elapsed();
    assert!(!upload.is_finished(), "the upload is still going");
    assert_eq!(bounded("upload", upload).await.unwrap(), Ok(big));
    let large = started.elapsed();
    eprintln!("5 MiB upload took {large:?}; a small call made 5 ms in took {small:?}");
    assert!(large >= Duration::from_millis(450), "{large:?}");
    assert!(
        small <= Duration::from_millis(40),
        "the small call waited {small:?}"
    );
}

/// Counts the bytes read through a stream, so a test can wait for an upload to be
/// under way.
struct Counting<S> {
    inner: S,
    read: Arc<AtomicUsize>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n, Ordering::SeqCst);
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_small_call_made_during_an_upload_passes_it_over_tcp_with_small_buffers() {
    bounded("tcp upload", async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let client_socket = tokio::net::TcpSocket::new_v4().unwrap();
        client_socket.set_send_buffer_size(16 * 1024).unwrap();
        let (accepted, connected) = tokio::join!(listener.accept(), client_socket.connect(addr));
        let (server_io, connected) = (accepted.unwrap().0, connected.unwrap());
        let read = Arc::new(AtomicUsize::new(0));
        let log = Log::default();
        let _server = Connection::builder()
            .max_frame_size(64 << 20)
            .root(FilesServer::new(FilesImpl(log.clone())))
            .connect_stream(Counting {
                inner: server_io,
                read: read.clone(),
            });
        let client = Connection::builder()
            .max_frame_size(64 << 20)
            .connect_stream(connected);
        let files: FilesClient = client.root().await.unwrap();
        let store = files.store().await.unwrap();
        let big = 48usize << 20;
        let upload = tokio::spawn(store.put(Bytes::from(vec![3u8; big])));
        // Once a first part of the upload has arrived, make a small call.
        while read.load(Ordering::SeqCst) < (1 << 20) {
            tokio::task::yield_now().await;
        }
        assert_eq!(files.ping().await, Ok(1));
        let arrived = read.load(Ordering::SeqCst);
        assert!(
            arrived < big,
            "the small call returned before the upload had arrived ({arrived} of {big} bytes)"
        );
        assert_eq!(upload.await.unwrap(), Ok(big));
        assert_eq!(log.0.lock().unwrap()[0], "ping");
    })
    .await;
}

#[tokio::test]
async fn json_carries_bytes_as_base64_within_the_default_frame_limit() {
    const FIVE_MIB: usize = 5 << 20;
    const DEFAULT_MAX_FRAME: usize = 16 << 20;
    let data = Bytes::from((0..FIVE_MIB).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    // As arrays of numbers (serde_json alone), the argument would not fit a frame.
    let as_numbers = serde_json::to_vec(&data.to_vec()).unwrap().len();
    assert!(as_numbers > DEFAULT_MAX_FRAME, "{as_numbers}");

    let s = setup(AnyCodec::Json, PLAIN, Connection::builder).await;
    let before = s.sent_by_client.load(Ordering::SeqCst);
    assert_eq!(
        bounded("5 MiB over JSON", s.files.size(data.clone())).await,
        Ok(FIVE_MIB)
    );
    let sent = s.sent_by_client.load(Ordering::SeqCst) - before;
    eprintln!(
        "JSON: a 5 MiB argument cost {sent} bytes on the wire ({:.3}x; {as_numbers} bytes \
         as arrays of numbers)",
        sent as f64 / FIVE_MIB as f64
    );
    assert!(sent <= FIVE_MIB * 14 / 10, "{sent} bytes for {FIVE_MIB}");

    // A `serde_bytes` field likewise.
    let blob = Blob {
        name: "five".into(),
        data: data.to_vec(),
    };
    let before = s.sent_by_client.load(Ordering::SeqCst);
    assert_eq!(
        bounded("5 MiB blob over JSON", s.files.blob_size(blob)).await,
        Ok(FIVE_MIB)
    );
    let sent = s.sent_by_client.load(Ordering::SeqCst) - before;
    assert!(sent <= FIVE_MIB * 14 / 10, "{sent} bytes for {FIVE_MIB}");
}
