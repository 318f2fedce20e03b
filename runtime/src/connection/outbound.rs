//! Frames on their way out, and chunks on their way in.
//!
//! A frame larger than `chunk_size` is sent as a series of chunks, and other frames
//! may pass between two chunks, so a large argument in flight does not hold up a small
//! call made after it. A frame only passes if nothing orders it after the large one:
//! calls on the same target, calls pipelined on its answer, and the `Finish` of its
//! question wait their turn, which keeps calls on one reference in order.
//!
//! The chunk format is the wire's (`wire::encode_chunk`); the receiver rebuilds the
//! message here, bounded by `max_frame_size`, one message at a time.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::error::RpcError;
use crate::wire::{encode_chunk, split_chunk, CapDescriptor, ExportId, Header, QuestionId, Target};
/// How many small frames may pass a large one before it gets its next chunk.
const PASS_LIMIT: usize = 16;
/// How far down the queue a frame that may pass is looked for.
const SCAN_LIMIT: usize = 64;
/// Frames below this (or half a chunk) may pass queued whole frames above it.
const SMALL: usize = 4096;

/// What a frame must stay behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Order {
    Call {
        target: Target,
        question: Option<QuestionId>,
        /// Answers named by `ReceiverAnswer` descriptors it carries.
        pipelined_on: Vec<QuestionId>,
        /// The peer's exports it hands back (`ReceiverHosted` descriptors).
        hosted: Vec<ExportId>,
    },
    /// A return handing back the peer's exports (`ReceiverHosted` descriptors).
    Return {
        hosted: Vec<ExportId>,
    },
    Finish(QuestionId),
    /// Stays behind frames that name the export it releases (calls to it, or
    /// messages handing it back): the peer must not drop the object before they
    /// arrive, as after a one-way call followed by dropping the handle.
    Release(ExportId),
    Disembargo,
    /// Stays behind everything queued before it (a `Revoked` must not reach the peer
    /// before the message that handed it the object).
    Barrier,
    /// Returns, releases, bootstraps, pings: nothing orders them after another frame.
    Free,
}

impl Order {
    pub(super) fn of(header: &Header) -> Order {
        match header {
            Header::Call {
                target,
                question,
                caps,
                ..
            } => Order::Call {
                target: *target,
                question: *question,
                pipelined_on: caps
                    .iter()
                    .filter_map(|c| match c {
                        CapDescriptor::ReceiverAnswer(q) => Some(*q),
                        _ => None,
                    })
                    .collect(),
                hosted: hosted(caps),
            },
            Header::Return { caps, .. } => match hosted(caps) {
                hosted if hosted.is_empty() => Order::Free,
                hosted => Order::Return { hosted },
            },
            Header::Finish { question } => Order::Finish(*question),
            Header::Release { id, .. } => Order::Release(*id),
            Header::Disembargo { .. } => Order::Disembargo,
            Header::Revoked { .. } => Order::Barrier,
            _ => Order::Free,
        }
    }

    /// Whether this frame must not pass `ahead`.
    fn follows(&self, ahead: &Order) -> bool {
        if *self == Order::Barrier {
            return true;
        }
        if let Order::Release(id) = self {
            return match ahead {
                Order::Call { target, hosted, .. } => {
                    *target == Target::Export(*id) || hosted.contains(id)
                }
                Order::Return { hosted } => hosted.contains(id),
                _ => false,
            };
        }
        let Order::Call {
            target: ahead_target,
            question: ahead_question,
            ..
        } = ahead
        else {
            return false;
        };
        match self {
            Order::Call {
                target,
                pipelined_on,
                ..
            } => {
                target == ahead_target
                    || ahead_question
                        .is_some_and(|q| *target == Target::Answer(q) || pipelined_on.contains(&q))
            }
            Order::Finish(q) => *ahead_question == Some(*q),
            Order::Disembargo | Order::Barrier => true,
            Order::Release(_) | Order::Return { .. } | Order::Free => false,
        }
    }
}

/// The peer's exports named by `ReceiverHosted` descriptors.
fn hosted(caps: &[CapDescriptor]) -> Vec<ExportId> {
    caps.iter()
        .filter_map(|c| match c {
            CapDescriptor::ReceiverHosted(id) => Some(*id),
            _ => None,
        })
        .collect()
}

struct Queued {
    frame: Bytes,
    order: Order,
}

/// A large frame being sent in chunks.
struct Chunking {
    frame: Bytes,
    order: Order,
    sent: usize,
    stream: u32,
}

/// The outbound queue of one connection.
pub(super) struct Outbound {
    queue: VecDeque<Queued>,
    current: Option<Chunking>,
    bytes: usize,
    chunk_size: usize,
    next_stream: u32,
    passed: usize,
}

impl Outbound {
    pub(super) fn new(chunk_size: usize) -> Self {
        Outbound {
            queue: VecDeque::new(),
            current: None,
            bytes: 0,
            chunk_size: chunk_size.max(1),
            next_stream: 0,
            passed: 0,
        }
    }

    pub(super) fn push(&mut self, frame: Bytes, order: Order) {
        self.bytes += frame.len();
        self.queue.push_back(Queued { frame, order });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.current.is_none()
    }

    /// Bytes waiting, chunked or not.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next transport frame to send.
    pub(super) fn pop(&mut self) -> Option<Bytes> {
        if let Some(current) = &self.current {
            if self.passed < PASS_LIMIT {
                if let Some(i) = self.passable(&current.order) {
                    self.passed += 1;
                    let queued = self.queue.remove(i).expect("index in range");
                    self.bytes -= queued.frame.len();
                    return Some(queued.frame);
                }
            }
            self.passed = 0;
            return Some(self.next_chunk());
        }
        // A small frame may also pass whole frames that are not small (a stream's
        // batches are sized to fit one chunk, so they are never chunked):
        // the same rule as between chunks, so a deep queue of them does not hold
        // up a small call either.
        let front = self.queue.front()?;
        let small = SMALL.min(self.chunk_size / 2);
        if front.frame.len() >= small && self.passed < PASS_LIMIT {
            if let Some(i) = self.passable(&front.order).filter(|&i| i > 0) {
                if self.queue[i].frame.len() < small {
                    self.passed += 1;
                    let queued = self.queue.remove(i).expect("index in range");
                    self.bytes -= queued.frame.len();
                    return Some(queued.frame);
                }
            }
        }
        self.passed = 0;
        let queued = self.queue.pop_front()?;
        if queued.frame.len() <= self.chunk_size {
            self.bytes -= queued.frame.len();
            return Some(queued.frame);
        }
        self.next_stream = self.next_stream.wrapping_add(1);
        self.current = Some(Chunking {
            frame: queued.frame,
            order: queued.order,
            sent: 0,
            stream: self.next_stream,
        });
        Some(self.next_chunk())
    }

    /// The first queued frame that may pass the large one and everything before it.
    fn passable(&self, large: &Order) -> Option<usize> {
        let window = self.queue.len().min(SCAN_LIMIT);
        (0..window).find(|&i| {
            let order = &self.queue[i].order;
            !order.follows(large) && (0..i).all(|j| !order.follows(&self.queue[j].order))
        })
    }

    fn next_chunk(&mut self) -> Bytes {
        let current = self.current.as_mut().expect("a frame is being chunked");
        let end = (current.sent + self.chunk_size).min(current.frame.len());
        let last = end == current.frame.len();
        let chunk = encode_chunk(&current.frame[current.sent..end], current.stream, last);
        self.bytes -= end - current.sent;
        current.sent = end;
        if last {
            self.current = None;
        }
        chunk
    }
}

/// Rebuilds chunked messages, one at a time.
#[derive(Default)]
pub(super) struct Reassembly {
    stream: Option<u32>,
    buf: BytesMut,
}

impl Reassembly {
    /// Whether a message is partly received.
    pub(super) fn in_progress(&self) -> bool {
        self.stream.is_some()
    }

    /// Adds a chunk; returns the whole message once its last chunk arrived.
    pub(super) fn push(
        &mut self,
        chunk: &[u8],
        max_frame_size: usize,
    ) -> Result<Option<Bytes>, RpcError> {
        let (data, stream, last) = split_chunk(chunk);
        match self.stream {
            Some(current) if current != stream => {
                return Err(RpcError::BadMessage(format!(
                    "chunked message {stream} began before message {current} ended"
                )))
            }
            _ => self.stream = Some(stream),
        }
        let size = self.buf.len() + data.len();
        if size > max_frame_size {
            return Err(RpcError::FrameTooLarge {
                size,
                limit: max_frame_size,
            });
        }
        self.buf.extend_from_slice(data);
        if !last {
            return Ok(None);
        }
        self.stream = None;
        Ok(Some(std::mem::take(&mut self.buf).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{is_chunk, CHUNK_TRAILER as TRAILER};

    fn call(target: u64, question: u64) -> Order {
        Order::Call {
            target: Target::Export(target),
            question: Some(question),
            pipelined_on: Vec::new(),
            hosted: Vec::new(),
        }
    }

    #[test]
    fn a_release_stays_behind_frames_that_hand_its_object_back() {
        // A call on export 9 and a return, each handing back the peer's export 5,
        // both large; then the release of export 5, and an unrelated release.
        let header = |caps| Header::Call {
            question: Some(1),
            target: Target::Export(9),
            method: 1,
            caps,
        };
        let hands_back = Order::of(&header(vec![CapDescriptor::ReceiverHosted(5)]));
        let returns = Order::of(&Header::Return {
            question: 2,
            outcome: crate::wire::Outcome::Value,
            caps: vec![CapDescriptor::ReceiverHosted(5)],
        });
        let release = Order::of(&Header::Release { id: 5, count: 1 });
        assert!(release.follows(&hands_back));
        assert!(release.follows(&returns));
        assert!(!Order::Release(6).follows(&hands_back));
        assert!(!Order::Release(6).follows(&returns));

        let mut out = Outbound::new(10);
        out.push(Bytes::from(vec![0; 64]), hands_back);
        out.push(Bytes::from(vec![0; 64]), returns);
        out.push(Bytes::from_static(b"r5"), release);
        out.push(Bytes::from_static(b"r6"), Order::Release(6));
        let mut sent = Vec::new();
        while let Some(frame) = out.pop() {
            sent.push(
                if is_chunk(&frame) {
                    "chunk"
                } else {
                    std::str::from_utf8(&frame).unwrap()
                }
                .to_string(),
            );
        }
        let r5 = sent.iter().position(|s| s == "r5").unwrap();
        let r6 = sent.iter().position(|s| s == "r6").unwrap();
        assert_eq!(r5, sent.len() - 1, "after every chunk of both: {sent:?}");
        assert!(r6 < r5, "an unrelated release passes: {sent:?}");
    }

    #[test]
    fn large_frames_go_in_chunks_that_reassemble() {
        let mut out = Outbound::new(10);
        let large: Bytes = (0..95u8).collect::<Vec<_>>().into();
        out.push(large.clone(), call(1, 1));
        let mut back = Reassembly::default();
        let mut whole = None;
        let mut chunks = 0;
        while let Some(frame) = out.pop() {
            assert!(is_chunk(&frame) && frame.len() <= 10 + TRAILER);
            chunks += 1;
            whole = back.push(&frame, 1000).unwrap().or(whole);
        }
        assert_eq!(chunks, 10);
        assert_eq!(whole, Some(large));
        assert!(out.is_empty() && out.bytes() == 0);
    }

    #[test]
    fn independent_frames_pass_a_large_one_and_dependent_ones_wait() {
        let mut out = Outbound::new(10);
        out.push(Bytes::from(vec![0; 50]), call(1, 1));
        out.push(Bytes::from_static(b"same"), call(1, 2)); // same target: waits
        out.push(Bytes::from_static(b"fin"), Order::Finish(1)); // its finish: waits
        out.push(Bytes::from_static(b"rel"), Order::Release(1)); // its release: waits
        out.push(Bytes::from_static(b"other"), call(2, 3)); // other target: passes
        out.push(Bytes::from_static(b"ret"), Order::Free); // a return: passes
        let mut sent = Vec::new();
        while let Some(frame) = out.pop() {
            sent.push(if is_chunk(&frame) {
                "chunk".to_string()
            } else {
                String::from_utf8(frame.to_vec()).unwrap()
            });
        }
        assert_eq!(sent[0], "chunk");
        assert_eq!(sent[1], "other");
        assert_eq!(sent[2], "ret");
        let after: Vec<&str> = sent
            .iter()
            .map(String::as_str)
            .skip_while(|s| *s == "chunk" || *s == "other" || *s == "ret")
            .collect();
        assert_eq!(after, ["same", "fin", "rel"]);
    }

    #[test]
    fn small_frames_pass_queued_whole_frames_that_are_not() {
        let mut out = Outbound::new(10);
        out.push(Bytes::from(vec![0; 8]), call(1, 1));
        out.push(Bytes::from(vec![0; 8]), call(1, 2));
        out.push(Bytes::from_static(b"p"), call(2, 3)); // other target: passes
        out.push(Bytes::from_static(b"s"), call(1, 4)); // same target: waits
        let sent: Vec<usize> = std::iter::from_fn(|| out.pop()).map(|f| f.len()).collect();
        assert_eq!(sent, [1, 8, 8, 1]);
    }

    #[test]
    fn reassembly_is_bounded_and_one_at_a_time() {
        let mut out = Outbound::new(10);
        out.push(Bytes::from(vec![1; 30]), Order::Free);
        let first = out.pop().unwrap();
        let mut back = Reassembly::default();
        assert!(matches!(back.push(&first, 15), Ok(None)));
        let second = out.pop().unwrap();
        assert!(matches!(
            back.push(&second, 15),
            Err(RpcError::FrameTooLarge { .. })
        ));
        let mut other = Outbound::new(10);
        other.next_stream = 41;
        other.push(Bytes::from(vec![2; 30]), Order::Free);
        let mut back = Reassembly::default();
        back.push(&first, 100).unwrap();
        assert!(matches!(
            back.push(&other.pop().unwrap(), 100),
            Err(RpcError::BadMessage(_))
        ));
    }
}
