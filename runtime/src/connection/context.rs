//! The call context: which connection the running handler serves.

use crate::connection::Connection;

tokio::task_local! {
    pub(crate) static CONTEXT: CallContext;
}

/// What a handler knows about the call it is serving, available through
/// [`CallContext::current`] while the handler runs.
///
/// Through [`connection`](Self::connection) a server object shared by many peers can
/// reach the peer that called it, for example to ask for that peer's root and call
/// back (ioRPC's `this.remoteApi`).
///
/// ```
/// # use farcall::{CallContext, RpcError};
/// #[farcall::remote]
/// pub trait Greeter {
///     async fn hello(&self) -> u64;
/// }
/// struct G;
/// impl Greeter for G {
///     async fn hello(&self) -> u64 {
///         let cx = CallContext::current().expect("inside a handler");
///         cx.connection().id()
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), RpcError> {
/// let (a, b) = farcall::transport::memory();
/// let server = farcall::Connection::builder().root(GreeterServer::new(G)).connect(a);
/// let client = farcall::Connection::builder().connect(b).root::<GreeterClient>().await?;
/// assert_eq!(client.hello().await?, server.id());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CallContext {
    pub(crate) connection: Connection,
}

impl CallContext {
    /// The context of the handler running on this task, or `None` outside a handler
    /// (and in a call made on a local object, which has no connection).
    pub fn current() -> Option<CallContext> {
        CONTEXT.try_with(Clone::clone).ok()
    }

    /// The connection the call arrived on.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}
