//! Frames from the actor, turned into Cap'n Web messages: returns (held until
//! pulled), calls this side makes on the peer's objects, releases, and the
//! capabilities inside payloads.

use super::*;

impl Translator {
    /// Takes one frame from the actor.
    pub(crate) fn take_actor_frame(&mut self, frame: Bytes) {
        if Hello::decode(&frame).is_some() {
            return;
        }
        let (header, payload) = match decode_frame(self.codec, frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::error!(error = %e, "cannot decode our own frame");
                return;
            }
        };
        match header {
            Header::Return {
                question,
                outcome,
                caps,
            } => self.on_return(question, outcome, payload, caps),
            Header::Call {
                question,
                target,
                method,
                caps,
            } => self.on_call(question, target, method, &payload, caps),
            Header::Finish { question } => {
                if let Some(k) = self.by_question.remove(&question) {
                    self.asked.remove(&k);
                    self.unpark(k);
                    self.send(serde_json::json!(["release", k, 1]));
                }
            }
            Header::Release { id, count } => {
                if id != crate::wire::ROOT_EXPORT
                    && !self.on_pseudo_release(id)
                    && !self.on_writable_release(id, count)
                {
                    self.send(serde_json::json!(["release", -(id as i64), count]));
                }
            }
            Header::Bootstrap { question, .. } => {
                // The peer's main object is its export 0, always there.
                let header = Header::Return {
                    question,
                    outcome: Outcome::Value,
                    caps: vec![CapDescriptor::SenderHosted(crate::wire::ROOT_EXPORT)],
                };
                let payload = capnweb::to_value(&()).unwrap_or(Value::Null);
                self.frame(&header, &payload);
            }
            Header::Abort { reason } => {
                self.send(serde_json::json!(["abort", error_expr(&reason)]));
            }
            Header::Disembargo {
                question,
                reflected: false,
            } => {
                // Cap'n Web has no embargo: the calls reflected back arrive in the
                // order the peer forwards them.
                self.control(&Header::Disembargo {
                    question,
                    reflected: true,
                });
            }
            Header::Foreign { header, .. } => match *header {
                Header::Return { question, caps, .. } => {
                    let why = "a result forwarded from a connection with another codec \
                               cannot be translated to Cap'n Web";
                    let payload = encode_payload(self.codec, &WireError::Undecodable(why.into()))
                        .map(Bytes::from)
                        .unwrap_or_default();
                    self.on_return(question, Outcome::Failed, payload, caps);
                }
                Header::Call { question, caps, .. } => {
                    self.undescribe(&caps);
                    if let Some(question) = question {
                        let why = "a call forwarded from a connection with another codec \
                                   cannot be translated to Cap'n Web";
                        self.failed(question, &WireError::Undecodable(why.into()));
                    }
                }
                _ => {}
            },
            Header::Disembargo { .. } | Header::Ping | Header::Revoked { .. } => {}
        }
    }

    fn on_return(
        &mut self,
        question: QuestionId,
        outcome: Outcome,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
    ) {
        let running = matches!(
            self.answers.get(&question),
            Some(Answer {
                stage: Stage::Running,
                ..
            })
        );
        if !running {
            // Released before it returned.
            self.undescribe(&caps);
            return;
        }
        // Kept until the peer releases it, for property paths on it.
        self.take_caps(&caps);
        let held = Held {
            outcome,
            payload,
            caps,
        };
        self.done(question, held, true);
        self.drain_waiting(false);
    }

    /// Sends a pulled result as a resolve or a reject.
    pub(super) fn send_result(&mut self, question: QuestionId) {
        let Some(Answer {
            stage: Stage::Done { held, .. },
            ..
        }) = self.answers.get(&question)
        else {
            return;
        };
        let message = match held.resolution() {
            // Without capabilities there are no placeholders to replace.
            Ok(value) if held.caps.is_empty() => serde_json::json!(["resolve", question, value]),
            Ok(_) if !self.exports_fit(&held.caps) => {
                let error = self.exports_overloaded();
                serde_json::json!(["reject", question, error])
            }
            Ok(value) => {
                let caps = held.caps.clone();
                let value = self.export(value, &caps);
                serde_json::json!(["resolve", question, value])
            }
            Err(error) => serde_json::json!(["reject", question, error]),
        };
        self.send(message);
    }

    /// Whether the peer may get fresh ids for the actor's objects among `caps`
    /// (ids of streams counted too: a bound, not a count).
    pub(super) fn exports_fit(&self, caps: &[CapDescriptor]) -> bool {
        let fresh = caps
            .iter()
            .filter(|c| matches!(c, CapDescriptor::SenderHosted(_)))
            .count();
        self.exported.len() + fresh <= self.max_exports
    }

    /// Why a message with objects for the peer is refused, as the actor words it.
    fn exports_overloaded(&self) -> Value {
        let limit = format!("more than {} objects exported", self.max_exports);
        error_expr(&wire_error_text(WireError::Overloaded(limit)))
    }

    /// Replaces `["$cap", i]` placeholders with the peer's view of `caps[i]`.
    pub(super) fn export(&mut self, value: Value, caps: &[CapDescriptor]) -> Value {
        match value {
            Value::Array(items) => {
                if let [Value::String(code), index] = items.as_slice() {
                    if code == CAP || code == STREAM || code == WRITER {
                        let cap = index
                            .as_u64()
                            .and_then(|i| caps.get(usize::try_from(i).ok()?));
                        return match cap {
                            Some(cap) if code == STREAM => self.stream_out(*cap),
                            Some(cap) if code == WRITER => self.writable_out(*cap),
                            Some(cap) => self.reference(*cap),
                            None => error_expr("a capability missing from its message"),
                        };
                    }
                }
                Value::Array(items.into_iter().map(|v| self.export(v, caps)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, self.export(v, caps)))
                    .collect(),
            ),
            other => other,
        }
    }

    fn reference(&mut self, cap: CapDescriptor) -> Value {
        match cap {
            CapDescriptor::SenderHosted(id) => {
                self.next_export += 1;
                self.exported.insert(self.next_export, id);
                self.holds.hold(id);
                serde_json::json!(["export", -(self.next_export as i64)])
            }
            CapDescriptor::ReceiverHosted(id) => serde_json::json!(["import", -(id as i64)]),
            CapDescriptor::ReceiverAnswer(question) => match self.by_question.get(&question) {
                Some(&k) => serde_json::json!(["pipeline", k]),
                None => error_expr("a promise that was already released"),
            },
        }
    }

    /// A call the actor makes on one of the peer's objects.
    fn on_call(
        &mut self,
        question: Option<QuestionId>,
        target: Target,
        method: u32,
        payload: &[u8],
        caps: Vec<CapDescriptor>,
    ) {
        match target {
            Target::Export(id) if streams::Streams::stands_for(id) => {
                if let Some(question) = question {
                    self.failed(question, &WireError::MethodNotFound);
                }
                return self.on_pseudo_call(id, method, payload, caps);
            }
            Target::Export(id) if self.streams.is_writable(id) => {
                return self.on_writable_call(question, id, method, caps);
            }
            _ => {}
        }
        let target = match target {
            Target::Export(id) => Some(-(id as i64)),
            Target::Answer(q) => self.by_question.get(&q).map(|&k| k as i64),
        };
        let path = if method == CALLBACK_METHOD {
            Some(Vec::new())
        } else {
            by_name::name(method).map(|name| vec![Value::from(name)])
        };
        let args = capnweb::parse(payload);
        let (Some(target), Some(path), Ok(args)) = (target, path, args) else {
            self.undescribe(&caps);
            if let Some(question) = question {
                let error = if target.is_none() {
                    WireError::ObjectNotFound
                } else {
                    WireError::MethodNotFound
                };
                self.failed(question, &error);
            }
            return;
        };
        let args = match args.as_array().map(Vec::as_slice) {
            Some([Value::String(code), Value::Array(list)]) if code == ARGS => list.clone(),
            Some([Value::String(code)]) if code == "undefined" => Vec::new(),
            _ => vec![args],
        };
        if !self.exports_fit(&caps) {
            self.undescribe(&caps);
            if let Some(question) = question {
                let limit = format!("more than {} objects exported", self.max_exports);
                self.failed(question, &WireError::Overloaded(limit));
            }
            return;
        }
        let args: Vec<Value> = if caps.is_empty() {
            args
        } else {
            // Held while the ids the peer gets for them are made.
            self.take_caps(&caps);
            let args = args.into_iter().map(|a| self.export(a, &caps)).collect();
            self.unhold_caps(&caps);
            args
        };
        self.next_push += 1;
        let k = self.next_push;
        self.send(serde_json::json!([
            "push",
            ["pipeline", target, path, args]
        ]));
        match question {
            Some(question) => {
                self.asked.insert(k, question);
                self.by_question.insert(question, k);
                self.send(serde_json::json!(["pull", k]));
            }
            None => self.send(serde_json::json!(["release", k, 1])),
        }
    }
}
