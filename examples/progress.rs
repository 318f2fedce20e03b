//! A long job with progress reports and a cancel closure: `cargo run --example progress`.
//!
//! From the ioRPC seed, where a remote function takes a callback, keeps calling it
//! from a timer, and returns a function that stops it. Here `Jobs::start` spawns a
//! task that reports `(done, total)` through a `Callback`, and returns at once a
//! cancel `Callback<(), bool>` that the client calls like any remote method.
//!
//! The job awaits each progress call, so the client paces it: the client cancels
//! while it holds report 3 of 10, and the job stops right there, then says so
//! through a `done` callback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use farcall::{Callback, Connection};
use tokio::sync::{mpsc, oneshot};

#[farcall::remote]
pub trait Jobs {
    /// Starts a job of `steps` steps reporting `(done, total)` through `on_progress`
    /// and, when it ends, the last step it finished through `done`. Returns a closure
    /// that cancels it, answering whether the job was still running.
    async fn start(
        &self,
        steps: u32,
        on_progress: Callback<(u32, u32)>,
        done: Callback<u32>,
    ) -> Callback<(), bool>;
}

struct Worker;

impl Jobs for Worker {
    async fn start(
        &self,
        steps: u32,
        on_progress: Callback<(u32, u32)>,
        done: Callback<u32>,
    ) -> Callback<(), bool> {
        // Set once the job is over, by cancel or by the job itself finishing.
        let over = Arc::new(AtomicBool::new(false));
        let job_over = over.clone();
        tokio::spawn(async move {
            let mut finished = 0;
            while finished < steps && !job_over.load(Ordering::SeqCst) {
                finished += 1;
                // Waits for the client: a failed call means it is gone, so stop.
                if on_progress.call((finished, steps)).await.is_err() {
                    break;
                }
            }
            job_over.store(true, Ordering::SeqCst);
            let _ = done.call(finished).await;
        });
        Callback::new(move |()| {
            let was_running = !over.swap(true, Ordering::SeqCst);
            async move { was_running }
        })
    }
}

async fn run() -> Result<(), farcall::RpcError> {
    let (server_end, client_end) = farcall::transport::memory();
    let _server = Connection::builder()
        .root(JobsServer::new(Worker))
        .connect(server_end);
    let jobs: JobsClient = Connection::builder().connect(client_end).root().await?;

    // Each report waits until `main` acknowledges it: progress is paced by the client.
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let on_progress = Callback::new(move |(done, total): (u32, u32)| {
        let (ack, acked) = oneshot::channel::<()>();
        let _ = report_tx.send((done, total, ack));
        async move {
            let _ = acked.await;
        }
    });
    let (done_tx, mut stopped) = mpsc::unbounded_channel();
    let on_done = Callback::new(move |at: u32| {
        let _ = done_tx.send(at);
        async {}
    });

    let cancel = jobs.start(10, on_progress, on_done).await?;
    let mut received = 0;
    let stopped_at = loop {
        tokio::select! {
            Some((done, total, ack)) = reports.recv() => {
                received += 1;
                println!("progress {done}/{total}");
                if done == 3 {
                    assert!(cancel.call(()).await?, "the job was running");
                    println!("cancelled at {done}/{total}");
                }
                let _ = ack.send(());
            }
            Some(at) = stopped.recv() => break at,
            else => panic!("the job neither reported nor ended"),
        }
    };
    println!("job stopped after step {stopped_at}, {received} reports received");
    assert_eq!((stopped_at, received), (3, 3));
    assert!(!cancel.call(()).await?, "cancelling again: already over");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(20), run()).await??;
    Ok(())
}
