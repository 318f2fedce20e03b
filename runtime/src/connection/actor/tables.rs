//! The export and import tables: which objects this side lent the peer and which it
//! borrowed, and how capabilities turn into wire descriptors and back.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::Actor;
use crate::cap::{CapRef, ImportEntry};
use crate::error::{RpcError, WireError};
use crate::transport::Transport;
use crate::wire::{CapDescriptor, ExportId, Header, ROOT_EXPORT};

/// An object exported to the peer, with the references the peer holds.
pub(super) struct Export {
    cap: CapRef,
    count: u64,
}

/// Objects this side exported, by id and by identity (so the same object exported
/// twice gets the same id, and the peer sees one identity).
#[derive(Default)]
pub(super) struct Exports {
    by_id: HashMap<ExportId, Export>,
    by_key: HashMap<usize, ExportId>,
    next: ExportId,
}

impl Exports {
    pub(super) fn insert_root(&mut self, cap: CapRef) {
        self.by_key.insert(cap.key(), ROOT_EXPORT);
        self.by_id.insert(ROOT_EXPORT, Export { cap, count: 0 });
    }

    /// Adds one reference to `cap`'s export, creating it if needed; says whether
    /// it was created.
    pub(super) fn add(&mut self, cap: &CapRef) -> (ExportId, bool) {
        let key = cap.key();
        // Broken references have no identity: each gets its own export.
        if key != 0 {
            if let Some(&id) = self.by_key.get(&key) {
                if let Some(export) = self.by_id.get_mut(&id) {
                    export.count += 1;
                    return (id, false);
                }
            }
        }
        self.next += 1;
        let id = self.next;
        if key != 0 {
            self.by_key.insert(key, id);
        }
        self.by_id.insert(
            id,
            Export {
                cap: cap.clone(),
                count: 1,
            },
        );
        (id, true)
    }

    /// The id `key`'s object is exported under, if it is.
    pub(super) fn id_of(&self, key: usize) -> Option<ExportId> {
        self.by_key.get(&key).copied()
    }

    /// Drops `count` references; frees the export when none are left. The root is
    /// never freed: any peer may ask for it again.
    pub(super) fn release(&mut self, id: ExportId, count: u64) -> Result<(), RpcError> {
        let Some(export) = self.by_id.get_mut(&id) else {
            return Err(RpcError::BadMessage(format!(
                "release of unknown export {id}"
            )));
        };
        if id == ROOT_EXPORT {
            export.count = export.count.saturating_sub(count);
            return Ok(());
        }
        if count > export.count {
            return Err(RpcError::BadMessage(format!(
                "release of {count} references to export {id}, which has {}",
                export.count
            )));
        }
        export.count -= count;
        if export.count == 0 {
            let export = self.by_id.remove(&id).expect("present");
            if self.by_key.get(&export.cap.key()) == Some(&id) {
                self.by_key.remove(&export.cap.key());
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, id: ExportId) -> Option<&CapRef> {
        self.by_id.get(&id).map(|e| &e.cap)
    }

    /// Exports, not counting the root.
    pub(super) fn len(&self) -> usize {
        self.by_id.len() - usize::from(self.by_id.contains_key(&ROOT_EXPORT))
    }
}

/// An object the peer exported, as this side's table holds it.
pub(super) struct Import {
    entry: Weak<ImportEntry>,
    pub(super) generation: u64,
    /// References received: what the `Release` gives back.
    pub(super) count: u64,
}

impl<T: Transport> Actor<T> {
    /// Turns a message's capabilities into descriptors, exporting local objects; fails
    /// if that would export more than `max_exports` objects.
    pub(super) fn describe(&mut self, caps: &[CapRef]) -> Result<Vec<CapDescriptor>, WireError> {
        let max = self.conn.shared.config.max_exports;
        if !caps.is_empty() && self.exports.len() + caps.len() > max {
            return Err(WireError::Overloaded(format!(
                "more than {max} objects exported"
            )));
        }
        Ok(caps
            .iter()
            .map(|cap| match cap {
                // The peer's own object, going home.
                CapRef::Import(entry) if self.is_ours(&entry.conn) => {
                    CapDescriptor::ReceiverHosted(entry.id)
                }
                // The peer's own answer, not yet (known to be) resolved.
                CapRef::Promise(answer) if self.is_ours(&answer.conn) => {
                    CapDescriptor::ReceiverAnswer(answer.question)
                }
                // Local objects, and imports from other connections (which calls
                // from this peer will be forwarded to).
                other => {
                    let (id, new) = self.exports.add(other);
                    if new {
                        if let Some(revocation) = other.revocation() {
                            revocation.exported_on(self.conn.commands(), other.key());
                        }
                    }
                    CapDescriptor::SenderHosted(id)
                }
            })
            .collect())
    }

    /// The peer's export `id` was revoked by its owner: every handle here sees it,
    /// and so does every connection this side passed it on to.
    pub(super) fn on_revoked(&mut self, id: ExportId) {
        let entry = self.imports.get(&id).and_then(|i| i.entry.upgrade());
        if let Some(entry) = entry {
            entry
                .revocation
                .revoke(Arc::as_ptr(&entry) as *const () as usize);
        }
    }

    /// Gives back the export references `describe` counted for a message that was
    /// then not sent.
    pub(super) fn undescribe(&mut self, header: &Header) {
        let caps = match header {
            Header::Call { caps, .. } | Header::Return { caps, .. } => caps,
            _ => return,
        };
        for cap in caps {
            if let CapDescriptor::SenderHosted(id) = cap {
                let _ = self.exports.release(*id, 1);
            }
        }
    }

    /// Turns received descriptors into references, importing what the peer exports.
    pub(super) fn resolve(&mut self, descriptors: Vec<CapDescriptor>) -> Vec<CapRef> {
        descriptors
            .into_iter()
            .map(|d| match d {
                CapDescriptor::SenderHosted(id) => CapRef::Import(self.import(id)),
                // An id we never exported (or already freed) names nothing: calls on
                // it fail, and it grants no access.
                CapDescriptor::ReceiverHosted(id) => self
                    .exports
                    .get(id)
                    .cloned()
                    .unwrap_or(CapRef::Broken(WireError::ObjectNotFound)),
                CapDescriptor::ReceiverAnswer(question) => self.answers.promised(question),
            })
            .collect()
    }

    fn import(&mut self, id: ExportId) -> Arc<ImportEntry> {
        if let Some(import) = self.imports.get_mut(&id) {
            if let Some(entry) = import.entry.upgrade() {
                import.count += 1;
                return entry;
            }
            // The last handle is gone but its drop notice is still queued: give its
            // references back now and start a new entry.
            let count = import.count;
            self.enqueue_control(&Header::Release { id, count });
        }
        self.next_generation += 1;
        let entry = Arc::new(ImportEntry::new(self.counted(), id, self.next_generation));
        self.imports.insert(
            id,
            Import {
                entry: Arc::downgrade(&entry),
                generation: self.next_generation,
                count: 1,
            },
        );
        entry
    }
}
