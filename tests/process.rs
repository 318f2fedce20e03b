//! Worker processes (`farcall::process`): calls both ways over a child's stdio, exit
//! statuses in disconnect reasons, and no worker outliving its parent.

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use farcall::process::{self, Worker};
use farcall::{CloseReason, Connection, RpcError};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

#[path = "bin/worker_api.rs"]
mod api;

use api::{Parent, ParentServer, ProbeClient};

const WORKER: &str = env!("CARGO_BIN_EXE_farcall-test-worker");

/// Fails the test instead of hanging it.
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

struct Doubler;

impl Parent for Doubler {
    async fn double(&self, x: u64) -> u64 {
        x * 2
    }
}

/// Starts the test worker with the parent's root offered to it.
fn start(command: Command) -> Worker {
    let builder = Connection::builder().root(ParentServer::new(Doubler));
    process::spawn(&builder, command).expect("spawn the test worker")
}

fn worker_command() -> Command {
    Command::new(WORKER)
}

/// Whether process `pid` exists and is not a zombie (a zombie has exited; it only
/// waits for its parent, perhaps an init that never reaps, to collect its status).
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !(state.starts_with('Z') || state.starts_with('X'))
            }
            Err(_) => false,
        };
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits (at most 10 s) for process `pid` to be gone.
#[cfg(unix)]
async fn assert_gone(pid: u32, what: &str) {
    for _ in 0..200 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: process {pid} still alive after 10 s");
}

fn disconnect_reason(result: Result<impl std::fmt::Debug, RpcError>) -> CloseReason {
    match result {
        Err(RpcError::Disconnected(reason)) => reason,
        other => panic!("expected a disconnect, got {other:?}"),
    }
}

#[tokio::test]
async fn parent_calls_worker_and_worker_calls_back() {
    bounded("calls both ways", async {
        let worker = start(worker_command());
        let probe: ProbeClient = worker.root().await.unwrap();
        assert_eq!(probe.add(2, 3).await.unwrap(), 5);
        // The worker calls the parent's root while serving the call.
        assert_eq!(probe.call_back(21).await.unwrap(), 42);
        assert_eq!(Some(probe.pid().await.unwrap()), worker.id());
        assert_eq!(worker.exit_status(), None);

        // Closing ends the worker's input: it exits on its own, successfully.
        let status = worker.close().await.unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(worker.exit_status(), Some(status));
    })
    .await;
}

#[tokio::test]
async fn worker_exit_fails_pending_calls_with_its_status() {
    bounded("exit status in pending calls", async {
        let worker = start(worker_command());
        let probe: ProbeClient = worker.root().await.unwrap();
        let first = probe.hang();
        let second = probe.hang();
        let callback = probe.call_back(1);
        // Delivered after the calls above, on the same reference.
        probe.crash(3).unwrap();

        let expected = exit_reason(3);
        for (name, result) in [
            ("first", first.await),
            ("second", second.await),
            (
                "callback",
                callback.await.map_err(|e| match e {
                    farcall::CallError::Rpc(e) => e,
                    other => panic!("unexpected {other:?}"),
                }),
            ),
        ] {
            let reason = disconnect_reason(result);
            assert_eq!(reason, expected, "{name} call");
        }
        assert_eq!(worker.wait().await.unwrap().code(), Some(3));
        assert_eq!(worker.exit_status().and_then(|s| s.code()), Some(3));
        assert_eq!(worker.connection().close_reason(), Some(expected.clone()));
        // Later calls fail the same way.
        assert_eq!(disconnect_reason(probe.add(1, 2).await), expected);
    })
    .await;
}

/// The reason a connection to a worker that exited with `code` ends with.
fn exit_reason(code: i32) -> CloseReason {
    let status = std::process::Command::new(WORKER)
        .args(["exit", &code.to_string()])
        .status()
        .expect("run the test worker");
    CloseReason::WorkerExited(status.to_string())
}

#[tokio::test]
async fn worker_dying_at_start_fails_the_bootstrap() {
    bounded("bootstrap of a dead worker", async {
        let mut command = worker_command();
        command.args(["exit", "7"]);
        let worker = start(command);
        let reason = disconnect_reason(worker.root::<ProbeClient>().await);
        assert_eq!(reason, exit_reason(7));
        assert!(reason.to_string().contains('7'), "{reason}");
        assert_eq!(worker.wait().await.unwrap().code(), Some(7));
    })
    .await;
}

#[tokio::test]
async fn a_worker_printing_to_stdout_is_told_apart_from_a_broken_frame() {
    bounded("chatty worker", async {
        let mut command = worker_command();
        command.arg("chatty");
        let worker = start(command);
        let reason = disconnect_reason(worker.root::<ProbeClient>().await);
        assert!(
            matches!(&reason, CloseReason::Transport(why)
                if why.contains("not a farcall frame to its stdout")
                    && why.contains("worker start")
                    && why.contains("belong on stderr")),
            "{reason}"
        );
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn dropping_the_worker_kills_it() {
    bounded("worker killed on drop", async {
        let worker = start(worker_command());
        let probe: ProbeClient = worker.root().await.unwrap();
        let pid = probe.pid().await.unwrap();
        assert_eq!(Some(pid), worker.id());
        assert!(alive(pid));
        let pending = probe.hang();
        drop(worker);
        assert_gone(pid, "dropped worker").await;
        let reason = disconnect_reason(pending.await);
        assert!(matches!(reason, CloseReason::WorkerExited(_)), "{reason}");
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn kill_fails_pending_calls() {
    bounded("kill", async {
        let worker = start(worker_command());
        let probe: ProbeClient = worker.root().await.unwrap();
        let pending = probe.hang();
        let status = worker.kill().await.unwrap();
        assert!(!status.success());
        assert_eq!(
            disconnect_reason(pending.await),
            CloseReason::WorkerExited(status.to_string())
        );
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn worker_of_a_killed_parent_exits_on_end_of_input() {
    bounded("orphaned worker exits", async {
        // The middle process is killed outright (SIGKILL), so it runs no cleanup: its
        // own worker must notice the end of its input and exit by itself.
        let middle = start(worker_command());
        let probe: ProbeClient = middle.root().await.unwrap();
        let grandchild = probe.spawn_worker().await.unwrap();
        assert!(alive(grandchild));
        middle.kill().await.unwrap();
        assert_gone(grandchild, "worker of a killed parent").await;
    })
    .await;
}

#[tokio::test]
async fn closing_the_connection_ends_the_worker_cleanly() {
    bounded("end of input", async {
        let worker = start(worker_command());
        let probe: ProbeClient = worker.root().await.unwrap();
        assert_eq!(probe.add(1, 1).await.unwrap(), 2);
        worker.connection().close().await;
        let status = worker.wait().await.unwrap();
        assert_eq!(status.code(), Some(0), "{status}");
    })
    .await;
}

#[tokio::test]
async fn worker_stderr_is_separate_from_the_protocol() {
    bounded("stderr", async {
        let mut command = worker_command();
        command.stderr(Stdio::piped());
        let mut worker = start(command);
        let mut lines = tokio::io::BufReader::new(worker.take_stderr().unwrap()).lines();
        assert!(worker.take_stderr().is_none());
        let probe: ProbeClient = worker.root().await.unwrap();
        probe.log("hello from the worker".into()).await.unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("hello from the worker")
        );
        // The connection is unharmed.
        assert_eq!(probe.add(20, 22).await.unwrap(), 42);
        assert!(worker.close().await.unwrap().success());
        assert_eq!(lines.next_line().await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn spawn_reports_a_missing_program() {
    bounded("missing program", async {
        let err = process::spawn(
            &Connection::builder(),
            Command::new("/nonexistent/farcall-no-such-worker"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    })
    .await;
}
