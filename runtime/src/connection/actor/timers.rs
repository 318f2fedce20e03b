//! Keepalive, idle and chunk timers: when the actor pings, and when it gives up on
//! a silent peer or an unfinished chunked message.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};

use super::Actor;
use crate::error::CloseReason;
use crate::transport::Transport;
use crate::wire::Header;

/// How long a chunked message may stay unfinished between two of its chunks.
const CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Keepalive and idle timers, made on first use (and only when configured).
pub(super) struct Timers {
    /// When the connection started: the peer's opening message is due by
    /// `opened + handshake_timeout`.
    opened: Instant,
    hello: Option<Pin<Box<Sleep>>>,
    /// When a graceful close began; running calls have `drain_timeout` from then.
    pub(super) closing_since: Option<Instant>,
    drain: Option<Pin<Box<Sleep>>>,
    pub(super) last_received: Option<Instant>,
    /// When the last chunk of a message still being reassembled arrived.
    pub(super) last_chunk: Option<Instant>,
    chunk: Option<Pin<Box<Sleep>>>,
    pub(super) last_sent: Option<Instant>,
    idle: Option<Pin<Box<Sleep>>>,
    keepalive: Option<Pin<Box<Sleep>>>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            opened: Instant::now(),
            hello: None,
            closing_since: None,
            drain: None,
            last_received: None,
            last_chunk: None,
            chunk: None,
            last_sent: None,
            idle: None,
            keepalive: None,
        }
    }
}

/// Polls a timer for `deadline`, making or moving it as needed.
fn due(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    sleep.as_mut().poll(cx).is_ready()
}

impl<T: Transport> Actor<T> {
    /// Closes a connection whose peer went silent, and keeps ours from looking so;
    /// returns whether a keepalive was queued.
    pub(super) fn check_timers(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let config = &self.conn.shared.config;
        let (idle, keepalive) = (config.idle_timeout, config.keepalive);
        if self.peer.is_none() {
            let limit = config.handshake_timeout;
            if due(&mut self.timers.hello, self.timers.opened + limit, cx) {
                return Err(self.tell_peer(CloseReason::HandshakeTimeout(limit)));
            }
        } else {
            self.timers.hello = None;
        }
        if self.reassembly.in_progress() {
            let since = *self.timers.last_chunk.get_or_insert_with(Instant::now);
            if due(&mut self.timers.chunk, since + CHUNK_TIMEOUT, cx) {
                return Err(self.tell_peer(CloseReason::ChunkTimeout(CHUNK_TIMEOUT)));
            }
        }
        if self.phase.is_closing() {
            let limit = config.drain_timeout;
            let since = *self.timers.closing_since.get_or_insert_with(Instant::now);
            if due(&mut self.timers.drain, since + limit, cx) {
                return Err(self.tell_peer(CloseReason::DrainDeadline(limit)));
            }
        }
        if let Some(idle) = idle {
            let since = *self.timers.last_received.get_or_insert_with(Instant::now);
            if due(&mut self.timers.idle, since + idle, cx) {
                return Err(self.tell_peer(CloseReason::IdleTimeout(idle)));
            }
        }
        if let Some(every) = keepalive {
            let since = *self.timers.last_sent.get_or_insert_with(Instant::now);
            if due(&mut self.timers.keepalive, since + every, cx) {
                self.timers.last_sent = Some(Instant::now());
                self.enqueue_control(&Header::Ping);
                return Ok(true);
            }
        }
        Ok(false)
    }
}
