//! Worker processes: a connection to a child process over its stdin and stdout.
//!
//! The parent starts a worker with [`spawn`], which runs a command with piped stdin
//! and stdout and connects over them; the worker serves with [`serve_stdio`] or
//! [`run_stdio`]. The connection is symmetric like any other: each side may offer a
//! root object and call the other's, also while serving a call.
//!
//! ```no_run
//! use farcall::{process, Connection, RpcError};
//!
//! #[farcall::remote]
//! pub trait Hasher {
//!     async fn hash(&self, data: String) -> u64;
//! }
//!
//! struct Fnv;
//! impl Hasher for Fnv {
//!     async fn hash(&self, data: String) -> u64 {
//!         eprintln!("worker: hashing {} bytes", data.len()); // stderr, never stdout
//!         data.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
//!             (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
//!         })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     if std::env::args().nth(1).as_deref() == Some("worker") {
//!         // Serves until the parent goes away.
//!         process::run_stdio(&Connection::builder().root(HasherServer::new(Fnv))).await;
//!         return Ok(());
//!     }
//!     let mut command = tokio::process::Command::new(std::env::current_exe()?);
//!     command.arg("worker");
//!     let worker = process::spawn(&Connection::builder(), command)?;
//!     let hasher: HasherClient = worker.root().await?;
//!     println!("{}", hasher.hash("hello".into()).await?);
//!     let status = worker.close().await?; // the worker sees end of input and exits
//!     assert!(status.success());
//!     Ok(())
//! }
//! ```
//!
//! # Lifetimes
//!
//! - When the worker exits or crashes, the connection ends and every pending call
//!   fails with [`RpcError::Disconnected`] whose reason carries the exit status, such
//!   as "worker exited with exit status: 3".
//! - Dropping the [`Worker`] kills the process; so does the end of the parent's tokio
//!   runtime. If the parent dies without running any code (`SIGKILL`), the worker
//!   reads end of input and, served by [`run_stdio`], exits on its own.
//! - [`Worker::close`] ends a worker cleanly: the connection is closed, the worker
//!   reads end of input and exits.
//!
//! # Writing a worker
//!
//! The worker's stdout carries the protocol: **it must not print to stdout** (no
//! `println!`, no logger writing there), or the parent fails the connection with a
//! bad frame. Log to stderr instead (`eprintln!`; `tracing_subscriber::fmt()` needs
//! `.with_writer(std::io::stderr)`, as it writes to stdout by default): [`spawn`]
//! leaves stderr inherited, so the worker's lines appear on the parent's stderr.
//!
//! Stdin is read on a blocking thread that cannot be interrupted, so a tokio runtime
//! waiting for it does not shut down while the parent keeps the pipe open. Return
//! from `main` once the connection has closed (as [`run_stdio`] does), or end the
//! process with [`std::process::exit`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{watch, Notify};

use crate::client::RemoteClient;
use crate::connection::{Builder, Connection};
use crate::error::{CloseReason, RpcError};

/// How long the end of the worker's pipes is held back waiting for its exit status,
/// so the connection can report it. Only a worker that closes its stdout and keeps
/// running waits this long.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How the worker ended, once it has: its status, or why waiting for it failed.
type Exit = Option<Result<ExitStatus, String>>;

/// Starts `command` as a worker process and connects to it with `builder`.
///
/// The child's stdin and stdout are replaced by pipes carrying the connection.
/// Stderr is left as the command has it: inherited unless you set it (pipe it and
/// read it with [`Worker::take_stderr`] to capture the worker's log). The process is
/// killed when the [`Worker`] is dropped.
///
/// Must be called inside a tokio runtime. Fails if the process cannot be started.
pub fn spawn(builder: &Builder, command: impl Into<Command>) -> io::Result<Worker> {
    let mut command: Command = command.into();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pid = child.id();
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other(
            "worker process has no stdin or stdout pipe",
        ));
    };
    let stderr = child.stderr.take();
    let (exit_tx, exit) = watch::channel(None);
    let connection = builder.connect_stream(ChildIo {
        stdin,
        stdout,
        exit: exit.clone(),
        waiting: None,
        opening: OpeningCheck::default(),
    });
    tracing::debug!(pid, connection = connection.id(), "worker process started");
    let kill = Arc::new(Notify::new());
    tokio::spawn(watch_child(
        child,
        connection.clone(),
        kill.clone(),
        exit_tx,
    ));
    Ok(Worker {
        connection,
        pid,
        exit,
        kill,
        stderr,
    })
}

/// Waits for the worker to exit (or for a kill request), then records how it ended
/// and ends the connection with that reason.
async fn watch_child(
    mut child: Child,
    connection: Connection,
    kill: Arc<Notify>,
    exit: watch::Sender<Exit>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        () = kill.notified() => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let (reason, status) = match status {
        Ok(status) => (CloseReason::WorkerExited(status.to_string()), Ok(status)),
        Err(e) => {
            let reason = CloseReason::WorkerLost(e.to_string());
            (reason.clone(), Err(reason.to_string()))
        }
    };
    tracing::debug!(connection = connection.id(), %reason, "worker process ended");
    // Queued before the pipes report their end (they wait for `exit`), so pending
    // calls fail with this reason rather than a bare "peer closed the connection".
    drop(connection.abort_with(reason));
    exit.send_replace(Some(status));
}

/// A running worker process and the connection to it, from [`spawn`].
///
/// Dropping it kills the process (and so ends the connection): keep it as long as
/// you use the worker, even through clients obtained from it.
#[derive(Debug)]
pub struct Worker {
    connection: Connection,
    pid: Option<u32>,
    exit: watch::Receiver<Exit>,
    kill: Arc<Notify>,
    stderr: Option<ChildStderr>,
}

impl Worker {
    /// The connection to the worker.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Asks the worker for its root object as client type `C`; see
    /// [`Connection::root`].
    pub async fn root<C: RemoteClient>(&self) -> Result<C, RpcError> {
        self.connection.root().await
    }

    /// The operating system's process id of the worker.
    pub fn id(&self) -> Option<u32> {
        self.pid
    }

    /// The worker's stderr, if the command had it piped (taken once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// The worker's exit status, if it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match &*self.exit.borrow() {
            Some(Ok(status)) => Some(*status),
            _ => None,
        }
    }

    /// Waits for the worker to exit and returns its status. It does not ask it to:
    /// see [`close`](Self::close) and [`kill`](Self::kill).
    pub async fn wait(&self) -> io::Result<ExitStatus> {
        let mut exit = self.exit.clone();
        let result = match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone(),
            Err(_) => None,
        };
        match result {
            Some(Ok(status)) => Ok(status),
            Some(Err(reason)) => Err(io::Error::other(reason)),
            None => Err(io::Error::other("the worker's watcher task stopped")),
        }
    }

    /// Ends the worker cleanly: closes the connection gracefully (see
    /// [`Connection::close`]), which ends the worker's input, and waits for it to
    /// exit. A worker that does not exit on end of input keeps this waiting: put a
    /// timeout around it and [`kill`](Self::kill) the worker if it expires.
    pub async fn close(&self) -> io::Result<ExitStatus> {
        self.connection.close().await;
        self.wait().await
    }

    /// Kills the worker and waits for it to be gone; pending calls fail with
    /// [`RpcError::Disconnected`].
    pub async fn kill(&self) -> io::Result<ExitStatus> {
        self.kill.notify_one();
        self.wait().await
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill.notify_one();
    }
}

/// The connection to a worker as seen by the parent: reads the child's stdout,
/// writes its stdin.
///
/// When a pipe ends (end of output, or a write error because the child is gone),
/// the end is reported only once the child's exit is known (or after
/// [`EXIT_GRACE`]), so that the connection ends with the exit status as its reason.
struct ChildIo {
    stdin: ChildStdin,
    stdout: ChildStdout,
    exit: watch::Receiver<Exit>,
    /// `Some` once a pipe has ended: the wait for the child's exit, then `Some(None)`
    /// once that wait is over.
    waiting: Option<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    opening: OpeningCheck,
}

/// Checks the first bytes the worker writes to its stdout: a farcall peer's first
/// frame is its opening message, so anything else is a worker printing to stdout,
/// which must be reported as such rather than as a garbled frame.
#[derive(Default)]
struct OpeningCheck {
    /// The first bytes seen, up to the end of the opening message's magic.
    seen: Vec<u8>,
    done: bool,
}

impl OpeningCheck {
    /// Where the magic ends: after the 4-byte length prefix of the frame.
    const END: usize = 4 + crate::wire::HELLO_MAGIC.len();

    fn check(&mut self, read: &[u8]) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        let take = read.len().min(Self::END - self.seen.len());
        self.seen.extend_from_slice(&read[..take]);
        // An opening message is short: the first two bytes of its length are zero.
        let mut expected = vec![0u8, 0, 0, 0];
        expected.extend_from_slice(crate::wire::HELLO_MAGIC);
        let fine = self
            .seen
            .iter()
            .zip(&expected)
            .enumerate()
            .all(|(i, (got, want))| i == 2 || i == 3 || got == want);
        if !fine {
            self.done = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the worker wrote something that is not a farcall frame to its stdout \
                     (it began with {:?}); stdout carries the connection, so a worker's \
                     logs belong on stderr",
                    String::from_utf8_lossy(&self.seen)
                ),
            ));
        }
        self.done = self.seen.len() == Self::END;
        Ok(())
    }
}

impl ChildIo {
    /// Ready once the child's exit is known, or the grace period is over.
    fn poll_exited(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let exit = &self.exit;
        let waiting = self.waiting.get_or_insert_with(|| {
            let mut exit = exit.clone();
            Some(Box::pin(async move {
                let _ = tokio::time::timeout(EXIT_GRACE, exit.wait_for(Option::is_some)).await;
            }))
        });
        if let Some(future) = waiting {
            ready!(future.as_mut().poll(cx));
            *waiting = None;
        }
        Poll::Ready(())
    }

    /// Passes `result` on, after the exit is known if it is an error.
    fn poll_end<T>(&mut self, cx: &mut Context<'_>, result: io::Result<T>) -> Poll<io::Result<T>> {
        if result.is_err() {
            ready!(self.poll_exited(cx));
        }
        Poll::Ready(result)
    }
}

impl AsyncRead for ChildIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.stdout).poll_read(cx, buf));
        if result.is_ok() {
            // Reported at once: the worker is alive and waiting for its input.
            this.opening.check(&buf.filled()[before..])?;
        }
        if result.is_ok() && buf.filled().len() == before && buf.remaining() > 0 {
            // End of output: the child closed stdout, most likely by exiting.
            ready!(this.poll_exited(cx));
        }
        this.poll_end(cx, result)
    }
}

impl AsyncWrite for ChildIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = ready!(Pin::new(&mut this.stdin).poll_write(cx, data));
        this.poll_end(cx, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = ready!(Pin::new(&mut this.stdin).poll_flush(cx));
        this.poll_end(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = ready!(Pin::new(&mut this.stdin).poll_shutdown(cx));
        this.poll_end(cx, result)
    }
}

/// Serves a connection over this process's own stdin (read) and stdout (write): the
/// worker side of [`spawn`]. Must be called inside a tokio runtime.
///
/// Nothing else may write to stdout while it runs (see the [module
/// docs](self#writing-a-worker)); log to stderr. The connection ends when the parent
/// closes it or exits (end of input).
pub fn serve_stdio(builder: &Builder) -> Connection {
    builder.connect_stream(StdIo {
        stdin: tokio::io::stdin(),
        stdout: tokio::io::stdout(),
    })
}

/// Serves over stdin and stdout (see [`serve_stdio`]) until the connection ends,
/// normally because the parent closed it or exited. A worker's `main` can return
/// after it, which ends the process.
pub async fn run_stdio(builder: &Builder) {
    serve_stdio(builder).closed().await;
}

/// This process's stdin and stdout as one byte stream.
struct StdIo {
    stdin: tokio::io::Stdin,
    stdout: tokio::io::Stdout,
}

impl AsyncRead for StdIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_read(cx, buf)
    }
}

impl AsyncWrite for StdIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdout).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_shutdown(cx)
    }
}
