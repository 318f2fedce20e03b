//! A server and a client over loopback TCP, in one program.
//!
//! ```text
//! cargo run --example tcp -- serve 127.0.0.1:7070     # in one terminal
//! cargo run --example tcp -- call 127.0.0.1:7070      # in another
//! cargo run --example tcp                             # both, in one process
//! ```
//!
//! The client offers a root of its own (`Notes`), and the server calls it back while
//! serving a call: connections are symmetric.

use std::net::SocketAddr;

use farcall::{CallContext, Connection, Server};

#[farcall::remote]
pub trait Greeter {
    /// Greets `name`, and asks the caller to note that it did.
    async fn greet(&self, name: String) -> Result<String, String>;
}

#[farcall::remote]
pub trait Notes {
    /// Records a note on the caller's side.
    async fn note(&self, text: String);
}

struct Hello;

impl Greeter for Hello {
    async fn greet(&self, name: String) -> Result<String, String> {
        let caller = CallContext::current().ok_or("no call context")?;
        let notes: NotesClient = caller
            .connection()
            .root()
            .await
            .map_err(|e| e.to_string())?;
        notes
            .note(format!("greeted {name}"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("hello, {name}"))
    }
}

struct PrintNotes;

impl Notes for PrintNotes {
    async fn note(&self, text: String) {
        println!("client note: {text}");
    }
}

async fn serve(listener: tokio::net::TcpListener, stop: impl std::future::Future<Output = ()>) {
    println!("serving on {}", listener.local_addr().expect("bound"));
    let builder = Connection::builder().root(GreeterServer::new(Hello));
    Server::new(builder).serve(listener, stop).await;
}

async fn call(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let connection = Connection::builder()
        .root(NotesServer::new(PrintNotes))
        .connect_tcp(addr)
        .await?;
    let greeter: GreeterClient = connection.root().await?;
    for name in ["ada", "grace"] {
        println!("server says: {}", greeter.greet(name.to_string()).await?);
    }
    connection.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr] => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        }
        ["call", addr] => call(addr.parse()?).await?,
        [] => {
            // Both halves in one process, on a free loopback port.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(listener, async {
                let _ = stopped.await;
            }));
            call(addr).await?;
            let _ = stop.send(());
            server.await?;
        }
        _ => {
            eprintln!("usage: tcp [serve ADDR | call ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}
