//! What handles ask of the connection task: the commands on its channel.

use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

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
    /// Send a one-way call; a refusal (too many objects exported, a frame too
    /// large) is told to `refusals` when given, else only logged.
    Send {
        target: Target,
        method: u32,
        message: Message,
        refusals: Option<Arc<Refusals>>,
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

/// Where the connection task tells a sender that its one-way calls were refused
/// after they left it (a stream's pump watches this: a batch that cannot be sent
/// must end the stream, not vanish from it).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    first: Mutex<Option<String>>,
    refused: Notify,
}

impl Refusals {
    /// Records a refusal (the first is kept) and wakes the watcher.
    pub(crate) fn refuse(&self, why: String) {
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        self.refused.notify_one();
    }

    /// The first refusal, if any.
    pub(crate) fn first(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves with the first refusal once there is one.
    pub(crate) async fn refused(&self) -> String {
        loop {
            if let Some(why) = self.first() {
                return why;
            }
            self.refused.notified().await;
        }
    }
}
