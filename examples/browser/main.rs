//! A web page calling Rust: serves a page and the Cap'n Web endpoint with axum on
//! 127.0.0.1. The page, using the npm `capnweb` client in the browser, shows a
//! counter the server pushes through a callback the page passed it, and calls a
//! pipelined chain, `api.user(name).greeting()`, in one round trip.
//!
//! ```text
//! cargo run --example browser                # then open the printed URL
//! cargo run --example browser -- 9000        # another port (or PORT=9000)
//! cargo run --example browser -- --check     # serve, test itself over HTTP, exit
//! ```
//!
//! The page loads the `capnweb` module from `tests/js/node_modules` (run
//! `npm ci` in `tests/js` once) or from the file `FARCALL_CAPNWEB_JS` names.
//! `tests/js/browser.test.mjs` opens it in headless Chromium.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use farcall::{Callback, Connection, Stream, StreamSender};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the page calls.
#[farcall::remote]
pub trait Demo {
    /// Calls `on_count` with 1, 2, 3... every `TICK` until the page goes away.
    async fn watch(&self, on_count: Callback<u32>);
    /// A user, to ask for a greeting.
    async fn user(&self, name: String) -> UserClient;
    /// The letters of `word`, one every `TICK / 5`: a `ReadableStream` in the page.
    async fn spell(&self, word: String) -> Stream<String>;
    /// The words the page streams, in capitals, joined with spaces.
    async fn shout(&self, words: Stream<String>) -> Result<String, String>;
    /// Writes the letters of `word`, last first, into the page's `WritableStream`.
    async fn mirror(&self, word: String, out: StreamSender<String>);
}

/// Someone to greet.
#[farcall::remote]
pub trait User {
    /// A greeting for this user.
    async fn greeting(&self) -> String;
}

/// How often the counter moves.
const TICK: Duration = Duration::from_millis(500);

struct Server;

impl Demo for Server {
    async fn watch(&self, on_count: Callback<u32>) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            ticks.tick().await;
            for n in 1.. {
                ticks.tick().await;
                // The page is gone (or its function threw): stop.
                if on_count.call(n).await.is_err() {
                    break;
                }
            }
        });
    }

    async fn user(&self, name: String) -> UserClient {
        UserClient::from_local(Named(name))
    }

    async fn spell(&self, word: String) -> Stream<String> {
        let (letters, stream) = Stream::channel(4);
        tokio::spawn(async move {
            for letter in word.chars() {
                tokio::time::sleep(TICK / 5).await;
                // The page stopped reading: stop.
                if letters.send(letter.to_string()).await.is_err() {
                    break;
                }
            }
        });
        stream
    }

    async fn mirror(&self, word: String, out: StreamSender<String>) {
        for letter in word.chars().rev() {
            tokio::time::sleep(TICK / 5).await;
            // The page's stream failed or went away: stop.
            if out.send(letter.to_string()).await.is_err() {
                break;
            }
        }
        // Dropping `out` closes the page's stream.
    }

    async fn shout(&self, mut words: Stream<String>) -> Result<String, String> {
        let mut shouted = Vec::new();
        while let Some(word) = words.next().await {
            shouted.push(word.map_err(|e| e.to_string())?.to_uppercase());
        }
        Ok(shouted.join(" "))
    }
}

struct Named(String);

impl User for Named {
    async fn greeting(&self) -> String {
        format!("Hello, {}! (from Rust)", self.0)
    }
}

/// The `capnweb` ES module the page imports.
fn capnweb_js() -> PathBuf {
    std::env::var_os("FARCALL_CAPNWEB_JS").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/js/node_modules/capnweb/dist/index.js")
        },
        PathBuf::from,
    )
}

fn javascript(body: impl IntoResponse) -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], body).into_response()
}

fn app(capnweb: String) -> axum::Router {
    let builder = Connection::builder().root(DemoServer::new(Server));
    axum::Router::new()
        .route("/", get(|| async { Html(include_str!("index.html")) }))
        .route(
            "/app.js",
            get(|| async { javascript(include_str!("app.js")) }),
        )
        .route(
            "/capnweb.js",
            get(move || async move { javascript(capnweb) }),
        )
        .route("/rpc", farcall::capnweb::axum::routes(builder))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut check = false;
    let mut port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            other => {
                port = other.parse().map_err(|_| {
                    std::io::Error::other(format!("usage: browser [PORT] [--check], not `{other}`"))
                })?
            }
        }
    }
    let path = capnweb_js();
    let capnweb = std::fs::read_to_string(&path).map_err(|e| {
        std::io::Error::other(format!(
            "cannot read the capnweb module at {} ({e}): run `npm ci` in tests/js, \
             or set FARCALL_CAPNWEB_JS",
            path.display()
        ))
    })?;
    // The check takes any free port, so it runs beside a server on 8080.
    let listener = TcpListener::bind(("127.0.0.1", if check { 0 } else { port })).await?;
    let addr = listener.local_addr()?;
    println!("serving http://{addr}/");
    let server = axum::serve(listener, app(capnweb));
    if !check {
        return server.await;
    }
    let serving = tokio::spawn(async move { server.await });
    let checked = tokio::time::timeout(Duration::from_secs(30), self_test(addr)).await;
    serving.abort();
    match checked {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other("the self-test took longer than 30 s")),
    }
}

/// Fetches the page and its scripts, and calls the pipelined chain over HTTP batch
/// (one request carrying both calls), as the page does over WebSocket.
async fn self_test(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let expect = |what: &str, body: &str, text: &str| {
        if body.contains(text) {
            println!("ok: {what}");
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "{what}: no `{text}` in {body}"
            )))
        }
    };
    expect(
        "page",
        &http(addr, "GET", "/", "").await?,
        "<script type=\"module\" src=\"/app.js\">",
    )?;
    expect(
        "script",
        &http(addr, "GET", "/app.js", "").await?,
        "from \"/capnweb.js\"",
    )?;
    expect(
        "capnweb",
        &http(addr, "GET", "/capnweb.js", "").await?,
        "newWebSocketRpcSession",
    )?;
    let batch = [
        r#"["push",["pipeline",0,["user"],["Ada"]]]"#,
        r#"["push",["pipeline",1,["greeting"],[]]]"#,
        r#"["pull",2]"#,
    ]
    .join("\n");
    let reply = http(addr, "POST", "/rpc", &batch).await?;
    expect(
        "user(\"Ada\").greeting()",
        &reply,
        r#"["resolve",2,"Hello, Ada! (from Rust)"]"#,
    )?;
    println!("check passed");
    Ok(())
}

/// One HTTP/1.1 request; the response, head and body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "{method} {path}: {response}"
        )));
    }
    Ok(response)
}
