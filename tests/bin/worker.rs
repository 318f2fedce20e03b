//! The worker process of `tests/process.rs`.
//!
//! ```text
//! farcall-test-worker          # serve a `Probe` over stdin/stdout until end of input
//! farcall-test-worker exit N   # exit at once with code N, serving nothing
//! farcall-test-worker chatty    # print a line to stdout, then serve (a mistake)
//! ```

use std::sync::Mutex;

use farcall::process::{self, Worker};
use farcall::{CallContext, Connection};

#[path = "worker_api.rs"]
mod api;

use api::{ParentClient, Probe, ProbeServer};

#[derive(Default)]
struct ProbeImpl {
    /// Workers started by `spawn_worker`, killed when this process ends normally.
    workers: Mutex<Vec<Worker>>,
}

impl Probe for ProbeImpl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }

    async fn call_back(&self, x: u64) -> Result<u64, String> {
        let cx = CallContext::current().ok_or("no call context")?;
        let parent: ParentClient = cx.connection().root().await.map_err(|e| e.to_string())?;
        parent.double(x).await.map_err(|e| e.to_string())
    }

    async fn crash(&self, code: i32) {
        eprintln!("test worker {}: exiting with {code}", std::process::id());
        std::process::exit(code);
    }

    async fn hang(&self) -> u64 {
        std::future::pending().await
    }

    async fn pid(&self) -> u32 {
        std::process::id()
    }

    async fn log(&self, line: String) {
        eprintln!("{line}");
    }

    async fn spawn_worker(&self) -> Result<u32, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let worker = process::spawn(&Connection::builder(), tokio::process::Command::new(exe))
            .map_err(|e| e.to_string())?;
        let pid = worker.id().ok_or("no pid")?;
        self.workers.lock().unwrap().push(worker);
        Ok(pid)
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => {
            let builder = Connection::builder().root(ProbeServer::new(ProbeImpl::default()));
            process::run_stdio(&builder).await;
        }
        ["chatty"] => {
            println!("worker starting up");
            let builder = Connection::builder().root(ProbeServer::new(ProbeImpl::default()));
            process::run_stdio(&builder).await;
        }
        ["exit", code] => std::process::exit(code.parse().expect("an exit code")),
        _ => {
            eprintln!("usage: farcall-test-worker [exit CODE | chatty]");
            std::process::exit(2);
        }
    }
}
