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

use farcall::{Callback, Connection, Listeners};
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

/// One client: its connection (and the hub's end of it), the hub, its callback, and
/// the channel that callback forwards events into.
struct Peer {
    conn: Connection,
    server_side: Connection,
    events: EventsClient,
    on_event: Callback<String>,
    got: mpsc::UnboundedReceiver<String>,
}

/// Connects a client named `name` to the shared hub over its own memory pair. Its
/// callback reports each event into `got`, where `run` awaits (and prints) it.
async fn connect(hub: &Arc<Hub>, name: &'static str) -> Result<Peer, farcall::RpcError> {
    let (server_end, client_end) = farcall::transport::memory();
    let server_side = Connection::builder()
        .root(EventsServer::from_arc(hub.clone()))
        .connect(server_end);
    let conn = Connection::builder().connect(client_end);
    let events: EventsClient = conn.root().await?;
    let (tx, got) = mpsc::unbounded_channel();
    let on_event = Callback::new(move |text: String| {
        let _ = tx.send(format!("{name} got {text:?}"));
        async {}
    });
    Ok(Peer {
        conn,
        server_side,
        events,
        on_event,
        got,
    })
}

async fn run() -> Result<(), farcall::RpcError> {
    let hub = Arc::new(Hub::default());
    let mut a = connect(&hub, "A").await?;
    let mut b = connect(&hub, "B").await?;

    a.events.subscribe(a.on_event.clone()).await?;
    a.events.subscribe(a.on_event.clone()).await?; // same identity: still one entry
    b.events.subscribe(b.on_event.clone()).await?;
    let count = a.events.listeners().await?;
    println!("A and B subscribed: {count} listeners");
    assert_eq!(count, 2);

    assert_eq!(a.events.publish("hello".into()).await?, 2);
    for peer in [&mut a, &mut b] {
        let got = peer.got.recv().await.expect("delivered");
        println!("  {got}");
        assert!(got.ends_with("got \"hello\""));
    }

    // Unsubscribing passes the very same callback; the hub finds it by identity.
    assert!(a.events.unsubscribe(a.on_event.clone()).await?);
    assert!(
        !a.events.unsubscribe(a.on_event.clone()).await?,
        "already gone"
    );
    println!("A unsubscribed");
    assert_eq!(b.events.publish("only B".into()).await?, 1);
    let got = b.got.recv().await.expect("delivered");
    println!("  {got}");
    assert_eq!(got, "B got \"only B\"");
    assert!(a.got.try_recv().is_err(), "A no longer listens");

    // B goes away without unsubscribing; its callback must not linger in the hub.
    let before = a.events.listeners().await?;
    println!("before B disconnects: {before} listener(s)");
    b.conn.abort().await;
    b.server_side.closed().await; // the hub's end of B's connection has ended too
    let after = a.events.listeners().await?;
    println!("after B disconnected: {after} listener(s)");
    assert_eq!((before, after), (1, 0));
    assert_eq!(a.events.publish("anyone?".into()).await?, 0);
    a.conn.close().await;
    println!("done: no listener leaked");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(20), run()).await??;
    Ok(())
}
