//! What handles ask of the connection task: the commands on its channel.

use tokio::sync::oneshot;

use super::Stats;
use crate::cap::{Message, Reply};
use crate::error::CloseReason;
use crate::wire::{ExportId, QuestionId, Target};

/// What a question asks for.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Call `method` on `target`.
    Call { target: Target, method: u32 },
    /// Ask for the peer's root, expecting `interface`.
    Bootstrap { interface: String, fingerprint: u64 },
}

/// What the actor is asked to do by handles.
pub(crate) enum Command {
    /// Send a question and route its return to `reply`.
    Ask {
        question: QuestionId,
        outgoing: Outgoing,
        message: Message,
        reply: oneshot::Sender<Reply>,
    },
    /// Send a one-way call.
    Send {
        target: Target,
        method: u32,
        message: Message,
    },
    /// The caller no longer wants the answer to `question`. `answered`: its return
    /// was received (so the question entry is gone but the callee kept the answer).
    Finish {
        question: QuestionId,
        answered: bool,
    },
    /// The object with this identity (`CapRef::key`) was revoked by its owner: tell
    /// the peer, if it was exported to it.
    Revoked { key: usize },
    /// The last handle to an import was dropped, or it was released.
    ImportDropped { id: ExportId, generation: u64 },
    /// Report the table sizes.
    Stats { reply: oneshot::Sender<Stats> },
    /// Close gracefully; reply when done (if anyone waits).
    Close { done: Option<oneshot::Sender<()>> },
    /// The last handle keeping the connection in use was dropped (another may have
    /// been made since).
    HandlesGone,
    /// Close now, failing everything in flight; `reason` becomes the close reason.
    Abort { reason: CloseReason },
}
