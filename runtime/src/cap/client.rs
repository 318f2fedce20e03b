//! [`Client`]: the untyped reference to an object, local or remote, that generated
//! clients and callbacks wrap. Its calls are made in the `client` module, above the
//! connection; here it is only a capability with an identity.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserializer, Serializer};

use super::{CapRef, Dispatch, LocalObject};
use crate::connection::Connection;

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
    /// [`RpcError::Released`](crate::RpcError::Released). Does nothing on a local object.
    pub fn release(&self) {
        if let CapRef::Import(entry) = &self.cap {
            entry.release();
        }
    }

    /// Stops a local object from serving calls, wherever it was handed: peers holding
    /// it get [`RpcError::Revoked`](crate::RpcError::Revoked) (a client ending its subscription even if the
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

    pub(crate) fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        super::serialize_cap(&self.cap, serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        super::deserialize_cap(deserializer).map(Client::from_cap)
    }
}
