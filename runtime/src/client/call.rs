//! The future of one call ([`Call`], named [`Promise`] and [`TryPromise`]): its
//! result, its deadline, and the client that calls on it are pipelined through.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::RemoteClient;
use crate::cap::{CapRef, Client, Handler, LaterCap, Reply};
use crate::connection::Question;
use crate::error::{RpcError, WireError};
use crate::interface::Method;
use crate::shape::{decode_reply, Fallible, Plain, Shape};

/// Starts a local handler at once, so local calls start in the order they are made,
/// as remote ones do; spawns it if it has to wait, so it runs whether or not the
/// caller polls.
pub(super) fn start_local(mut handler: Handler) -> State {
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
    pub(super) deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    _shape: PhantomData<fn() -> S>,
}

pub(super) enum State {
    Failed(RpcError),
    Remote(Question),
    Ready(Reply),
    Spawned(JoinHandle<Reply>, Arc<LaterCap>),
    Done,
}

impl<S: Shape> Call<S> {
    pub(super) fn new(method: &'static Method, state: State) -> Self {
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

impl<S: Shape> fmt::Debug for Call<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed(e) => format!("failed: {e}"),
            State::Remote(_) => "sent".to_string(),
            State::Ready(_) => "answered".to_string(),
            State::Spawned(..) => "running locally".to_string(),
            State::Done => "done".to_string(),
        };
        f.debug_struct("Call")
            .field(
                "method",
                &format_args!("{}.{}", self.method.interface, self.method.name),
            )
            .field("state", &state)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<S: Shape> Drop for Call<S> {
    fn drop(&mut self) {
        // A dropped `Question` sends `Finish` itself.
        self.stop();
    }
}
