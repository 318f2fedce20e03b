//! Streams going out: a farcall stream sent to the peer is written into a pipe
//! this side opens on it, within a window of writes the peer acknowledged.

use super::*;

/// Writes to the peer's pipe that may wait for its acknowledgement (the window of
/// a stream going out, in items).
const OUT_WINDOW: u64 = 64;

/// A stream going to the peer.
pub(super) struct Out {
    /// Where the items go: the peer's pipe (our import id) or the peer's
    /// `WritableStream` (its export, a negative id).
    pipe: i64,
    /// The peer's `WritableStream` (the actor's import id), when the items go there.
    writable: Option<ExportId>,
    /// The stream's source on the actor's export table; this side holds one
    /// reference until the stream ends.
    source: Option<ExportId>,
    /// Acknowledged writes not granted back yet.
    acked: u64,
}

/// The items of a batch (`(Vec<T>, bool)` as the codec writes it).
fn batch_items(payload: &[u8]) -> Option<Vec<Value>> {
    let mut value = capnweb::parse(payload).ok()?;
    let args = value.as_array_mut()?;
    if args.len() != 2 || args[0] != ARGS {
        return None;
    }
    let list = args[1].as_array_mut()?;
    match list.first_mut()?.as_array_mut()?.as_mut_slice() {
        [Value::Array(items)] => Some(std::mem::take(items)),
        _ => None,
    }
}

/// How a stream ended, from the source's `end` (`End` as the codec writes it).
fn end_reason(payload: &[u8]) -> Option<String> {
    match capnweb::parse(payload) {
        Ok(Value::String(done)) if done == "Done" => None,
        Ok(Value::Object(map)) => Some(match map.into_iter().next() {
            Some((_, Value::String(why))) => why,
            _ => "the stream failed".into(),
        }),
        _ => Some("the stream's end could not be read".into()),
    }
}

impl Translator {
    /// `["$stream", i]` in a value for the peer: opens a pipe on the peer, starts
    /// the stream's source with a sink this side stands for, and returns the
    /// readable end.
    pub(in crate::capnweb::translate) fn stream_out(&mut self, cap: CapDescriptor) -> Value {
        let CapDescriptor::SenderHosted(source) = cap else {
            return error_expr("a stream received from this peer cannot be sent back to it");
        };
        if let Some(why) = self.streams.refused {
            // Not held: the producer finds its stream dropped.
            return error_expr(why);
        }
        self.send(serde_json::json!(["pipe"]));
        self.next_push += 1;
        let pipe = self.next_push as i64;
        self.pump_into(source, pipe, None);
        serde_json::json!(["readable", pipe])
    }

    /// Starts the stream `source` (of the actor's) with a sink this side stands
    /// for, whose items go to `pipe`: a pipe this side opened, or the peer's
    /// `writable` (the actor's import id). Returns the sink.
    pub(super) fn pump_into(
        &mut self,
        source: ExportId,
        pipe: i64,
        writable: Option<ExportId>,
    ) -> ExportId {
        // The stream holds its source until it ends (see `holds.rs`).
        self.holds.hold(source);
        let sink = self.streams.new_id();
        self.streams.out.insert(
            sink,
            Out {
                pipe,
                writable,
                source: Some(source),
                acked: 0,
            },
        );
        let args = capnweb_special(
            ARGS,
            [Value::Array(vec![
                capnweb_special(CAP, [Value::from(0)]),
                Value::from(OUT_WINDOW),
            ])],
        );
        self.stream_call(source, START, vec![CapDescriptor::SenderHosted(sink)], args);
        sink
    }

    /// A call of the stream's source on the sink this side stands for: a batch of
    /// items or the end.
    pub(super) fn on_sink_call(
        &mut self,
        sink: ExportId,
        method: u32,
        payload: &[u8],
        caps: Vec<CapDescriptor>,
    ) {
        // After the end (the peer's reader cancelled, say) the pipe is released:
        // a write to it would break the session. The producer may still send
        // what its credit allowed while something else holds the source (a kept
        // result it is a field of): that goes nowhere.
        let live = self.streams.out.get(&sink).filter(|o| o.source.is_some());
        let Some(pipe) = live.map(|o| o.pipe) else {
            self.undescribe(&caps);
            return;
        };
        match method {
            ITEMS => {
                let Some(items) = batch_items(payload) else {
                    self.undescribe(&caps);
                    return self.end_out(sink, Some("a batch that could not be read".into()));
                };
                if !self.exports_fit(&caps) {
                    // As for a result or a call: the peer's ids stay within the limit.
                    self.undescribe(&caps);
                    let why = format!("more than {} objects exported", self.max_exports);
                    return self.end_out(sink, Some(why));
                }
                self.take_caps(&caps);
                for item in items {
                    let item = if caps.is_empty() {
                        item
                    } else {
                        self.export(item, &caps)
                    };
                    self.next_push += 1;
                    self.streams.writes.insert(self.next_push, (sink, true));
                    self.send(serde_json::json!([
                        "stream",
                        ["pipeline", pipe, ["write"], [item]]
                    ]));
                }
                self.unhold_caps(&caps);
            }
            END => {
                self.undescribe(&caps);
                self.end_out(sink, end_reason(payload));
            }
            _ => self.undescribe(&caps),
        }
    }

    /// Ends a stream going out: closes (or aborts) the peer's pipe, releases it and
    /// the source.
    fn end_out(&mut self, sink: ExportId, failure: Option<String>) {
        let Some(out) = self.streams.out.get_mut(&sink) else {
            return;
        };
        let Some(source) = out.source.take() else {
            return;
        };
        let (pipe, writable) = (out.pipe, out.writable);
        let call = match &failure {
            None => serde_json::json!(["pipeline", pipe, ["close"], []]),
            Some(why) => serde_json::json!(["pipeline", pipe, ["abort"], [error_expr(why)]]),
        };
        self.next_push += 1;
        self.streams.writes.insert(self.next_push, (sink, false));
        self.send(serde_json::json!(["stream", call]));
        match writable {
            Some(id) => self.writable_done(id),
            None => self.send(serde_json::json!(["release", pipe, 1])),
        }
        self.unhold(source);
    }

    /// The peer's result for one of the messages to its pipes, if `id` is one.
    /// Returns whether it was.
    pub(in crate::capnweb::translate) fn on_write_result(&mut self, id: u64, ok: bool) -> bool {
        let Some((sink, is_write)) = self.streams.writes.remove(&id) else {
            return false;
        };
        if !is_write {
            return true;
        }
        let Some(out) = self.streams.out.get_mut(&sink) else {
            return true;
        };
        match (ok, out.source) {
            (true, Some(source)) => {
                out.acked += 1;
                if out.acked >= OUT_WINDOW / 4 {
                    let grant = std::mem::take(&mut out.acked);
                    self.stream_call(source, CREDIT, Vec::new(), Value::from(grant));
                }
            }
            // The page's reader cancelled: stop the producer.
            (false, Some(_)) => self.end_out(sink, Some("the reader cancelled the stream".into())),
            (_, None) => {}
        }
        true
    }

    /// The source let go of the sink `id` this side stands for: it ended, or it
    /// was dropped.
    pub(super) fn on_sink_release(&mut self, id: ExportId) {
        self.end_out(id, Some("the stream's producer went away".into()));
        self.streams.out.remove(&id);
    }
}
