//! The consumer's side of a stream's flow control: how much the producer may still
//! send, when to give it more, and when to grow the window.
//!
//! Credit is counted in bytes of [`cost_of`](super::cost::cost_of). The producer may
//! start an item whenever its credit is positive, so it can overdraw by at most one
//! item (an item larger than the whole window still travels, alone). The consumer
//! checks the same rule on every item it receives: an item that arrives when the
//! producer had no credit left breaks the protocol.
//!
//! The window starts small and doubles, up to its maximum, each time the producer
//! reports that it ran out of credit while the consumer had already drained
//! everything it received (at most once per window's worth of data): then the link,
//! not the consumer, is what holds the stream back. A consumer that stops reading
//! stops granting, so at most a window (plus one item) is held for it.

/// Credit accounting of one stream, kept by the consumer.
#[derive(Debug)]
pub(crate) struct Window {
    /// The current window.
    size: u64,
    max: u64,
    /// What the producer may still send, as far as the consumer knows: granted and
    /// not yet received. Negative after an overdraft.
    available: i64,
    /// Consumed and not yet granted back.
    consumed: u64,
    /// Received since the window last grew.
    since_growth: u64,
}

/// Received more than the credit allowed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Overrun {
    pub(crate) available: i64,
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Window {
    /// A window of `initial` bytes (at least 1), growing up to `max`.
    pub(crate) fn new(initial: u64, max: u64) -> Self {
        let size = initial.max(1);
        Window {
            size,
            max: max.max(size),
            available: signed(size),
            consumed: 0,
            since_growth: 0,
        }
    }

    /// The credit first granted (with the start of the stream).
    pub(crate) fn initial(&self) -> u64 {
        self.size
    }

    /// Accounts for an arriving item; fails if the producer had no credit left.
    pub(crate) fn receive(&mut self, cost: u64) -> Result<(), Overrun> {
        if self.available <= 0 {
            return Err(Overrun {
                available: self.available,
            });
        }
        self.available = self.available.saturating_sub(signed(cost));
        self.since_growth = self.since_growth.saturating_add(cost);
        Ok(())
    }

    /// After a batch: the producer says whether it ran out of credit (`blocked`), and
    /// `drained` says whether the consumer had taken everything before the batch came.
    /// Returns credit to grant at once when the window grows.
    pub(crate) fn after_batch(&mut self, blocked: bool, drained: bool) -> Option<u64> {
        if !(blocked && drained) || self.size >= self.max || self.since_growth < self.size {
            return None;
        }
        let grown = self.size.saturating_mul(2).min(self.max);
        let extra = grown - self.size;
        self.size = grown;
        self.since_growth = 0;
        self.available = self.available.saturating_add(signed(extra));
        Some(extra)
    }

    /// The consumer took an item; returns credit to grant once a quarter of the
    /// window was consumed (so grants are few, and the producer never waits for one
    /// while the consumer keeps up).
    pub(crate) fn consume(&mut self, cost: u64) -> Option<u64> {
        self.consumed = self.consumed.saturating_add(cost);
        if self.consumed < (self.size / 4).max(1) {
            return None;
        }
        let grant = std::mem::take(&mut self.consumed);
        self.available = self.available.saturating_add(signed(grant));
        Some(grant)
    }

    /// The current window.
    #[cfg(test)]
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_enforced_with_one_item_of_overdraft() {
        let mut w = Window::new(100, 100);
        w.receive(60).unwrap();
        w.receive(60).unwrap(); // started with 40 left: allowed, overdraws
        assert_eq!(w.receive(1), Err(Overrun { available: -20 }));
    }

    #[test]
    fn consumption_is_granted_back_in_quarters() {
        let mut w = Window::new(100, 100);
        w.receive(100).unwrap();
        assert_eq!(w.consume(10), None);
        assert_eq!(w.consume(15), Some(25));
        w.receive(25).unwrap();
        assert!(w.receive(1).is_err());
    }

    #[test]
    fn grows_only_when_the_link_is_the_bottleneck() {
        let mut w = Window::new(100, 400);
        w.receive(100).unwrap();
        assert_eq!(w.after_batch(true, false), None, "the consumer is behind");
        assert_eq!(w.after_batch(false, true), None, "the producer had credit");
        assert_eq!(w.after_batch(true, true), Some(100));
        assert_eq!(w.size(), 200);
        w.receive(100).unwrap();
        assert_eq!(
            w.after_batch(true, true),
            None,
            "not a window's worth since"
        );
        assert_eq!(w.consume(200), Some(200));
        w.receive(100).unwrap();
        assert_eq!(w.after_batch(true, true), Some(200));
        w.receive(300).unwrap();
        assert_eq!(w.after_batch(true, true), None, "at the maximum");
        assert_eq!(w.size(), 400);
    }
}
