//! The calling side: a reference to an object (remote or local) and the future of
//! one call.
//!
//! Generated `{Trait}Client` types wrap a [`Client`]; each method encodes its
//! arguments right away (so calls go out in the order they are made, whether or not
//! their futures are awaited yet) and returns a [`Call`].

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use serde::{Deserializer, Serialize, Serializer};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use crate::cap::{self, encode_message, CapRef, LaterCap, LocalObject, Message};
use crate::codec::AnyCodec;
use crate::connection::{Connection, Outgoing, Question};
use crate::dispatch::{
    decode_reply, Dispatch, Fallible, Handler, Incoming, Interface, Method, Plain, Reply, ReplyTo,
    Shape,
};
use crate::error::{RpcError, WireError};
use crate::wire::{Target, MIN_FRAME_OVERHEAD};

/// A generated client type: a typed reference to an object, remote or local.
///
/// Implemented by every `{Trait}Client` that `#[farcall::remote]` generates. Besides
/// serving as a bound (as in [`Connection::root`]) it gives every client the handle
/// operations below; call them as `RemoteClient::release(&client)` or bring the trait
/// into scope.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a farcall client type",
    label = "not a `#[farcall::remote]` client",
    note = "only calls returning a generated client (or `Result<Client, E>`) can be pipelined; `.await` the call to get its value"
)]
pub trait RemoteClient:
    Clone + Send + Sync + Serialize + serde::de::DeserializeOwned + 'static
{
    /// The interface the client speaks.
    const INTERFACE: &'static Interface;
    #[doc(hidden)]
    fn from_client(client: Client) -> Self;
    /// The untyped reference inside.
    fn client(&self) -> &Client;

    /// Gives a remote object back to its owner now (see [`Client::release`]).
    fn release(&self) {
        self.client().release()
    }
    /// Stops a local object from serving anyone it was handed to (see
    /// [`Client::revoke`]).
    fn revoke(&self) {
        self.client().revoke()
    }
    /// Resolves once calls through this reference can no longer succeed (see
    /// [`Client::closed`]).
    fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.client().closed()
    }
    /// Whether calls through this reference can no longer succeed.
    fn is_closed(&self) -> bool {
        self.client().is_closed()
    }
}

/// An untyped reference to an object: remote (imported over a connection) or local
/// (served in this process). Generated clients and [`Callback`](crate::Callback)s wrap
/// one. Cloning is cheap; clones are the same reference.
///
/// Two references compare equal (and hash equal) when they name the same object: the
/// same local object, or the same import on the same connection. A peer passing the
/// same object twice yields equal references, so they can be kept in a set and
/// removed again.
#[derive(Clone)]
pub struct Client {
    pub(crate) cap: CapRef,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cap.fmt(f)
    }
}

impl PartialEq for Client {
    fn eq(&self, other: &Self) -> bool {
        self.cap.key() == other.cap.key()
    }
}

impl Eq for Client {}

impl Hash for Client {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.cap.key().hash(state)
    }
}

/// Settings for calls on local objects: no frame limit, panics reported in full.
fn local_reply_to() -> ReplyTo {
    ReplyTo {
        codec: AnyCodec::default(),
        expose_panics: true,
    }
}

impl Client {
    pub(crate) fn from_cap(cap: CapRef) -> Self {
        Client { cap }
    }

    /// A reference to an object served in this process. It behaves exactly like a
    /// remote one: pass it in calls and the peer gets a remote reference to it.
    pub fn from_local(object: impl Dispatch) -> Self {
        Client::from_cap(CapRef::Local(LocalObject::new(Arc::new(object))))
    }

    /// The connection a remote reference lives on; `None` for a local object.
    pub fn connection(&self) -> Option<&Connection> {
        match &self.cap {
            CapRef::Import(entry) => Some(&entry.conn),
            _ => None,
        }
    }

    /// Whether the object is served in this process.
    pub fn is_local(&self) -> bool {
        matches!(self.cap, CapRef::Local(_))
    }

    /// Gives a remote object back to its owner now instead of when the last clone is
    /// dropped (ioRPC's `unbind`). Calls through any clone then fail with
    /// [`RpcError::Released`]. Does nothing on a local object.
    pub fn release(&self) {
        if let CapRef::Import(entry) = &self.cap {
            entry.release();
        }
    }

    /// Stops a local object from serving calls, wherever it was handed: peers holding
    /// it get [`RpcError::Revoked`] (a client ending its subscription even if the
    /// server never drops the callback). Does nothing on a remote reference.
    pub fn revoke(&self) {
        if let CapRef::Local(obj) = &self.cap {
            obj.revoke();
        }
    }

    /// Resolves once calls through this reference can no longer succeed: for a remote
    /// object, when its connection ends. A local object never closes.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let closed = self.connection().map(Connection::closed);
        let cap = self.cap.clone();
        async move {
            let revoked = async {
                match cap.revocation() {
                    Some(revocation) => revocation.revoked().await,
                    None => std::future::pending().await,
                }
            };
            let closed = async {
                match closed {
                    Some(closed) => closed.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = revoked => {}
                () = closed => {}
            }
        }
    }

    /// Whether calls through this reference can no longer succeed: released,
    /// revoked (here, or by its owner on the other side), or its connection ended.
    pub fn is_closed(&self) -> bool {
        match &self.cap {
            CapRef::Local(obj) => obj.is_revoked(),
            CapRef::Import(entry) => {
                entry.is_released() || entry.is_revoked() || entry.conn.is_closed()
            }
            CapRef::Promise(answer) => answer.conn.is_closed(),
            CapRef::Later(_) => false,
            CapRef::Broken(_) => true,
        }
    }

    /// Sends a call of `method` with the argument tuple `args`; the returned future
    /// yields its result as `S` prescribes.
    pub fn call<A: Serialize + ?Sized, S: Shape>(
        &self,
        method: &'static Method,
        args: &A,
    ) -> Call<S> {
        match self.remote() {
            Ok(Some((conn, target))) => {
                let message = match encode_for(conn, args) {
                    Ok(message) => message,
                    Err(e) => return Call::failed(method, e),
                };
                tracing::trace!(method = method.name, "call");
                let outgoing = Outgoing::Call {
                    target,
                    method: method.id,
                };
                match conn.ask(outgoing, message) {
                    Ok(question) => {
                        let mut call = Call::new(method, State::Remote(question));
                        call.deadline = conn
                            .config()
                            .call_timeout
                            .map(|limit| Instant::now() + limit);
                        call
                    }
                    Err(e) => Call::failed(method, e),
                }
            }
            Ok(None) => match self.local(method, args, true) {
                Ok(handler) => Call::new(method, start_local(handler)),
                Err(e) => Call::failed(method, e),
            },
            Err(e) => Call::failed(method, e),
        }
    }

    /// Sends a one-way call: no reply. It is delivered in order with the other calls
    /// on this reference. Fails only if it cannot be sent.
    pub fn send<A: Serialize + ?Sized>(
        &self,
        method: &'static Method,
        args: &A,
    ) -> Result<(), RpcError> {
        match self.remote()? {
            Some((conn, target)) => {
                let message = encode_for(conn, args)?;
                tracing::trace!(method = method.name, "send");
                conn.send(target, method.id, message)
            }
            None => {
                let handler = self.local(method, args, false)?;
                run_detached(handler);
                Ok(())
            }
        }
    }

    /// Where calls on a remote reference go; `None` for references served here.
    fn remote(&self) -> Result<Option<(&Connection, Target)>, RpcError> {
        match &self.cap {
            CapRef::Import(entry) if entry.is_released() => Err(RpcError::Released),
            CapRef::Import(entry) if entry.is_revoked() => Err(RpcError::Revoked),
            CapRef::Import(entry) => Ok(Some((&entry.conn, Target::Export(entry.id)))),
            CapRef::Promise(answer) => Ok(Some((&answer.conn, Target::Answer(answer.question)))),
            CapRef::Local(_) | CapRef::Later(_) | CapRef::Broken(_) => Ok(None),
        }
    }

    /// Builds the handler of a call on a local object.
    fn local<A: Serialize + ?Sized>(
        &self,
        method: &'static Method,
        args: &A,
        wants_reply: bool,
    ) -> Result<Handler, RpcError> {
        let reply = local_reply_to();
        let message = encode_message(reply.codec, args)?;
        Ok(self.cap.dispatch(Incoming {
            method: method.id,
            payload: message.payload,
            caps: message.caps,
            codec: message.codec,
            wants_reply,
            reply,
            context: None,
        }))
    }

    pub(crate) fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        cap::serialize_cap(&self.cap, serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        cap::deserialize_cap(deserializer).map(Client::from_cap)
    }
}

/// Encodes arguments for a connection, refusing at once what cannot fit its frame
/// limit whatever the header. The exact check, with the real header, is made by the
/// connection task when it completes the frame.
fn encode_for<A: Serialize + ?Sized>(conn: &Connection, args: &A) -> Result<Message, RpcError> {
    let message = encode_message(conn.codec(), args)?;
    let limit = conn.max_frame_size();
    let least = message.payload.len() + MIN_FRAME_OVERHEAD;
    if least > limit {
        return Err(RpcError::FrameTooLarge { size: least, limit });
    }
    Ok(message)
}

/// Starts a local handler at once, so local calls start in the order they are made,
/// as remote ones do; spawns it if it has to wait, so it runs whether or not the
/// caller polls.
fn start_local(mut handler: Handler) -> State {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match handler.as_mut().poll(&mut cx) {
        Poll::Ready(reply) => State::Ready(reply),
        Poll::Pending => {
            let later = LaterCap::new();
            let resolves = Arc::downgrade(&later);
            let task = tokio::spawn(async move {
                let reply = handler.await;
                if let Some(later) = resolves.upgrade() {
                    later.resolve(&reply);
                }
                reply
            });
            later.set_task(task.abort_handle());
            State::Spawned(task, later)
        }
    }
}

/// Starts a local one-way call at once, like [`start_local`]; nothing waits for it,
/// so if it has to wait it runs in a task of its own until done.
fn run_detached(mut handler: Handler) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if handler.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(handler);
    }
}

/// A call returning `T`: `.await` it for `Result<T, RpcError>`.
///
/// When `T` is a client type, the promise also *is* that client (it derefs to it):
/// call its methods right away and they are sent at once, pipelined on the answer,
/// without waiting for it: `root.child("a").child("b").next().await` costs one round
/// trip. [`Call::pipelined`] gives an owned handle to pass as an argument.
pub type Promise<T> = Call<Plain<T>>;

/// A call returning `Result<T, E>`: `.await` it for `Result<T, CallError<E>>`.
/// Pipelines like [`Promise`] when `T` is a client type; if the call returns an
/// application error, pipelined calls fail with [`RpcError::PromiseFailed`].
pub type TryPromise<T, E> = Call<Fallible<T, E>>;

/// The future of one call; yields `S::Output` (`Result<T, RpcError>` or
/// `Result<T, CallError<E>>`). Usually named through [`Promise`] and [`TryPromise`].
///
/// Dropping it before it completes tells the object the answer is no longer wanted:
/// a remote peer drops the handler at its next `.await` (unless calls pipelined on
/// the answer still need it), a local handler is aborted.
#[must_use = "the call is sent, but its result is lost unless awaited"]
pub struct Call<S: Shape> {
    state: State,
    method: &'static Method,
    /// The client calls are pipelined through, made on first use.
    promised: OnceLock<Box<S::Ok>>,
    /// When the call times out, if it has a limit.
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    _shape: PhantomData<fn() -> S>,
}

enum State {
    Failed(RpcError),
    Remote(Question),
    Ready(Reply),
    Spawned(JoinHandle<Reply>, Arc<LaterCap>),
    Done,
}

impl<S: Shape> Call<S> {
    fn new(method: &'static Method, state: State) -> Self {
        Call {
            state,
            method,
            promised: OnceLock::new(),
            deadline: None,
            sleep: None,
            _shape: PhantomData,
        }
    }

    pub(crate) fn failed(method: &'static Method, error: RpcError) -> Self {
        Call::new(method, State::Failed(error))
    }

    /// The capability the answer will hold, for pipelining.
    fn promised_cap(&self) -> CapRef {
        match &self.state {
            State::Remote(question) => CapRef::Promise(question.answer()),
            State::Ready(reply) => reply.promised_cap(),
            State::Spawned(_, later) => CapRef::Later(later.clone()),
            State::Failed(e) => CapRef::Broken(WireError::PromiseFailed(e.to_string())),
            State::Done => CapRef::Broken(WireError::PromiseFailed("already awaited".into())),
        }
    }

    fn promised_client<T: RemoteClient>(&self) -> &T
    where
        S: Shape<Ok = T>,
    {
        self.promised
            .get_or_init(|| Box::new(T::from_client(Client::from_cap(self.promised_cap()))))
    }
}

impl<S: Shape> Call<S> {
    /// An owned handle to the client this call will return, usable now: calls on it
    /// are pipelined, and it can be passed as an argument before the call resolves
    /// (the receiver gets the resolved capability).
    ///
    /// The bound sits on the method rather than the `impl`, so that using it on a
    /// call that returns a plain value says "`u64` is not a farcall client type".
    pub fn pipelined(&self) -> S::Ok
    where
        S::Ok: RemoteClient,
    {
        self.promised_client().clone()
    }
}

impl<T: RemoteClient> Deref for Call<Plain<T>> {
    type Target = T;

    fn deref(&self) -> &T {
        self.promised_client()
    }
}

impl<T: RemoteClient, E> Deref for Call<Fallible<T, E>>
where
    Fallible<T, E>: Shape<Ok = T>,
{
    type Target = T;

    fn deref(&self) -> &T {
        self.promised_client()
    }
}

impl<S: Shape> Future for Call<S> {
    type Output = S::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<S::Output> {
        let this = &mut *self;
        let output = this.poll_reply(cx);
        if output.is_pending() {
            if let Some(deadline) = this.deadline {
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    // Dropping the state tells the callee (or the local task) to stop.
                    this.stop();
                    return Poll::Ready(S::failed(RpcError::Timeout));
                }
            }
        }
        output
    }
}

impl<S: Shape> Call<S> {
    /// Limits how long this call may take, overriding the connection's
    /// [`call_timeout`](crate::Config::call_timeout): after `limit` it yields
    /// [`RpcError::Timeout`] and the callee is told to stop.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.deadline = Some(Instant::now() + limit);
        self.sleep = None;
        self
    }

    /// Gives up on the call: the callee is told to stop, unless calls pipelined on
    /// its result still need it. (A remote question sends `Finish` when dropped; a
    /// local task stops when the last reference to its promise goes, see `LaterCap`.)
    fn stop(&mut self) {
        self.promised.take();
        self.state = State::Done;
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<S::Output> {
        let reply = match &mut self.state {
            State::Remote(question) => ready!(Pin::new(question).poll(cx)),
            State::Spawned(task, _) => {
                let joined = ready!(Pin::new(task).poll(cx));
                joined.map_err(|e| {
                    if e.is_panic() {
                        RpcError::RemotePanic(None)
                    } else {
                        RpcError::disconnected("local handler cancelled")
                    }
                })
            }
            // Already settled when the call was made: take the value out.
            State::Ready(_) | State::Failed(_) => {
                match std::mem::replace(&mut self.state, State::Done) {
                    State::Ready(reply) => Ok(reply),
                    State::Failed(e) => Err(e),
                    _ => unreachable!("matched just above"),
                }
            }
            State::Done => panic!("`Call` polled after completion"),
        };
        self.state = State::Done;
        let output = reply.and_then(|reply| decode_reply::<S>(self.method, reply));
        Poll::Ready(output.unwrap_or_else(S::failed))
    }
}

impl<S: Shape> Drop for Call<S> {
    fn drop(&mut self) {
        // A dropped `Question` sends `Finish` itself.
        self.stop();
    }
}
