//! Event subscriptions that clean up after clients: `cargo run --example events`.
//!
//! From the dynobot seed: a long-lived server holds an event emitter, clients come and
//! go and register handlers on it, remove them again by passing the same function, and
//! when a client disconnects every handler it left behind disappears on its own.
//!
//! Here one `Hub` serves two clients, each on its own connection. The hub keeps a
//! `farcall::Listeners`: the same callback arrives as the same identity (so it can be
//! removed), and callbacks whose connection closed are forgotten automatically.

use std::sync::Arc;
use std::time::Duration;

use farcall::{Callback, Connection, Listeners, RpcError};
use tokio::sync::mpsc;

#[farcall::remote]
pub trait Events {
    /// Registers `on_event` (registering the same callback twice keeps one entry).
    async fn subscribe(&self, on_event: Callback<String>);
    /// Removes `on_event`, found by identity; returns whether it was registered.
    async fn unsubscribe(&self, on_event: Callback<String>) -> bool;
    /// Sends `text` to every listener; returns how many it was sent to.
    async fn publish(&self, text: String) -> usize;
    /// How many live listeners are registered.
    async fn listeners(&self) -> usize;
}

#[derive(Default)]
struct Hub(Listeners<String>);

impl Events for Hub {
    async fn subscribe(&self, on_event: Callback<String>) {
        self.0.add(on_event);
    }
    async fn unsubscribe(&self, on_event: Callback<String>) -> bool {
        self.0.remove(&on_event)
    }
    async fn publish(&self, text: String) -> usize {
        self.0.emit(&text)
    }
    async fn listeners(&self) -> usize {
        self.0.len()
    }
}

/// Connects a new client to the shared hub over its own memory pair. Returns the
/// client's connection, the hub's end of it, and the `Events` client.
async fn connect(hub: &Arc<Hub>) -> Result<(Connection, Connection, EventsClient), RpcError> {
    let (server_end, client_end) = farcall::transport::memory();
    let hub_side = Connection::builder()
        .root(EventsServer::from_arc(hub.clone()))
        .connect(server_end);
    let conn = Connection::builder().connect(client_end);
    let events = conn.root().await?;
    Ok((conn, hub_side, events))
}

/// An event handler that forwards each event into a channel, so delivery can be
/// awaited (and printed) by `next` in a fixed order.
fn handler() -> (Callback<String>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let on_event = Callback::new(move |text: String| {
        let _ = tx.send(text);
        async {}
    });
    (on_event, rx)
}

async fn next(who: &str, got: &mut mpsc::UnboundedReceiver<String>) -> String {
    let text = got.recv().await.expect("handler alive");
    println!("  {who} got {text:?}");
    text
}

async fn run() -> Result<(), RpcError> {
    let hub = Arc::new(Hub::default());
    let (conn_a, _hub_a, a) = connect(&hub).await?;
    let (conn_b, hub_b, b) = connect(&hub).await?;
    let ((on_a, mut got_a), (on_b, mut got_b)) = (handler(), handler());

    a.subscribe(on_a.clone()).await?;
    a.subscribe(on_a.clone()).await?; // same identity: still one entry
    b.subscribe(on_b.clone()).await?;
    let count = a.listeners().await?;
    println!("A and B subscribed: {count} listeners");
    assert_eq!(count, 2);
    assert_eq!(a.publish("hello".into()).await?, 2);
    assert_eq!(next("A", &mut got_a).await, "hello");
    assert_eq!(next("B", &mut got_b).await, "hello");

    // Unsubscribing passes the very same callback; the hub finds it by identity.
    assert!(a.unsubscribe(on_a.clone()).await?);
    assert!(!a.unsubscribe(on_a.clone()).await?); // already gone
    println!("A unsubscribed");
    assert_eq!(b.publish("only B".into()).await?, 1);
    assert_eq!(next("B", &mut got_b).await, "only B");
    assert!(got_a.try_recv().is_err(), "A no longer listens");

    // B goes away without unsubscribing; its handler must not linger in the hub.
    let before = a.listeners().await?;
    println!("before B disconnects: {before} listener(s)");
    conn_b.abort().await;
    hub_b.closed().await; // the hub's end of B's connection has ended too
    let after = a.listeners().await?;
    println!("after B disconnected: {after} listener(s)");
    assert_eq!((before, after), (1, 0));
    assert_eq!(a.publish("anyone?".into()).await?, 0);
    conn_a.close().await;
    println!("done: no listener leaked");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(20), run()).await??;
    Ok(())
}
