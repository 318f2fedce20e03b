//! The actor's references to its own objects as the translator holds them for the
//! peer.
//!
//! The actor counts one reference per capability it sends; the `capnweb` package
//! releases each id it was given with a count of one. When every reference met one
//! id, the translator could pass releases through. But a result kept for property
//! paths may hand the same capability to the peer again (`await api.team().lead`
//! after the team came back), which no reference of the actor's pays for. So the
//! translator pools them: per object, the references the actor gave it and the
//! holders on this side (each id the peer was given, each kept result and each
//! waiting push naming it), and gives every reference back at once when the last
//! holder lets go. The actor's counts stay exact; the object lives while anything
//! here can still reach it.

use std::collections::HashMap;

use crate::wire::ExportId;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count {
    /// References the actor gave (descriptors it sent), not yet given back.
    refs: u64,
    /// Things on this side holding the object.
    holders: u64,
}

/// References to the actor's objects, pooled per object (see the module
/// documentation).
#[derive(Debug, Default)]
pub(super) struct Holds {
    counts: HashMap<ExportId, Count>,
}

impl Holds {
    /// A reference the actor gave (a descriptor it sent), with its first holder.
    pub(super) fn take(&mut self, id: ExportId) {
        let count = self.counts.entry(id).or_default();
        count.refs += 1;
        count.holders += 1;
    }

    /// One more holder of an object whose references are already here.
    pub(super) fn hold(&mut self, id: ExportId) {
        self.counts.entry(id).or_default().holders += 1;
    }

    /// One holder fewer: the references to give back when it was the last (none
    /// when the actor gave none, as for the root, which it keeps anyway).
    #[must_use]
    pub(super) fn unhold(&mut self, id: ExportId) -> Option<u64> {
        let count = self.counts.get_mut(&id)?;
        count.holders = count.holders.saturating_sub(1);
        if count.holders > 0 {
            return None;
        }
        let refs = self.counts.remove(&id).map_or(0, |c| c.refs);
        (refs > 0).then_some(refs)
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_go_back_together_when_the_last_holder_lets_go() {
        let mut holds = Holds::default();
        // A result with the object (kept for paths), then the peer's id for it,
        // then a property read handing it out once more.
        holds.take(7);
        holds.hold(7);
        holds.hold(7);
        // And a second reference, from a later result with the same object.
        holds.take(7);
        assert_eq!(holds.unhold(7), None);
        assert_eq!(holds.unhold(7), None);
        assert_eq!(holds.unhold(7), None);
        assert_eq!(holds.unhold(7), Some(2), "both references, at the last");
        assert!(holds.is_empty());
        assert_eq!(holds.unhold(7), None, "nothing left to give back");
    }

    #[test]
    fn holding_what_the_actor_never_counted_gives_nothing_back() {
        let mut holds = Holds::default();
        // A waiting push naming the root.
        holds.hold(0);
        assert_eq!(holds.unhold(0), None);
        assert!(holds.is_empty());
    }

    #[test]
    fn objects_are_counted_apart() {
        let mut holds = Holds::default();
        holds.take(1);
        holds.take(2);
        assert_eq!(holds.unhold(2), Some(1));
        assert_eq!(holds.unhold(1), Some(1));
        assert!(holds.is_empty());
    }
}
