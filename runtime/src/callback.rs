//! Typed closures that cross connections.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cap::{Client, Dispatch, Handler, Incoming};
use crate::client::{Promise, TryPromise};
use crate::error::RpcError;
use crate::interface::{Interface, Method};
use crate::shape::{Cancel, Fallible, Plain};

static METHODS: [Method; 1] = [Method {
    interface: "Callback",
    name: "call",
    id: 1,
}];

static INTERFACE: Interface = Interface {
    name: "Callback",
    fingerprint: 0,
    methods: &METHODS,
};

/// A typed closure that can be passed to, or returned from, a remote method.
///
/// `A` is the argument (use a tuple for several, `()` for none) and `R` the result
/// (any serde type; `()` by default). The closure runs where it was created; whoever
/// holds a `Callback` calls it like a remote method and gets `Result<R, RpcError>`.
/// Calls made through one handle start in the order they were made.
///
/// A callback is a capability like any generated client: it may sit anywhere inside
/// arguments and results, is released when the last handle on the receiving side is
/// dropped (or by [`release`](Self::release)), can be revoked by its owner
/// ([`revoke`](Self::revoke)), and the same callback sent twice arrives as equal
/// handles (equal, same hash), so a receiver can keep callbacks in a set and remove
/// them again.
///
/// ```
/// # use farcall::{Callback, Connection, RpcError};
/// #[farcall::remote]
/// pub trait Ticker {
///     /// Calls `on_tick` `n` times, then returns the sum of what it answered.
///     async fn run(&self, n: u32, on_tick: Callback<u32, u32>) -> Result<u32, String>;
/// }
/// struct T;
/// impl Ticker for T {
///     async fn run(&self, n: u32, on_tick: Callback<u32, u32>) -> Result<u32, String> {
///         let mut sum = 0;
///         for i in 0..n {
///             sum += on_tick.call(i).await.map_err(|e| e.to_string())?;
///         }
///         Ok(sum)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let (a, b) = farcall::transport::memory();
/// # let _server = Connection::builder().root(TickerServer::new(T)).connect(a);
/// # let ticker: TickerClient = Connection::builder().connect(b).root().await?;
/// let on_tick = Callback::new(|i: u32| async move { i * 10 });
/// assert_eq!(ticker.run(3, on_tick).await?, 30);
/// # Ok(()) }
/// ```
pub struct Callback<A, R = ()> {
    client: Client,
    _types: PhantomData<fn(A) -> R>,
}

/// Serves a closure as the one method of the `Callback` interface.
struct Closure<A, R, F> {
    f: F,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R, F, Fut> Dispatch for Closure<A, R, F>
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    fn interface(&self) -> &'static Interface {
        &INTERFACE
    }

    fn dispatch(&self, call: Incoming) -> Handler {
        match call.method() {
            1 => call.handle::<Plain<R>, A, _, _>(
                &METHODS[0],
                Cancel::OnDrop,
                crate::__private::no_error_text,
                |args| (self.f)(args),
            ),
            _ => call.method_not_found(&INTERFACE),
        }
    }
}

impl<A, R> Callback<A, R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Makes a callback from an async closure; it runs on this side, on the task of
    /// whoever calls it locally or on the connection's tasks for remote callers.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        Callback::from_client(Client::from_local(Closure {
            f,
            _types: PhantomData,
        }))
    }

    /// Calls the closure with `args`. Like a method call, the returned [`Promise`]
    /// is sent at once, takes a [`timeout`](crate::Call::timeout), and tells the
    /// closure to stop when dropped.
    pub fn call(&self, args: A) -> Promise<R> {
        self.client.call::<A, Plain<R>>(&METHODS[0], &args)
    }

    /// Calls the closure without waiting for it (one-way); fails only if the call
    /// cannot be sent.
    pub fn send(&self, args: &A) -> Result<(), RpcError> {
        self.client.send(&METHODS[0], args)
    }
}

impl<A, T, E> Callback<A, Result<T, E>>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize + DeserializeOwned + Send + 'static,
{
    /// Calls a closure returning `Result<T, E>`, with its error as an application
    /// error, as for methods: `Err(CallError::App(e))`.
    pub fn try_call(&self, args: A) -> TryPromise<T, E> {
        self.client.call::<A, Fallible<T, E>>(&METHODS[0], &args)
    }
}

impl<A, R> Callback<A, R> {
    pub(crate) fn from_client(client: Client) -> Self {
        Callback {
            client,
            _types: PhantomData,
        }
    }

    /// The untyped reference inside.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Gives a received callback back to its owner now (see [`Client::release`]).
    pub fn release(&self) {
        self.client.release()
    }

    /// Stops this callback from running for anyone it was handed to (see
    /// [`Client::revoke`]); only its creator can.
    pub fn revoke(&self) {
        self.client.revoke()
    }

    /// Resolves once calling this callback can no longer succeed, for example because
    /// the connection to its owner closed (see [`Client::closed`]).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.client.closed()
    }

    /// Whether calling this callback can no longer succeed.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl<A, R> Clone for Callback<A, R> {
    fn clone(&self) -> Self {
        Callback::from_client(self.client.clone())
    }
}

impl<A, R> fmt::Debug for Callback<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Callback").field(&self.client).finish()
    }
}

impl<A, R> PartialEq for Callback<A, R> {
    fn eq(&self, other: &Self) -> bool {
        self.client == other.client
    }
}

impl<A, R> Eq for Callback<A, R> {}

impl<A, R> Hash for Callback<A, R> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.client.hash(state)
    }
}

impl<A, R> Serialize for Callback<A, R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.client.serialize(serializer)
    }
}

impl<'de, A, R> Deserialize<'de> for Callback<A, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Client::deserialize(deserializer).map(Callback::from_client)
    }
}
