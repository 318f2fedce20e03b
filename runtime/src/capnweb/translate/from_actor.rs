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
                    self.send(serde_json::json!(["release", k, 1]));
                }
            }
            Header::Release { id, count } => {
                if id != crate::wire::ROOT_EXPORT && !self.on_pseudo_release(id) {
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
        match self.answers.remove(&question) {
            Some(Answer::Running { pulled: true }) => {
                self.awaited -= 1;
                self.settle(question, outcome, payload, caps);
            }
            Some(Answer::Running { pulled: false }) => {
                self.answers.insert(
                    question,
                    Answer::Returned {
                        outcome,
                        payload,
                        caps,
                    },
                );
            }
            other => {
                // Released before it returned.
                if let Some(other) = other {
                    self.answers.insert(question, other);
                }
                self.undescribe(&caps);
            }
        }
    }

    /// Sends a pulled result as a resolve or a reject.
    pub(super) fn settle(
        &mut self,
        question: QuestionId,
        outcome: Outcome,
        payload: Bytes,
        caps: Vec<CapDescriptor>,
    ) {
        let needs_finish = outcome != Outcome::Value || !caps.is_empty();
        self.answers.insert(question, Answer::Sent { needs_finish });
        let value = match outcome {
            Outcome::Failed => {
                self.undescribe(&caps);
                let text = match self.codec.decode::<WireError>(&payload) {
                    Ok(error) => wire_error_text(error),
                    Err(e) => format!("the call failed (undecodable error: {e})"),
                };
                self.send(serde_json::json!(["reject", question, error_expr(&text)]));
                return;
            }
            Outcome::Value | Outcome::AppError => match capnweb::parse(&payload) {
                Ok(value) => value,
                Err(e) => {
                    self.undescribe(&caps);
                    let text = format!("the result could not be translated: {e}");
                    self.send(serde_json::json!(["reject", question, error_expr(&text)]));
                    return;
                }
            },
        };
        if let Some([Value::String(code), error, text]) = value.as_array().map(Vec::as_slice) {
            if code == ERR {
                let text = match text {
                    Value::String(text) => text.clone(),
                    _ => error_text(error),
                };
                self.undescribe(&caps);
                self.send(serde_json::json!(["reject", question, error_expr(&text)]));
                return;
            }
        }
        let value = match value {
            Value::Array(mut pair) if pair.len() == 2 && pair[0] == OK => pair.swap_remove(1),
            Value::Array(mut pair) if pair.len() == 2 && pair[0] == ARGS && pair[1].is_array() => {
                match pair.swap_remove(1) {
                    Value::Array(items) => capnweb::array(items),
                    _ => unreachable!("checked above"),
                }
            }
            value => value,
        };
        // Without capabilities there are no placeholders to replace.
        let value = if caps.is_empty() {
            value
        } else {
            self.export(value, &caps)
        };
        self.send(serde_json::json!(["resolve", question, value]));
    }

    /// Replaces `["$cap", i]` placeholders with the peer's view of `caps[i]`.
    pub(super) fn export(&mut self, value: Value, caps: &[CapDescriptor]) -> Value {
        match value {
            Value::Array(items) => {
                if let [Value::String(code), index] = items.as_slice() {
                    if code == CAP || code == STREAM {
                        let cap = index
                            .as_u64()
                            .and_then(|i| caps.get(usize::try_from(i).ok()?));
                        return match cap {
                            Some(cap) if code == STREAM => self.stream_out(*cap),
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
        let args: Vec<Value> = if caps.is_empty() {
            args
        } else {
            args.into_iter().map(|a| self.export(a, &caps)).collect()
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
