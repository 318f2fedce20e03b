//! The peer's pushes, from arrival to the actor or to an answer worked out here.
//!
//! A call by one name goes to the actor at once, as a `Call` (on an answer, the
//! actor's answer table makes it wait for the result, and sends it to the result's
//! capability). A property path on an answer, or a read, needs the result itself:
//! the push waits here until the actor returns it, then the path is followed
//! through the kept result (`paths.rs`): a read is answered here, a call goes to
//! the capability the path reaches, as a `Call` on that export. A push naming a
//! waiting push, as its target or among its arguments, waits too: the actor takes
//! an answer named before it exists as not found, while it does take question ids
//! out of order. A push with the peer's own promises among its arguments waits
//! until they settle (`promises.rs`). Nothing else waits, as on a `capnweb` server
//! (which delivers a call with a promise among its arguments once the promise
//! resolves, and calls without at once), so a handler awaiting a later push cannot
//! deadlock.
//!
//! The peer may release a push while waiting pushes still name it (`using` a
//! promise only to pipeline on it); it is then kept until they have run.

use std::collections::HashSet;

use super::paths::{self, Walked};
use super::promises::{Owner, Parts};
use super::*;

/// Why a read of an object of ours is refused.
const READ_REFUSED: &str = "properties of remote objects cannot be read from this server \
                            (its objects have methods only); call a method";
/// Why a path through an object of ours is refused.
const PATH_REFUSED: &str = "property paths through remote objects are not supported by this \
                            server (its objects have methods only); call a method";
/// Why a path through an object or promise of the peer's own is refused.
const OWN_REFUSED: &str = "property paths through your own objects and promises are not \
                           supported by this server; await the result first";

/// What a push is made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum On {
    /// One of our objects (the root is export 0).
    Export(ExportId),
    /// The result of an earlier push.
    Answer(QuestionId),
}

/// A push of the peer's: a call or a property read on one of our objects or answers.
pub(super) struct Push {
    pub(super) question: QuestionId,
    pub(super) on: On,
    pub(super) path: Vec<String>,
    /// A call's arguments; none for a property read.
    pub(super) args: Option<Parts>,
}

impl Push {
    /// Whether the actor takes it as it is on an answer of its own: a call by one
    /// name, or of the answer itself.
    fn by_name(&self) -> bool {
        self.args.is_some() && self.path.len() <= 1
    }

    /// Answers among its arguments (`["pipeline", n]`), of earlier pushes (one of
    /// a later push, or of itself, is not waited for: the actor finds no such
    /// answer, and no pushes can wait on each other in a cycle).
    fn pipelined(&self) -> impl Iterator<Item = QuestionId> + '_ {
        self.args
            .iter()
            .flat_map(|a| &a.caps)
            .filter_map(|c| match c {
                CapDescriptor::ReceiverAnswer(q) if *q < self.question => Some(*q),
                _ => None,
            })
    }

    /// Whether it names answer `question`, as its target or among its arguments.
    fn names(&self, question: QuestionId) -> bool {
        self.on == On::Answer(question) || self.pipelined().any(|q| q == question)
    }

    /// The peer's promises among its arguments, still unsettled.
    fn unsettled(&self) -> &[u64] {
        self.args.as_ref().map_or(&[], |a| &a.promises)
    }

    /// Our objects it names, held while it waits (the peer may release them
    /// meanwhile; the call still carries them).
    pub(super) fn exports(&self) -> Vec<ExportId> {
        let target = match self.on {
            On::Export(id) => Some(id),
            On::Answer(_) => None,
        };
        let carried = self
            .args
            .iter()
            .flat_map(|a| &a.caps)
            .filter_map(|c| match c {
                CapDescriptor::ReceiverHosted(id) => Some(*id),
                _ => None,
            });
        target.into_iter().chain(carried).collect()
    }
}

/// Pushes waiting for answers they depend on, in arrival order.
#[derive(Default)]
pub(super) struct Waiting {
    pushes: Vec<Push>,
}

impl Waiting {
    pub(super) fn len(&self) -> usize {
        self.pushes.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pushes.is_empty()
    }

    fn push(&mut self, push: Push) {
        self.pushes.push(push);
    }

    /// Whether a waiting push names answer `question`.
    fn names(&self, question: QuestionId) -> bool {
        self.pushes.iter().any(|p| p.names(question))
    }

    /// The answers waiting pushes name.
    fn named(&self) -> HashSet<QuestionId> {
        let targets = self.pushes.iter().filter_map(|p| match p.on {
            On::Answer(q) => Some(q),
            On::Export(_) => None,
        });
        let pipelined = self.pushes.iter().flat_map(Push::pipelined);
        targets.chain(pipelined).collect()
    }

    /// The waiting push `question`.
    pub(super) fn get_mut(&mut self, question: QuestionId) -> Option<&mut Push> {
        self.pushes.iter_mut().find(|p| p.question == question)
    }

    /// Takes out the waiting push `question`.
    pub(super) fn remove(&mut self, question: QuestionId) -> Option<Push> {
        let at = self.pushes.iter().position(|p| p.question == question)?;
        Some(self.pushes.remove(at))
    }
}

/// Whether `push` must wait: its target is a waiting push, or an answer without
/// its result when the path needs it; or an answer among its arguments is a
/// waiting push; or a promise of the peer's among them is unsettled.
fn must_wait(answers: &HashMap<QuestionId, Answer>, push: &Push) -> bool {
    if !push.unsettled().is_empty() {
        return true;
    }
    let stage = |q: QuestionId| answers.get(&q).map(|a| &a.stage);
    if let On::Answer(target) = push.on {
        match stage(target) {
            Some(Stage::Waiting) => return true,
            Some(Stage::Running) if !push.by_name() => return true,
            _ => {}
        }
    }
    push.pipelined()
        .any(|q| matches!(stage(q), Some(Stage::Waiting)))
}

impl Translator {
    /// Takes a push: runs it, or has it wait.
    pub(super) fn take_push(&mut self, push: Push) -> Checked<()> {
        if !must_wait(&self.answers, &push) {
            self.run(push);
            return Ok(());
        }
        self.room_for(1 + push.unsettled().len())?;
        let unsettled = push.unsettled().to_vec();
        self.await_promises(&unsettled, Owner::Push(push.question))?;
        for id in push.exports() {
            self.holds.hold(id);
        }
        self.answers
            .insert(push.question, Answer::new(Stage::Waiting));
        self.waiting.push(push);
        Ok(())
    }

    /// Runs a push whose answers are ready: to the actor, or answered here.
    fn run(&mut self, push: Push) {
        let target = match push.on {
            On::Export(id) => Target::Export(id),
            On::Answer(q) => Target::Answer(q),
        };
        let kept = match push.on {
            On::Export(_) => None,
            On::Answer(q) => match self.answers.get(&q).map(|a| &a.stage) {
                // A result worked out here: the actor never knew the answer.
                Some(Stage::Done { held, actor: false }) => Some(held.clone()),
                Some(Stage::Done { held, actor: true }) if !push.by_name() => Some(held.clone()),
                None if !push.by_name() => {
                    let why =
                        format!("no result to follow a property path through: {q} was released");
                    return self.refuse(push.question, push.args, error_expr(&why));
                }
                // By name: the actor's (if it no longer knows the answer, it says so).
                _ => None,
            },
        };
        match kept {
            Some(held) => self.follow(push, &held),
            None => self.call(push.question, target, &push.path, push.args),
        }
    }

    /// Follows a push's property path through the result it is made on.
    fn follow(&mut self, push: Push, held: &Held) {
        let Push {
            question,
            path,
            args,
            ..
        } = push;
        let value = match held.resolution() {
            Ok(value) => value,
            // A rejected answer rejects what is read or called through it.
            Err(error) => return self.refuse(question, args, error),
        };
        match paths::walk(value, &path) {
            Walked::Value(value) if args.is_none() => {
                let (value, caps) = paths::extract(value, &held.caps);
                self.answer_here(question, Held::value(&value, caps));
            }
            Walked::Value(_) => {
                let why = format!("'{}' is not a function.", path.join("."));
                self.refuse(question, args, type_error(&why));
            }
            Walked::Cap { index, rest } => match held.caps.get(index) {
                Some(&cap) if rest.is_empty() && args.is_none() => {
                    let value = capnweb_special(CAP, [Value::from(0)]);
                    self.answer_here(question, Held::value(&value, vec![cap]));
                }
                Some(&CapDescriptor::SenderHosted(id)) => {
                    self.call(question, Target::Export(id), rest, args);
                }
                Some(_) => self.refuse(question, args, error_expr(OWN_REFUSED)),
                None => {
                    let why = error_expr("a capability missing from its message");
                    self.refuse(question, args, why);
                }
            },
            Walked::Undefined { reading } => {
                let why = format!("Cannot read properties of undefined (reading '{reading}')");
                self.refuse(question, args, type_error(&why));
            }
        }
    }

    /// Sends a push to the actor as a call on `target`, named by `path` (empty: a
    /// `Callback`); a read, or a longer path, is refused (objects have no
    /// properties here).
    fn call(&mut self, question: QuestionId, target: Target, path: &[String], args: Option<Parts>) {
        let method = match path {
            [] => Some(CALLBACK_METHOD),
            [name] => Some(by_name::method_id(name)),
            _ => None,
        };
        match (method, args) {
            (Some(method), Some(Parts { values, caps, .. })) => {
                let header = Header::Call {
                    question: Some(question),
                    target,
                    method,
                    caps,
                };
                let payload = capnweb_special(ARGS, [Value::Array(values)]);
                self.frame(&header, &payload);
                self.answers
                    .entry(question)
                    .or_insert_with(|| Answer::new(Stage::Running))
                    .stage = Stage::Running;
            }
            (_, None) => self.refuse(question, None, error_expr(READ_REFUSED)),
            (None, args) => self.refuse(question, args, error_expr(PATH_REFUSED)),
        }
    }

    /// Answers a push here with a rejection, giving back what its arguments carried.
    pub(super) fn refuse(&mut self, question: QuestionId, args: Option<Parts>, error: Value) {
        if let Some(args) = args {
            self.release_parts(&args);
        }
        self.done(question, Held::rejection(error), false);
    }

    /// Answers a push here with a part of a kept result, holding its objects.
    fn answer_here(&mut self, question: QuestionId, held: Held) {
        self.hold_caps(&held.caps);
        self.done(question, held, false);
    }

    /// Records `question`'s result (`actor`: the actor's), and sends it if pulled.
    pub(super) fn done(&mut self, question: QuestionId, held: Held, actor: bool) {
        let answer = self
            .answers
            .entry(question)
            .or_insert_with(|| Answer::new(Stage::Running));
        if let Stage::Done { held: old, .. } = &answer.stage {
            self.kept_bytes -= old.payload.len();
        }
        self.kept_bytes += held.payload.len();
        answer.stage = Stage::Done { held, actor };
        if answer.pulled {
            self.awaited -= 1;
            self.send_result(question);
        }
    }

    /// The peer's release of its push `question`.
    pub(super) fn release_answer(&mut self, question: QuestionId) -> Checked<()> {
        let named = !self.waiting.is_empty() && self.waiting.names(question);
        let Some(answer) = self.answers.get_mut(&question).filter(|a| !a.released) else {
            return malformed(format!(
                "release of {question}, which is not a pending push"
            ));
        };
        if named {
            // Waiting pushes still need it; it goes once they have run.
            if answer.pulled && !matches!(answer.stage, Stage::Done { .. }) {
                self.awaited -= 1;
            }
            answer.pulled = false;
            answer.released = true;
            self.released.push(question);
            return Ok(());
        }
        if self.forget(question) {
            self.drain_waiting(true);
        }
        Ok(())
    }

    /// Drops a released answer: a waiting push with what its arguments carried, a
    /// running call with a `Finish`, a kept result with its objects (and a `Finish`
    /// when the actor keeps it too). Says whether a waiting push was dropped.
    fn forget(&mut self, question: QuestionId) -> bool {
        let Some(answer) = self.answers.remove(&question) else {
            return false;
        };
        if answer.pulled && !matches!(answer.stage, Stage::Done { .. }) {
            self.awaited -= 1;
        }
        match answer.stage {
            Stage::Waiting => {
                if let Some(push) = self.waiting.remove(question) {
                    for id in push.exports() {
                        self.unhold(id);
                    }
                    if let Some(args) = push.args {
                        self.release_parts(&args);
                    }
                }
                return true;
            }
            Stage::Running => self.control(&Header::Finish { question }),
            // The pipe's end goes on; nobody wants its answer.
            Stage::Local => {}
            Stage::Done { held, actor } => {
                self.kept_bytes -= held.payload.len();
                self.unhold_caps(&held.caps);
                if actor && held.needs_finish() {
                    self.control(&Header::Finish { question });
                }
            }
        }
        false
    }

    /// After an answer returned, or a waiting push was dropped (`dropped`): runs
    /// the waiting pushes now ready, and drops the released answers nothing
    /// waiting names any more, until neither changes anything.
    pub(super) fn drain_waiting(&mut self, dropped: bool) {
        let mut changed = dropped;
        loop {
            changed |= self.run_ready();
            // Only pushes leaving `waiting` can leave a released answer unnamed.
            if !changed || !self.forget_released() {
                break;
            }
            changed = false;
        }
    }

    /// One pass over the waiting pushes in arrival order, running those whose
    /// answers are ready; says whether any ran. Running one can only make later
    /// ones ready (pushes name earlier pushes only), so one pass is enough.
    fn run_ready(&mut self) -> bool {
        if self.waiting.is_empty() {
            return false;
        }
        let pushes = std::mem::take(&mut self.waiting.pushes);
        let before = pushes.len();
        for push in pushes {
            if must_wait(&self.answers, &push) {
                self.waiting.pushes.push(push);
                continue;
            }
            let exports = push.exports();
            self.run(push);
            // After its call, which the actor takes first.
            for id in exports {
                self.unhold(id);
            }
        }
        self.waiting.len() < before
    }

    /// Drops released answers that no waiting push names any more; says whether a
    /// waiting push was dropped (which may let others run).
    fn forget_released(&mut self) -> bool {
        let mut dropped = false;
        while !self.released.is_empty() {
            let named = self.waiting.named();
            let (kept, free): (Vec<_>, Vec<_>) = std::mem::take(&mut self.released)
                .into_iter()
                .partition(|q| named.contains(q));
            self.released = kept;
            if free.is_empty() {
                break;
            }
            let mut shrank = false;
            for question in free {
                shrank |= self.forget(question);
            }
            if !shrank {
                break;
            }
            dropped = true;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(question: QuestionId, on: On, path: &[&str], pipelined: &[QuestionId]) -> Push {
        Push {
            question,
            on,
            path: path.iter().map(|k| k.to_string()).collect(),
            args: Some(Parts::new(
                Vec::new(),
                pipelined
                    .iter()
                    .map(|&q| CapDescriptor::ReceiverAnswer(q))
                    .collect(),
                Vec::new(),
                0,
            )),
        }
    }

    fn answers(stages: [(QuestionId, Stage); 2]) -> HashMap<QuestionId, Answer> {
        stages
            .into_iter()
            .map(|(q, stage)| (q, Answer::new(stage)))
            .collect()
    }

    #[test]
    fn only_what_needs_a_missing_result_waits() {
        let answers = answers([(1, Stage::Running), (2, Stage::Waiting)]);
        let root = On::Export(crate::wire::ROOT_EXPORT);
        // By name on a running answer: the actor's to hold.
        assert!(!must_wait(
            &answers,
            &push(3, On::Answer(1), &["value"], &[])
        ));
        assert!(!must_wait(&answers, &push(3, root, &["add"], &[1])));
        // A path, or a read, needs the result.
        assert!(must_wait(
            &answers,
            &push(3, On::Answer(1), &["lead", "value"], &[])
        ));
        let mut read = push(3, On::Answer(1), &["name"], &[]);
        read.args = None;
        assert!(must_wait(&answers, &read));
        // Anything naming a waiting push.
        assert!(must_wait(
            &answers,
            &push(3, On::Answer(2), &["value"], &[])
        ));
        assert!(must_wait(&answers, &push(3, root, &["add"], &[2])));
    }

    #[test]
    fn a_push_with_an_unsettled_promise_of_the_peer_waits_whatever_its_target() {
        let answers = answers([(1, Stage::Running), (2, Stage::Waiting)]);
        let root = On::Export(crate::wire::ROOT_EXPORT);
        let mut call = push(3, root, &["add"], &[]);
        assert!(!must_wait(&answers, &call));
        call.args.as_mut().unwrap().promises.push(7);
        assert!(must_wait(&answers, &call));
        let mut by_name = push(3, On::Answer(1), &["value"], &[]);
        by_name.args.as_mut().unwrap().promises.push(8);
        assert!(must_wait(&answers, &by_name));
    }

    #[test]
    fn a_promise_on_a_later_push_is_not_waited_for() {
        let answers = answers([(1, Stage::Running), (5, Stage::Waiting)]);
        let root = On::Export(crate::wire::ROOT_EXPORT);
        let early = push(3, root, &["add"], &[5]);
        assert!(!must_wait(&answers, &early));
        assert!(!early.names(5));
        let mut waiting = Waiting::default();
        waiting.push(early);
        waiting.push(push(6, On::Answer(1), &["a", "b"], &[5]));
        assert_eq!(waiting.named(), HashSet::from([1, 5]));
        assert!(waiting.remove(6).is_some());
        assert_eq!(waiting.named(), HashSet::new());
    }
}
