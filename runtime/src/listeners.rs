//! A set of callbacks to notify: dynobot's event handlers, leak-free.

use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::callback::Callback;
use crate::error::RpcError;

/// Callbacks registered by peers, notified together.
///
/// Registering the same callback twice keeps one entry (a peer sending the same
/// callback twice sends the same identity), [`remove`](Self::remove) finds it by
/// identity, and callbacks whose connection closed (or that were released or
/// revoked) are forgotten automatically: [`len`](Self::len) and every emit prune
/// them, so a client's handlers disappear when it disconnects.
///
/// ```
/// # use farcall::{Callback, Listeners};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let listeners: Listeners<String> = Listeners::new();
/// let hello = Callback::new(|s: String| async move { println!("got {s}") });
/// assert!(listeners.add(hello.clone()));
/// assert!(!listeners.add(hello.clone()), "same identity, one entry");
/// assert_eq!(listeners.emit(&"news".to_string()), 1);
/// assert!(listeners.remove(&hello));
/// assert!(listeners.is_empty());
/// # }
/// ```
#[derive(Debug)]
pub struct Listeners<A, R = ()> {
    list: Mutex<Vec<Callback<A, R>>>,
}

impl<A, R> Default for Listeners<A, R> {
    fn default() -> Self {
        Listeners {
            list: Mutex::new(Vec::new()),
        }
    }
}

impl<A, R> Listeners<A, R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Callback<A, R>>> {
        // A panic elsewhere while holding the lock leaves a valid list behind.
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|cb| !cb.is_closed());
        list
    }

    /// Registers `callback`; returns `false` if it was already registered.
    pub fn add(&self, callback: Callback<A, R>) -> bool {
        let mut list = self.live();
        if list.contains(&callback) {
            return false;
        }
        list.push(callback);
        true
    }

    /// Unregisters `callback` (found by identity); returns whether it was there.
    pub fn remove(&self, callback: &Callback<A, R>) -> bool {
        let mut list = self.live();
        let before = list.len();
        list.retain(|cb| cb != callback);
        list.len() != before
    }

    /// How many live callbacks are registered.
    pub fn len(&self) -> usize {
        self.live().len()
    }

    /// Whether no live callback is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `args` to every live callback without waiting (one-way, in order with
    /// other calls on each callback); returns how many it was sent to.
    pub fn emit(&self, args: &A) -> usize {
        let mut list = self.live();
        list.retain(|cb| cb.send(args).is_ok());
        list.len()
    }

    /// Calls every live callback with `args` and waits for all of them; callbacks that
    /// fail because they are gone (disconnected, released, revoked) are removed.
    /// Returns each result, in registration order.
    pub async fn call_all(&self, args: &A) -> Vec<Result<R, RpcError>>
    where
        A: Clone,
    {
        let calls: Vec<_> = self
            .live()
            .iter()
            .map(|cb| (cb.clone(), cb.call(args.clone())))
            .collect();
        let mut results = Vec::with_capacity(calls.len());
        let mut gone = Vec::new();
        for (cb, call) in calls {
            let result = call.await;
            if matches!(
                result,
                Err(RpcError::Disconnected(_)
                    | RpcError::Released
                    | RpcError::Revoked
                    | RpcError::ObjectNotFound)
            ) {
                gone.push(cb);
            }
            results.push(result);
        }
        if !gone.is_empty() {
            self.live().retain(|cb| !gone.contains(cb));
        }
        results
    }
}
