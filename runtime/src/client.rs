//! The calling side, above the connection: typed clients ([`RemoteClient`]), the
//! calls a [`Client`] makes, the root a connection bootstraps, and the future of
//! each call (`call.rs`).
//!
//! Generated `{Trait}Client` types wrap a [`Client`]; each method encodes its
//! arguments right away (so calls go out in the order they are made, whether or not
//! their futures are awaited yet) and returns a [`Call`].

mod call;

use std::future::Future;
use std::sync::Arc;
use std::task::Context;

use tokio::time::Instant;

use serde::Serialize;

use self::call::{start_local, State};
pub use self::call::{Call, Promise, TryPromise};
use crate::cap::{encode_message, CapRef, Client, Handler, Incoming, Message, ReplyTo};
use crate::codec::AnyCodec;
use crate::connection::{Connection, Outgoing, Refusals};
use crate::error::RpcError;
use crate::interface::{Interface, Method};
use crate::shape::{decode_reply, Plain, Shape};
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

/// Settings for calls on local objects: no frame limit, panics reported in full.
fn local_reply_to() -> ReplyTo {
    ReplyTo {
        codec: AnyCodec::default(),
        expose_panics: true,
    }
}

impl Client {
    /// Sends a call of `method` with the argument tuple `args`; the returned future
    /// yields its result as `S` prescribes.
    pub fn call<A: Serialize + ?Sized, S: Shape>(
        &self,
        method: &'static Method,
        args: &A,
    ) -> Call<S> {
        match self.remote() {
            Ok(Some((conn, target))) => {
                let message = match encode_for(conn, method, args) {
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
        self.send_watched(method, args, None)
    }

    /// [`send`](Self::send), telling `refusals` if the connection refuses the call
    /// after it left (too many objects exported, a frame too large).
    pub(crate) fn send_watched<A: Serialize + ?Sized>(
        &self,
        method: &'static Method,
        args: &A,
        refusals: Option<&Arc<Refusals>>,
    ) -> Result<(), RpcError> {
        match self.remote()? {
            Some((conn, target)) => {
                let message = encode_for(conn, method, args)?;
                tracing::trace!(method = method.name, "send");
                conn.send(target, method.id, message, refusals.cloned())
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
}

/// Encodes arguments for a connection, refusing at once what cannot fit its frame
/// limit whatever the header. The exact check, with the real header, is made by the
/// connection task when it completes the frame.
fn encode_for<A: Serialize + ?Sized>(
    conn: &Connection,
    method: &'static Method,
    args: &A,
) -> Result<Message, RpcError> {
    // A Cap'n Web peer is called by name: its translator looks the name up. The
    // stream protocol's calls are the translator's to answer, never by name.
    #[cfg(feature = "capnweb")]
    if conn.codec() == crate::codec::AnyCodec::CapnWeb && !crate::stream::is_protocol_method(method)
    {
        crate::interface::by_name::remember(method);
    }
    #[cfg(not(feature = "capnweb"))]
    let _ = method;
    let message = encode_message(conn.codec(), args)?;
    let limit = conn.max_frame_size();
    let least = message.payload.len() + MIN_FRAME_OVERHEAD;
    if least > limit {
        return Err(RpcError::FrameTooLarge { size: least, limit });
    }
    Ok(message)
}

/// Starts a local one-way call at once, like [`start_local`]; nothing waits for it,
/// so if it has to wait it runs in a task of its own until done.
fn run_detached(mut handler: Handler) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if handler.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(handler);
    }
}

/// The bootstrap pseudo-method, for error messages.
static BOOTSTRAP: Method = Method {
    interface: "(bootstrap)",
    name: "root",
    id: 0,
};

impl Connection {
    /// Asks the peer for its root object as client type `C`.
    ///
    /// Fails with [`RpcError::WrongInterface`] (naming both interfaces) if the peer's
    /// root implements another trait, and [`RpcError::NoRoot`] if it offers none. A
    /// peer built from another version of the same trait is accepted; methods it does
    /// not have fail with [`RpcError::MethodNotFound`] when called.
    pub async fn root<C: RemoteClient>(&self) -> Result<C, RpcError> {
        let interface = C::INTERFACE;
        let outgoing = Outgoing::Bootstrap {
            interface: interface.name.to_owned(),
            fingerprint: interface.fingerprint,
        };
        let message = Message {
            payload: Default::default(),
            caps: Vec::new(),
            codec: self.codec(),
        };
        let question = self.ask(outgoing, message)?;
        let reply = tokio::time::timeout(self.config().handshake_timeout, question)
            .await
            .map_err(|_| RpcError::Timeout)??;
        let cap = reply.caps.first().cloned();
        match decode_reply::<Plain<()>>(&BOOTSTRAP, reply).and_then(|r| r) {
            Ok(()) => match cap {
                Some(cap) => Ok(C::from_client(Client::from_cap(cap))),
                None => Err(RpcError::BadMessage(
                    "bootstrap returned no capability".into(),
                )),
            },
            Err(RpcError::WrongInterface { found, .. }) => Err(RpcError::WrongInterface {
                expected: interface.name.to_owned(),
                found,
            }),
            Err(e) => Err(e),
        }
    }
}
