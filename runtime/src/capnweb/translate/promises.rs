//! The peer's promises passed as values: `["promise", -n]` among a push's arguments,
//! or in a resolution of one of this side's pushes (a JavaScript function Rust
//! called returning a value with a promise in it). The `capnweb` package exports
//! each such promise under a new id and settles it by itself, unpulled, with
//! `["resolve", -n, value]` or `["reject", -n, error]`; the receiver releases the id
//! once it settled, or earlier when it no longer wants it (a settlement may then
//! still come, and means nothing).
//!
//! What carries promises waits here, as a `capnweb` server delivers a call only
//! once the promises among its arguments resolved: a push waits with the pushes
//! waiting for answers (`pushes.rs`), a resolution of ours is parked. Each
//! settlement brings a value for the promise, with the capabilities it carries and
//! the promises in it (waited for alike); once none is left, the values are put
//! where their promises were, in one pass, and the push runs or the resolution goes
//! to the actor. A rejection rejects the push (or fails
//! the call) with its error, and what it carried is given back. Nothing else waits.
//!
//! A hostile peer cannot grow this without bound: unsettled promises count against
//! the limit of waiting pushes; a value with the resolutions put in it stays within
//! a message's size and nesting, and costs one pass over it however many promises
//! it held; a promise id may not be reused while pending. A
//! settlement of an id beyond any the peer used for a promise is a protocol error;
//! of one it used that is not pending (released by this side, settled already, or
//! not a promise) it is ignored, and what it carries released.

use super::*;
use crate::codec::capnweb::MAX_DEPTH;

/// The placeholder of one of the peer's promises in a payload expression, replaced
/// by its resolution before the actor sees it (the peer cannot write it: `$` forms
/// from it are refused as malformed).
const PROMISE: &str = "$promise";

/// The placeholder of the peer's promise `id` (negated).
pub(super) fn placeholder(id: u64) -> Value {
    capnweb_special(PROMISE, [Value::from(id)])
}

fn placeholder_id(value: &Value) -> Option<u64> {
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(code), id]) if code == PROMISE => id.as_u64(),
        _ => None,
    }
}

/// Payload expressions on their way to the actor, with the capabilities they carry
/// and the peer's promises among them still unsettled: a push's arguments, or (one
/// value) a resolution of one of this side's pushes.
#[derive(Default)]
pub(super) struct Parts {
    pub(super) values: Vec<Value>,
    pub(super) caps: Vec<CapDescriptor>,
    /// The peer's promises whose placeholders are among the values (ids negated).
    pub(super) promises: Vec<u64>,
    /// The bytes of the messages they came in.
    pub(super) size: usize,
    /// Resolutions of the promises settled so far, their capabilities numbered
    /// among `caps`: put in place once the last settles, in one pass over the
    /// values (a pass per settlement would cost a large value times its promises).
    resolved: HashMap<u64, Value>,
}

impl Parts {
    /// Values with the capabilities and unsettled promises among them, from
    /// messages of `size` bytes.
    pub(super) fn new(
        values: Vec<Value>,
        caps: Vec<CapDescriptor>,
        promises: Vec<u64>,
        size: usize,
    ) -> Self {
        Parts {
            values,
            caps,
            promises,
            size,
            resolved: HashMap::new(),
        }
    }

    /// Takes the resolution of promise `id`, numbering its capabilities after
    /// these; once none is left unsettled, puts every resolution where its promise
    /// was. Says why not when the values would grow beyond `max_size` bytes or the
    /// nesting limit; what the resolution carried is among these parts all the
    /// same, to give back with them.
    fn settle(&mut self, id: u64, resolution: Parts, max_size: usize) -> Result<(), String> {
        let Parts {
            values,
            caps,
            promises,
            size,
            resolved,
        } = resolution;
        let offset = self.caps.len();
        self.caps.extend(caps);
        self.promises.retain(|&p| p != id);
        self.promises.extend(promises);
        self.size += size;
        let value = values.into_iter().next().unwrap_or(Value::Null);
        for (id, mut value) in resolved.into_iter().chain([(id, value)]) {
            shift_caps(&mut value, offset);
            self.resolved.insert(id, value);
        }
        if self.size > max_size {
            return Err(format!(
                "the values with their promises' resolutions exceed {max_size} bytes"
            ));
        }
        if self.promises.is_empty() {
            let mut resolved = std::mem::take(&mut self.resolved);
            for value in &mut self.values {
                put(value, &mut resolved, 1)?;
            }
        }
        Ok(())
    }
}

/// Puts the `resolved` promises in place of their placeholders in `value` (at
/// `depth`), and in what they resolved to, within the nesting limit (which bounds
/// the recursion).
fn put(value: &mut Value, resolved: &mut HashMap<u64, Value>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH as usize {
        return Err(format!(
            "a promise's resolution nests deeper than {MAX_DEPTH} levels in the value it \
             goes into"
        ));
    }
    // A promise may resolve to a further promise.
    while let Some(resolution) = placeholder_id(value).and_then(|id| resolved.remove(&id)) {
        *value = resolution;
    }
    match value {
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| put(v, resolved, depth + 1)),
        Value::Object(map) => map
            .values_mut()
            .try_for_each(|v| put(v, resolved, depth + 1)),
        _ => Ok(()),
    }
}

/// What waits for one of the peer's promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A push of the peer's (it is in `Translator::waiting`).
    Push(QuestionId),
    /// A resolution of this side's push (by its import id), parked here.
    Return(u64),
}

/// A resolution of this side's push, waiting for the promises in it.
struct Parked {
    question: QuestionId,
    parts: Parts,
}

/// The peer's promises this side waits for, and the resolutions parked for them.
#[derive(Default)]
pub(super) struct Promises {
    /// Unsettled promises (ids negated), with what waits for each.
    pending: HashMap<u64, Owner>,
    /// The largest id the peer has used for a promise (negated).
    newest: u64,
    /// Resolutions of this side's pushes waiting for promises, by import id.
    parked: HashMap<u64, Parked>,
}

impl Promises {
    /// How many promises are unsettled.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// The tables that still hold something (for the tests).
    #[cfg(test)]
    pub(super) fn residue(&self) -> Vec<String> {
        let mut residue = Vec::new();
        if !self.pending.is_empty() {
            residue.push(format!("{} promises unsettled", self.pending.len()));
        }
        if !self.parked.is_empty() {
            residue.push(format!("{} resolutions parked", self.parked.len()));
        }
        residue
    }

    /// The peer introduces promise `id` (negated); reusing a pending one's id is a
    /// protocol error.
    pub(super) fn introduce(&mut self, id: u64) -> Checked<()> {
        if self.pending.contains_key(&id) {
            return malformed(format!(
                "a promise with the id -{id} of a promise still pending"
            ));
        }
        self.newest = self.newest.max(id);
        Ok(())
    }
}

/// How one of the peer's promises settled, as the translator takes it.
enum Settled {
    Resolved(Parts),
    /// Rejected by the peer with this error expression.
    Rejected(Value),
    /// Not taken, for this reason: resolved to what this server does not take, or
    /// never to settle.
    Refused(String),
}

impl Translator {
    /// Whether `more` waiting pushes or unsettled promises fit in the limit.
    pub(super) fn room_for(&self, more: usize) -> Checked<()> {
        if self.waiting.len() + self.promises.len() + more > self.max_waiting {
            return Err(Bad::OverLimit(format!(
                "more than {} pushes and promises waiting (pushes for the results they depend \
                 on, promises to settle)",
                self.max_waiting
            )));
        }
        Ok(())
    }

    /// Has `owner` wait for the peer's promises `ids`.
    pub(super) fn await_promises(&mut self, ids: &[u64], owner: Owner) -> Checked<()> {
        for &id in ids {
            if self.promises.pending.insert(id, owner).is_some() {
                return malformed(format!("promise -{id} passed twice"));
            }
        }
        Ok(())
    }

    /// Releases promises of the peer's that nothing here waits for any more.
    fn release_promises(&mut self, ids: &[u64]) {
        for &id in ids {
            self.promises.pending.remove(&id);
            self.send(serde_json::json!(["release", -(id as i64), 1]));
        }
    }

    /// Gives back what parts carry: the peer's objects and promises.
    pub(super) fn release_parts(&mut self, parts: &Parts) {
        self.release_imports(&parts.caps);
        self.release_promises(&parts.promises);
    }

    /// A resolution of this side's push `k` (the actor's `question`) with promises
    /// in it: parked until they settle.
    pub(super) fn park(&mut self, k: u64, question: QuestionId, parts: Parts) -> Checked<()> {
        self.room_for(parts.promises.len())?;
        self.await_promises(&parts.promises, Owner::Return(k))?;
        self.promises.parked.insert(k, Parked { question, parts });
        Ok(())
    }

    /// Whether a resolution of this side's push `k` is parked.
    pub(super) fn is_parked(&self, k: u64) -> bool {
        self.promises.parked.contains_key(&k)
    }

    /// The actor no longer wants the result of this side's push `k`: a resolution
    /// parked for it goes, with what it carried.
    pub(super) fn unpark(&mut self, k: u64) {
        if let Some(parked) = self.promises.parked.remove(&k) {
            self.release_parts(&parked.parts);
        }
    }

    /// A resolve (`Ok`) or reject (`Err`) of the peer's promise `id` (negated).
    pub(super) fn on_settle(&mut self, id: u64, outcome: Result<&Value, &Value>) -> Checked<()> {
        if id > self.promises.newest {
            return malformed(format!(
                "a settlement of -{id}, which is no promise the peer sent"
            ));
        }
        let settled = match outcome {
            Ok(value) => {
                let (parts, unsupported) = self.import_parts(value)?;
                match unsupported {
                    None => Settled::Resolved(parts),
                    Some(why) => {
                        self.release_parts(&parts);
                        Settled::Refused(why)
                    }
                }
            }
            Err(error) => {
                self.release_carried(error)?;
                Settled::Rejected(error.clone())
            }
        };
        self.settle(id, settled)
    }

    /// The peer sends nothing more (an HTTP batch's request is all read): its
    /// unsettled promises never settle, and what waits for them is refused now
    /// rather than when the batch times out.
    pub(crate) fn peer_ended(&mut self) {
        let mut ids: Vec<u64> = self.promises.pending.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let why = format!("the request ended before promise -{id} settled");
            // A refusal adds no promises, so it cannot go over the limit.
            let _ = self.settle(id, Settled::Refused(why));
        }
    }

    /// Settles promise `id` for what waits for it, if anything does.
    fn settle(&mut self, id: u64, settled: Settled) -> Checked<()> {
        let Some(owner) = self.promises.pending.remove(&id) else {
            // Released by this side, or settled already: nothing waits for it.
            if let Settled::Resolved(parts) = &settled {
                self.release_parts(parts);
            }
            return Ok(());
        };
        // The peer keeps its promise until the receiver lets go, which `capnweb`
        // does on settling.
        self.send(serde_json::json!(["release", -(id as i64), 1]));
        match owner {
            Owner::Push(question) => self.settle_push(question, id, settled),
            Owner::Return(k) => self.settle_return(k, id, settled),
        }
    }

    /// The peer's expression, whose promises are allowed, as parts (the size of
    /// the message it came in), and the first form met that is not supported.
    pub(super) fn import_parts(&mut self, value: &Value) -> Checked<(Parts, Option<String>)> {
        let size = self.message_size;
        let mut importing = self.importing_promises();
        let value = importing.expr(value)?;
        Ok(importing.into_parts(vec![value], size))
    }

    fn settle_push(&mut self, question: QuestionId, id: u64, settled: Settled) -> Checked<()> {
        let max_size = self.max_message;
        let args = self
            .waiting
            .get_mut(question)
            .and_then(|push| push.args.as_mut());
        let Some(args) = args else {
            // Every push leaving `waiting` gives its promises back: not reached.
            if let Settled::Resolved(parts) = &settled {
                self.release_parts(parts);
            }
            return Ok(());
        };
        // Released already (by `on_settle`).
        args.promises.retain(|&p| p != id);
        let (added, error) = match settled {
            Settled::Resolved(parts) => {
                let added = (parts.promises.clone(), exports_in(&parts.caps));
                let error = args
                    .settle(id, parts, max_size)
                    .err()
                    .map(|e| error_expr(&e));
                (added, error)
            }
            Settled::Rejected(error) => (Default::default(), Some(error)),
            Settled::Refused(why) => (Default::default(), Some(error_expr(&why))),
        };
        let (promises, exports) = added;
        // Held as the push's other objects of ours are while it waits (`take_push`).
        for &export in &exports {
            self.holds.hold(export);
        }
        match error {
            None => {
                self.room_for(promises.len())?;
                self.await_promises(&promises, Owner::Push(question))?;
                self.drain_waiting(false);
            }
            Some(error) => {
                let push = self.waiting.remove(question).expect("found above");
                let held = push.exports();
                self.refuse(question, push.args, error);
                for export in held {
                    self.unhold(export);
                }
                self.drain_waiting(true);
            }
        }
        Ok(())
    }

    fn settle_return(&mut self, k: u64, id: u64, settled: Settled) -> Checked<()> {
        let max_size = self.max_message;
        let Some(parked) = self.promises.parked.get_mut(&k) else {
            if let Settled::Resolved(parts) = &settled {
                self.release_parts(parts);
            }
            return Ok(());
        };
        // Released already (by `on_settle`).
        parked.parts.promises.retain(|&p| p != id);
        let settled = match settled {
            Settled::Resolved(parts) => {
                let added = parts.promises.clone();
                parked
                    .parts
                    .settle(id, parts, max_size)
                    .map(|()| added)
                    .map_err(WireError::Undecodable)
            }
            Settled::Rejected(error) => Err(thrown(&error)),
            Settled::Refused(why) => Err(WireError::Undecodable(why)),
        };
        match settled {
            Ok(_) if parked.parts.promises.is_empty() => {
                let Parked { question, parts } =
                    self.promises.parked.remove(&k).expect("found above");
                self.returned(k, question, parts);
            }
            Ok(added) => {
                self.room_for(added.len())?;
                self.await_promises(&added, Owner::Return(k))?;
            }
            Err(error) => {
                let Parked { question, parts } =
                    self.promises.parked.remove(&k).expect("found above");
                self.release_parts(&parts);
                self.failed(question, &error);
            }
        }
        Ok(())
    }

    /// Gives the actor the result of this side's push `k` (its `question`), every
    /// promise in it settled.
    pub(super) fn returned(&mut self, k: u64, question: QuestionId, parts: Parts) {
        let Parts {
            mut values, caps, ..
        } = parts;
        let value = values.pop().unwrap_or(Value::Null);
        let needs_finish = !caps.is_empty();
        let header = Header::Return {
            question,
            outcome: Outcome::Value,
            caps,
        };
        self.frame(&header, &value);
        if !needs_finish {
            self.asked.remove(&k);
            self.by_question.remove(&question);
            self.send(serde_json::json!(["release", k, 1]));
        }
    }
}

/// Our objects among these capabilities.
fn exports_in(caps: &[CapDescriptor]) -> Vec<ExportId> {
    caps.iter()
        .filter_map(|c| match c {
            CapDescriptor::ReceiverHosted(id) => Some(*id),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parts(value: Value, caps: usize, promises: &[u64]) -> Parts {
        Parts::new(
            vec![value],
            (0..caps as u64).map(CapDescriptor::SenderHosted).collect(),
            promises.to_vec(),
            10,
        )
    }

    #[test]
    fn a_resolution_takes_the_place_of_its_promise_with_its_capabilities_after() {
        let mut args = parts(
            json!({"a": ["$cap", 0], "b": [[placeholder(7), placeholder(8)]]}),
            1,
            &[7, 8],
        );
        let resolution = parts(json!({"c": ["$cap", 0], "d": placeholder(9)}), 1, &[9]);
        args.settle(7, resolution, 100).unwrap();
        assert_eq!(args.caps.len(), 2);
        assert_eq!(args.promises, [8, 9]);
        assert_eq!(args.size, 20);
        // In place once the last settles: 9 to a further promise, then that one.
        args.settle(9, parts(placeholder(10), 0, &[10]), 100)
            .unwrap();
        args.settle(8, parts(json!(["$cap", 0]), 1, &[]), 100)
            .unwrap();
        assert_eq!(args.values[0]["b"][0][1], placeholder(8), "not yet");
        args.settle(10, parts(json!([[1, ["$cap", 0]]]), 1, &[]), 100)
            .unwrap();
        assert!(args.promises.is_empty());
        assert_eq!(
            args.values[0],
            json!({"a": ["$cap", 0], "b": [[
                {"c": ["$cap", 1], "d": [[1, ["$cap", 3]]]},
                ["$cap", 2]
            ]]})
        );
        assert_eq!(args.caps.len(), 4);
    }

    #[test]
    fn many_promises_in_a_large_value_cost_one_pass_over_it() {
        // A large argument with a promise after every thousand numbers: each
        // settlement used to search the whole value for its placeholder (here a
        // thousand searches of a million elements; minutes for a 32 MiB message).
        let promises: Vec<u64> = (1..=1000).collect();
        let mut items = Vec::new();
        for &id in &promises {
            items.extend((0..1000).map(Value::from));
            items.push(placeholder(id));
        }
        let mut args = parts(json!([items]), 0, &promises);
        let untouched = args.values.clone();
        for &id in promises[1..].iter().rev() {
            args.settle(id, parts(json!(id), 0, &[]), usize::MAX)
                .unwrap();
        }
        // Until the last settles, the value is not walked at all...
        assert_eq!(args.values, untouched);
        // ...and then once, every resolution put in place.
        args.settle(1, parts(json!(1), 0, &[]), usize::MAX).unwrap();
        assert_eq!(args.values[0][0][1000], 1);
        assert_eq!(args.values[0][0][1001 * 1000 - 1], 1000);
    }

    #[test]
    fn resolutions_may_not_grow_a_value_beyond_the_limits() {
        let mut args = parts(json!([[placeholder(1)]]), 0, &[1]);
        let why = args.settle(1, parts(json!(5), 2, &[]), 15).unwrap_err();
        assert!(why.contains("exceed 15 bytes"), "{why}");
        // What it carried is there to give back.
        assert_eq!(args.caps.len(), 2);

        // At the deepest level a value may reach: a scalar fits, an array does not.
        let deepest = || {
            let mut deep = placeholder(2);
            for _ in 0..MAX_DEPTH - 1 {
                deep = json!([deep]);
            }
            parts(deep, 0, &[2])
        };
        assert!(deepest().settle(2, parts(json!(1), 0, &[]), 100).is_ok());
        let why = deepest()
            .settle(2, parts(json!([[1]]), 0, &[]), 100)
            .unwrap_err();
        assert!(why.contains("deeper than 256"), "{why}");
    }
}
