//! Capabilities: references to objects, local or remote, that can travel inside
//! arguments and results.
//!
//! A [`CapRef`] is either a local object (served by this process) or an import (an
//! object exported by a peer over one connection). While a payload is encoded, every
//! capability serialized inside it is collected into the message's capability list
//! and written as its index there; the connection task then turns the list into wire
//! descriptors, exporting local objects as needed. Decoding runs the other way: the
//! connection task turns received descriptors into `CapRef`s the moment a frame
//! arrives (so a message dropped unread still releases what it carried), and the
//! payload's indices are resolved against that list.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod client;
mod serve;

pub use self::client::Client;
pub(crate) use self::serve::ReplyTo;
pub use self::serve::{Dispatch, Handler, Incoming, Reply};
use crate::codec::{AnyCodec, CAP_NEWTYPE};
use crate::connection::{AnswerRef, Command, Connection, Outgoing};
use crate::error::{RpcError, WireError};
use crate::wire::{encode_payload, ExportId, Target};

/// A reference to an object, wherever it lives.
#[derive(Clone)]
pub(crate) enum CapRef {
    /// Served here.
    Local(Arc<LocalObject>),
    /// Exported by the peer of a connection.
    Import(Arc<ImportEntry>),
    /// The capability a remote call will return: calls on it are pipelined.
    Promise(Arc<AnswerRef>),
    /// The capability a local call still running will return.
    Later(Arc<LaterCap>),
    /// A reference that cannot be called, and why.
    Broken(WireError),
}

impl CapRef {
    /// Who must hear when this object is revoked, if it can be.
    pub(crate) fn revocation(&self) -> Option<&Revocation> {
        match self {
            CapRef::Local(obj) => Some(&obj.revocation),
            CapRef::Import(entry) => Some(&entry.revocation),
            _ => None,
        }
    }

    /// Identity: two `CapRef`s with the same key are the same object.
    pub(crate) fn key(&self) -> usize {
        match self {
            CapRef::Local(obj) => Arc::as_ptr(obj) as *const () as usize,
            CapRef::Import(entry) => Arc::as_ptr(entry) as *const () as usize,
            CapRef::Promise(answer) => Arc::as_ptr(answer) as *const () as usize,
            CapRef::Later(later) => Arc::as_ptr(later) as *const () as usize,
            CapRef::Broken(_) => 0,
        }
    }

    /// Starts serving a call addressed to this object: runs a local object's
    /// handler, or forwards the call to the peer that exports an import.
    pub(crate) fn dispatch(&self, incoming: Incoming) -> Handler {
        match self {
            CapRef::Local(obj) => obj.dispatch(incoming),
            CapRef::Import(entry) => {
                if entry.is_released() {
                    return incoming.fail(WireError::ObjectNotFound);
                }
                if entry.is_revoked() {
                    return incoming.fail(WireError::Revoked);
                }
                forward(&entry.conn, Target::Export(entry.id), incoming)
            }
            CapRef::Promise(answer) => {
                forward(&answer.conn, Target::Answer(answer.question), incoming)
            }
            CapRef::Later(later) => later.dispatch(incoming),
            CapRef::Broken(error) => incoming.fail(error.clone()),
        }
    }
}

impl fmt::Debug for CapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapRef::Local(obj) => write!(f, "Local({})", obj.dispatch.interface().name),
            CapRef::Import(entry) => {
                write!(f, "Import(connection {}, id {})", entry.conn.id(), entry.id)
            }
            CapRef::Promise(answer) => {
                write!(
                    f,
                    "Promise(connection {}, question {})",
                    answer.conn.id(),
                    answer.question
                )
            }
            CapRef::Later(_) => f.write_str("Later"),
            CapRef::Broken(error) => write!(f, "Broken({error:?})"),
        }
    }
}

/// Whether an object was revoked, and who must hear of it: holders waiting in
/// `closed()`, and every connection it was exported on (which tells its peer, so
/// the holder there sees it too without calling).
#[derive(Default)]
pub(crate) struct Revocation {
    revoked: AtomicBool,
    notify: tokio::sync::Notify,
    /// Connections the object was exported on; pruned of ended ones as it grows.
    exported_on: Mutex<Vec<tokio::sync::mpsc::WeakUnboundedSender<Command>>>,
}

impl Revocation {
    /// Revokes, telling every connection it was exported on; `key` names the object
    /// in their export tables.
    pub(crate) fn revoke(&self, key: usize) {
        if self.revoked.swap(true, Ordering::AcqRel) {
            return;
        }
        self.notify.notify_waiters();
        let exported_on =
            std::mem::take(&mut *self.exported_on.lock().unwrap_or_else(|e| e.into_inner()));
        for commands in exported_on.iter().filter_map(|weak| weak.upgrade()) {
            let _ = commands.send(Command::Revoked { key });
        }
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Resolves once revoked.
    pub(crate) async fn revoked(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_revoked() {
                return;
            }
            notified.await;
        }
    }

    /// Records that the object was newly exported on the connection taking
    /// `commands`; if it is already revoked, that connection is told at once.
    pub(crate) fn exported_on(
        &self,
        commands: &tokio::sync::mpsc::UnboundedSender<Command>,
        key: usize,
    ) {
        if self.is_revoked() {
            let _ = commands.send(Command::Revoked { key });
            return;
        }
        let mut list = self.exported_on.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|weak| weak.strong_count() > 0);
        list.push(commands.downgrade());
    }
}

/// An object served in this process.
pub(crate) struct LocalObject {
    pub(crate) dispatch: Arc<dyn Dispatch>,
    pub(crate) revocation: Revocation,
}

impl LocalObject {
    pub(crate) fn new(dispatch: Arc<dyn Dispatch>) -> Arc<Self> {
        Arc::new(LocalObject {
            dispatch,
            revocation: Revocation::default(),
        })
    }

    pub(crate) fn revoke(self: &Arc<Self>) {
        self.revocation
            .revoke(Arc::as_ptr(self) as *const () as usize);
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revocation.is_revoked()
    }

    #[cfg_attr(not(feature = "capnweb"), allow(unused_mut))]
    fn dispatch(&self, mut incoming: Incoming) -> Handler {
        if self.is_revoked() {
            return incoming.fail(WireError::Revoked);
        }
        // A call by name (Cap'n Web) names the method by its name bits only.
        #[cfg(feature = "capnweb")]
        if crate::interface::by_name::is_wildcard(incoming.method) {
            let methods = self.dispatch.interface().methods;
            if let Some(method) = crate::interface::by_name::resolve(incoming.method, methods) {
                incoming.method = method.id;
            }
        }
        // `dispatch` only decodes and builds a future, but a user's `Deserialize`
        // impl could still panic.
        let reply = incoming.reply.clone();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.dispatch.dispatch(incoming)
        }))
        .unwrap_or_else(|panic| Box::pin(std::future::ready(reply.panic(panic))))
    }
}

/// An object the peer of `conn` exports under `id`, as held here.
///
/// Every handle to the same import shares one entry; when the last is dropped (or
/// [`release`](Self::release) is called) the connection task sends the peer one
/// `Release` for all the references it received.
pub(crate) struct ImportEntry {
    pub(crate) conn: Connection,
    pub(crate) id: ExportId,
    /// Tells this entry apart from a later one for the same id.
    pub(crate) generation: u64,
    released: AtomicBool,
    /// Set when the peer says its owner revoked the object.
    pub(crate) revocation: Revocation,
}

impl ImportEntry {
    pub(crate) fn new(conn: Connection, id: ExportId, generation: u64) -> Self {
        ImportEntry {
            conn,
            id,
            generation,
            released: AtomicBool::new(false),
            revocation: Revocation::default(),
        }
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revocation.is_revoked()
    }

    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Gives the references back now; calls through any handle then fail.
    pub(crate) fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            let _ = self.conn.command(Command::ImportDropped {
                id: self.id,
                generation: self.generation,
            });
        }
    }
}

/// Forwards a call to `target` over `conn`: a call that arrived on another
/// connection, or one made on a local handle to a remote promise.
fn forward(conn: &Connection, target: Target, incoming: Incoming) -> Handler {
    // The payload goes on in its own codec, whatever the next connection's.
    let message = Message {
        payload: incoming.payload,
        caps: incoming.caps,
        codec: incoming.codec,
    };
    let method = incoming.method;
    let asked = if incoming.wants_reply {
        conn.ask(Outgoing::Call { target, method }, message)
            .map(Some)
    } else {
        conn.send(target, method, message, None).map(|()| None)
    };
    let reply = incoming.reply;
    Box::pin(async move {
        match asked {
            Ok(Some(question)) => match question.await {
                Ok(answer) => answer,
                Err(e) => reply.error(&WireError::Forward(e.to_string())),
            },
            Ok(None) => Reply::none(),
            Err(e) => reply.error(&WireError::Forward(e.to_string())),
        }
    })
}

/// The capability a local call that is still running will return. Calls on it wait,
/// in the order they were made, until the call finishes.
pub(crate) struct LaterCap {
    resolved: tokio::sync::watch::Sender<Option<CapRef>>,
    /// Handed out in request order (tokio's mutex is fair), so waiting calls start in
    /// the order they were made.
    order: tokio::sync::Mutex<()>,
    /// The task running the call. It holds only a weak reference to this, so when the
    /// call and every handle pipelined on it are gone, nothing wants its result and
    /// dropping this stops it.
    task: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for LaterCap {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl LaterCap {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(LaterCap {
            resolved: tokio::sync::watch::Sender::new(None),
            order: tokio::sync::Mutex::new(()),
            task: std::sync::OnceLock::new(),
        })
    }

    /// Ties the task running the call to this promise's lifetime.
    pub(crate) fn set_task(&self, task: tokio::task::AbortHandle) {
        let _ = self.task.set(task);
    }

    /// Records what the call returned: its first capability, or why there is none.
    pub(crate) fn resolve(&self, reply: &Reply) {
        self.resolved.send_replace(Some(reply.promised_cap()));
    }

    fn dispatch(self: &Arc<Self>, incoming: Incoming) -> Handler {
        let this = self.clone();
        let mut resolved = self.resolved.subscribe();
        Box::pin(async move {
            let turn = this.order.lock().await;
            let cap = resolved
                .wait_for(Option::is_some)
                .await
                .map(|cap| cap.clone())
                .ok()
                .flatten()
                .unwrap_or_else(|| {
                    CapRef::Broken(WireError::PromiseFailed("the call was dropped".into()))
                });
            let mut handler = cap.dispatch(incoming);
            // Start it before letting the next call in, to keep their order.
            let started = {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                handler.as_mut().poll(&mut cx)
            };
            if let std::task::Poll::Ready(reply) = started {
                return reply;
            }
            drop(turn);
            handler.await
        })
    }
}

impl Drop for ImportEntry {
    fn drop(&mut self) {
        self.release();
    }
}

/// An encoded payload and the capabilities it refers to by index.
pub(crate) struct Message {
    pub(crate) payload: Bytes,
    pub(crate) caps: Vec<CapRef>,
    /// The codec the payload is in.
    pub(crate) codec: AnyCodec,
}

/// The payload being encoded: the capabilities met so far, and its codec (none
/// when a value is only measured).
struct Encoding {
    caps: Vec<CapRef>,
    codec: Option<AnyCodec>,
}

thread_local! {
    /// The payload being encoded, if one is.
    static OUTGOING: RefCell<Option<Encoding>> = const { RefCell::new(None) };
    /// Capabilities of the payload being decoded.
    static INCOMING: RefCell<Option<Vec<CapRef>>> = const { RefCell::new(None) };
}

/// The codec of the payload being encoded on this thread, if one is.
pub(crate) fn encoding_codec() -> Option<AnyCodec> {
    OUTGOING.with(|s| s.borrow().as_ref().and_then(|o| o.codec))
}

type Slot<T> = &'static std::thread::LocalKey<RefCell<Option<T>>>;

/// Restores the previous context when dropped, even on panic, so nested encodes
/// (a `Serialize` impl that encodes something itself) and panics cannot leak one.
struct Restore<T: 'static> {
    slot: Slot<T>,
    previous: Option<T>,
}

impl<T> Drop for Restore<T> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        self.slot.with(|s| *s.borrow_mut() = previous);
    }
}

fn enter<T>(slot: Slot<T>, context: T) -> Restore<T> {
    let previous = slot.with(|s| s.borrow_mut().replace(context));
    Restore { slot, previous }
}

/// Encodes `value`, collecting the capabilities inside it.
pub(crate) fn encode_message<T: Serialize + ?Sized>(
    codec: AnyCodec,
    value: &T,
) -> Result<Message, RpcError> {
    let outgoing = Encoding {
        caps: Vec::new(),
        codec: Some(codec),
    };
    let guard = enter(&OUTGOING, outgoing);
    let payload = encode_payload(codec, value);
    let caps = OUTGOING
        .with(|s| s.borrow_mut().take())
        .map(|o| o.caps)
        .unwrap_or_default();
    drop(guard);
    Ok(Message {
        payload: payload?.into(),
        caps,
        codec,
    })
}

/// Runs `f` as if encoding a message whose capabilities are thrown away: for
/// serializing a value only to measure it.
pub(crate) fn counting<R>(f: impl FnOnce() -> R) -> R {
    let outgoing = Encoding {
        caps: Vec::new(),
        codec: None,
    };
    let _guard = enter(&OUTGOING, outgoing);
    f()
}

/// Runs `decode` with `caps` as the capabilities payload indices refer to. The
/// message's capabilities are handed over: what the decoded value does not take is
/// dropped (and so released) afterwards.
pub(crate) fn with_incoming<R>(caps: Vec<CapRef>, decode: impl FnOnce() -> R) -> R {
    let _guard = enter(&INCOMING, caps);
    decode()
}

/// Decodes `payload` against `caps`.
pub(crate) fn decode_message<T: DeserializeOwned>(
    codec: AnyCodec,
    payload: &[u8],
    caps: Vec<CapRef>,
) -> Result<T, RpcError> {
    with_incoming(caps, || codec.decode(payload)).map_err(|e| RpcError::Decode(e.to_string()))
}

/// Reads the index inside the [`CAP_NEWTYPE`] newtype struct.
struct CapIndex;

impl<'de> serde::de::Visitor<'de> for CapIndex {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a capability index")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        u32::deserialize(d)
    }
}

pub(crate) fn serialize_cap<S: Serializer>(cap: &CapRef, serializer: S) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|s| {
        s.borrow_mut().as_mut().map(|outgoing| {
            outgoing.caps.push(cap.clone());
            outgoing.caps.len() - 1
        })
    });
    match index.map(u32::try_from) {
        Some(Ok(index)) => serializer.serialize_newtype_struct(CAP_NEWTYPE, &index),
        Some(Err(_)) => Err(S::Error::custom("too many capabilities in one message")),
        None => Err(S::Error::custom(
            "farcall capabilities can only be serialized as part of a call or its result",
        )),
    }
}

pub(crate) fn deserialize_cap<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<CapRef, D::Error> {
    let index = deserializer.deserialize_newtype_struct(CAP_NEWTYPE, CapIndex)?;
    INCOMING
        .with(|s| {
            s.borrow()
                .as_ref()
                .map(|caps| caps.get(index as usize).cloned())
        })
        .ok_or_else(|| {
            D::Error::custom(
                "farcall capabilities can only be deserialized as part of a call or its result",
            )
        })?
        .ok_or_else(|| D::Error::custom(format!("capability index {index} is not in the message")))
}
