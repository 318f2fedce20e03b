//! One client hands a capability to another through a host:
//! `cargo run --example delegation`.
//!
//! From the CapNode seed: a host serves an index that each client requests, and "one
//! client of a host can now pass its method access to another client". Host H
//! serves clients A and B, each on its own connection. A gets a `Document` created
//! by H and shares it through H; B picks it up and calls it, and the call runs on H.
//! When A passes H's document back to H, H gets its own local object, not a proxy.
//! A can also share a document of its own: B's calls then run on A, forwarded by H.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use farcall::{Connection, RemoteClient};

#[farcall::remote]
pub trait Host {
    /// Creates a document on the host and returns a capability to it.
    async fn create(&self, title: String) -> DocumentClient;
    /// Keeps `doc` for other clients; returns whether it is the host's own object.
    async fn share(&self, doc: DocumentClient) -> bool;
    /// The document shared last, if any.
    async fn shared(&self) -> Option<DocumentClient>;
}

#[farcall::remote]
pub trait Document {
    /// Appends a line; returns how many lines there are.
    async fn append(&self, line: String) -> usize;
    /// The whole text.
    async fn read(&self) -> String;
}

/// A document; `side` says where it lives, so each call prints where it runs.
struct Doc {
    side: &'static str,
    lines: Mutex<Vec<String>>,
}

impl Doc {
    fn client(side: &'static str) -> DocumentClient {
        let lines = Mutex::default();
        DocumentClient::from_local(Doc { side, lines })
    }
}

impl Document for Doc {
    async fn append(&self, line: String) -> usize {
        println!("  [{}] runs Document::append({line:?})", self.side);
        let mut lines = self.lines.lock().expect("not poisoned");
        lines.push(line);
        lines.len()
    }
    async fn read(&self) -> String {
        println!("  [{}] runs Document::read()", self.side);
        self.lines.lock().expect("not poisoned").join("\n")
    }
}

/// The index H serves to every client.
#[derive(Default)]
struct Index {
    shared: Mutex<Option<DocumentClient>>,
}

impl Host for Index {
    async fn create(&self, title: String) -> DocumentClient {
        println!("  [H] runs Host::create({title:?})");
        Doc::client("H")
    }
    async fn share(&self, doc: DocumentClient) -> bool {
        let own = doc.client().is_local();
        println!("  [H] runs Host::share: the document is H's own local object: {own}");
        *self.shared.lock().expect("not poisoned") = Some(doc);
        own
    }
    async fn shared(&self) -> Option<DocumentClient> {
        println!("  [H] runs Host::shared");
        self.shared.lock().expect("not poisoned").clone()
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // H: one index object, one builder, one memory pair per client.
    let builder = Connection::builder().root(HostServer::from_arc(Arc::new(Index::default())));
    let (h_a, a_end) = farcall::transport::memory();
    let (h_b, b_end) = farcall::transport::memory();
    let (_h_a, _h_b) = (builder.connect(h_a), builder.connect(h_b));
    let (conn_a, conn_b) = (
        Connection::builder().connect(a_end),
        Connection::builder().connect(b_end),
    );

    // Each client requests H's index (CapNode's `requestIndex`).
    let host_a: HostClient = conn_a.root().await?;
    let host_b: HostClient = conn_b.root().await?;

    println!("[A] creates a document on H, writes to it and shares it");
    let doc = host_a.create("plan".into()).await?;
    assert!(!doc.client().is_local());
    assert_eq!(doc.append("from A".into()).await?, 1);
    assert!(
        host_a.share(doc.clone()).await?,
        "H got its own object back"
    );

    println!("[B] picks the document up from H and calls it");
    let for_b = host_b.shared().await?.expect("A shared one");
    assert_eq!(for_b.append("from B".into()).await?, 2);
    let text = doc.read().await?;
    println!("[A] reads {text:?}: B's line too, it is one object");
    assert_eq!(text, "from A\nfrom B");

    println!("[A] shares a document of its own");
    let mine = Doc::client("A");
    assert!(
        !host_a.share(mine.clone()).await?,
        "to H it is A's, not H's"
    );
    println!("[B] calls it through H");
    let for_b = host_b.shared().await?.expect("A shared one");
    assert_eq!(for_b.append("B wrote on A's".into()).await?, 1);
    let text = mine.read().await?;
    println!("[A] reads its own document: {text:?}");
    assert_eq!(text, "B wrote on A's"); // B's call ran on A

    conn_a.close().await;
    conn_b.close().await;
    println!("done");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(20), run()).await??;
    Ok(())
}
