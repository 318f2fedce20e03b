//! A hostile or broken peer, speaking raw frames: every protocol violation ends the
//! offending connection with a clear reason (or fails just the call, where that is
//! safe), and nothing panics or grows with the ids it invents.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;

use crate::codec::AnyCodec;
use crate::error::WireError;
use crate::transport::{memory, MemoryTransport};
use crate::wire::{decode_frame, encode_frame, CapDescriptor, Header, Hello, Outcome, Target};
use crate::{CloseReason, Config, Connection, Stats};

#[crate::remote]
trait Probe {
    async fn echo(&self, x: u32) -> u32;
    async fn hang(&self);
    async fn make(&self) -> ProbeClient;
}

struct P;

impl Probe for P {
    async fn echo(&self, x: u32) -> u32 {
        x
    }
    async fn hang(&self) {
        std::future::pending::<()>().await
    }
    async fn make(&self) -> ProbeClient {
        ProbeClient::from_local(P)
    }
}

fn method(name: &str) -> u32 {
    <ProbeClient as crate::RemoteClient>::INTERFACE
        .methods
        .iter()
        .find(|m| m.name == name)
        .expect("method exists")
        .id
}

/// The far end of a served connection, driven by hand.
struct Raw {
    transport: MemoryTransport,
    codec: AnyCodec,
}

impl Raw {
    /// A served connection and its far end, past the opening exchange.
    async fn new() -> (Connection, Raw) {
        let (ours, theirs) = memory();
        let conn = Connection::builder()
            .root(ProbeServer::new(P))
            .connect(ours);
        let mut raw = Raw {
            transport: theirs,
            codec: AnyCodec::default(),
        };
        raw.hello().await;
        (conn, raw)
    }

    /// Sends the opening message a well-behaved peer sends first.
    async fn hello(&mut self) {
        let hello = Hello::ours(self.codec, Config::default().max_frame_size);
        self.send_bytes(hello.encode()).await;
    }

    async fn send<P: Serialize>(&mut self, header: Header, payload: &P) {
        let frame = encode_frame(self.codec, &header, payload).unwrap();
        self.send_bytes(frame).await;
    }

    async fn send_bytes(&mut self, frame: Bytes) {
        // The far side may already have hung up; that is what some tests expect.
        let _ = self.transport.send(frame).await;
    }

    async fn call<P: Serialize>(&mut self, question: u64, target: Target, name: &str, args: &P) {
        let header = Header::Call {
            question: Some(question),
            target,
            method: method(name),
            caps: Vec::new(),
        };
        self.send(header, args).await;
    }

    /// The next frame, skipping the peer's opening message; `None` when the
    /// connection ended.
    async fn recv(&mut self) -> Option<(Header, Bytes)> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.transport.next())
                .await
                .expect("no frame within 10 s")?
                .ok()?;
            if Hello::decode(&frame).is_none() {
                return Some(decode_frame(self.codec, frame).unwrap());
            }
        }
    }

    /// Reads the next `Return` and decodes its error, if it failed.
    async fn failure(&mut self) -> Option<WireError> {
        match self.recv().await {
            Some((
                Header::Return {
                    outcome: Outcome::Failed,
                    ..
                },
                payload,
            )) => Some(self.codec.decode(&payload).unwrap()),
            _ => None,
        }
    }

    async fn echo_works(&mut self, question: u64) -> bool {
        self.call(question, Target::Export(0), "echo", &(question as u32,))
            .await;
        match self.recv().await {
            Some((
                Header::Return {
                    outcome: Outcome::Value,
                    ..
                },
                payload,
            )) => self.codec.decode::<u32>(&payload).unwrap() == question as u32,
            _ => false,
        }
    }
}

/// Waits for `conn` to end and checks it ended on a protocol violation whose
/// description mentions `what`.
async fn ended_because(conn: &Connection, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the connection should end");
    let reason = conn.close_reason().unwrap();
    assert!(
        matches!(&reason, CloseReason::ProtocolViolation(why) if why.contains(what)),
        "reason {reason:?} should be a violation mentioning {what:?}"
    );
}

#[tokio::test]
async fn unknown_and_huge_ids_fail_only_the_call() {
    let (conn, mut raw) = Raw::new().await;
    raw.call(1, Target::Export(u64::MAX), "echo", &(1u32,))
        .await;
    assert!(matches!(
        raw.failure().await,
        Some(WireError::ObjectNotFound)
    ));
    raw.call(2, Target::Export(7), "echo", &(1u32,)).await;
    assert!(matches!(
        raw.failure().await,
        Some(WireError::ObjectNotFound)
    ));
    raw.call(3, Target::Answer(u64::MAX), "echo", &(1u32,))
        .await;
    assert!(matches!(
        raw.failure().await,
        Some(WireError::ObjectNotFound)
    ));
    // Unknown method, and arguments that do not decode.
    raw.send(
        Header::Call {
            question: Some(4),
            target: Target::Export(0),
            method: 0xdead_beef,
            caps: Vec::new(),
        },
        &(),
    )
    .await;
    assert!(matches!(
        raw.failure().await,
        Some(WireError::MethodNotFound)
    ));
    raw.call(5, Target::Export(0), "echo", &"not a number")
        .await;
    assert!(matches!(
        raw.failure().await,
        Some(WireError::BadArguments(_))
    ));
    // A finish for nothing, and a capability naming an export that does not exist.
    raw.send(Header::Finish { question: u64::MAX }, &()).await;
    raw.send(
        Header::Call {
            question: Some(6),
            target: Target::Export(0),
            method: method("echo"),
            caps: vec![CapDescriptor::ReceiverHosted(u64::MAX)],
        },
        &(6u32,),
    )
    .await;
    assert!(matches!(
        raw.recv().await,
        Some((Header::Return { question: 6, .. }, _))
    ));
    assert!(raw.echo_works(7).await, "still serving");
    assert!(!conn.is_closed());
    // Failed answers are kept (so calls pipelined on them can say why) until the
    // caller finishes them, as a well-behaved caller does.
    assert_eq!(conn.stats().await.unwrap().answers, 2);
    for question in [4, 5] {
        raw.send(Header::Finish { question }, &()).await;
    }
    assert!(raw.echo_works(8).await);
    assert_eq!(conn.stats().await.unwrap(), Stats::default());
}

#[tokio::test]
async fn a_duplicate_question_in_flight_ends_the_connection() {
    let (conn, mut raw) = Raw::new().await;
    raw.call(9, Target::Export(0), "hang", &()).await;
    raw.call(9, Target::Export(0), "hang", &()).await;
    ended_because(&conn, "already in flight").await;
    assert!(matches!(raw.recv().await, Some((Header::Abort { .. }, _))));
}

#[tokio::test]
async fn a_duplicate_of_a_question_still_waiting_ends_the_connection() {
    // Question 2 waits for question 1's answer (its handler never returns); a second
    // question 2, whatever it targets, would get a second return for one question.
    for duplicate in [
        Header::Call {
            question: Some(2),
            target: Target::Export(0),
            method: method("echo"),
            caps: Vec::new(),
        },
        Header::Bootstrap {
            question: 2,
            interface: "Probe".into(),
            fingerprint: 0,
        },
    ] {
        let (conn, mut raw) = Raw::new().await;
        raw.call(1, Target::Export(0), "hang", &()).await;
        raw.call(2, Target::Answer(1), "echo", &(5u32,)).await;
        raw.send(duplicate, &(5u32,)).await;
        ended_because(&conn, "question id 2 is already in flight").await;
        assert!(matches!(raw.recv().await, Some((Header::Abort { .. }, _))));
    }
}

#[tokio::test]
async fn releasing_more_than_was_handed_out_ends_the_connection() {
    let (conn, mut raw) = Raw::new().await;
    raw.call(1, Target::Export(0), "make", &()).await;
    let Some((Header::Return { caps, .. }, _)) = raw.recv().await else {
        panic!("expected a return");
    };
    let [CapDescriptor::SenderHosted(id)] = caps[..] else {
        panic!("expected one exported capability, got {caps:?}");
    };
    raw.send(Header::Release { id, count: 2 }, &()).await;
    ended_because(&conn, "release of 2 references").await;
}

#[tokio::test]
async fn releasing_an_unknown_export_ends_the_connection() {
    let (conn, mut raw) = Raw::new().await;
    raw.send(
        Header::Release {
            id: 12345,
            count: 1,
        },
        &(),
    )
    .await;
    ended_because(&conn, "unknown export").await;
}

#[tokio::test]
async fn a_return_for_a_question_never_asked_ends_the_connection() {
    let (conn, mut raw) = Raw::new().await;
    raw.send(
        Header::Return {
            question: 77,
            outcome: Outcome::Value,
            caps: Vec::new(),
        },
        &(),
    )
    .await;
    ended_because(&conn, "never asked").await;
}

#[tokio::test]
async fn frames_that_do_not_decode_end_the_connection() {
    for (frame, why) in [
        (&b"\x01"[..], "too short"),
        (&[0xff, 0xff, 0xff, 0x03, 0x00][..], "undecodable header"),
        (&[0x01, 0x02, 0xff, 0xff][..], "exceeds frame"),
    ] {
        let (conn, mut raw) = Raw::new().await;
        raw.send_bytes(Bytes::copy_from_slice(frame)).await;
        ended_because(&conn, why).await;
    }
}

/// A deterministic generator for the random frames.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    fn id(&mut self) -> u64 {
        match self.next() % 4 {
            0 => self.next() % 4,
            1 => u64::MAX - self.next() % 4,
            _ => self.next(),
        }
    }

    fn frame(&mut self, codec: AnyCodec) -> Bytes {
        let pick = self.next() % 10;
        let caps = (0..self.next() % 3)
            .map(|_| match self.next() % 3 {
                0 => CapDescriptor::SenderHosted(self.id()),
                1 => CapDescriptor::ReceiverHosted(self.id()),
                _ => CapDescriptor::ReceiverAnswer(self.id()),
            })
            .collect();
        let question = if self.next() % 5 == 0 {
            None
        } else {
            Some(self.id())
        };
        let target = if self.next() % 2 == 0 {
            Target::Export(self.id() % 3)
        } else {
            Target::Answer(self.id())
        };
        let header = match pick {
            0 => Header::Return {
                question: self.id(),
                outcome: Outcome::Value,
                caps,
            },
            1 => Header::Release {
                id: self.id(),
                count: self.next() % 3,
            },
            2 => Header::Finish {
                question: self.id(),
            },
            3 => Header::Disembargo {
                question: self.id(),
                reflected: self.next() % 2 == 0,
            },
            4 => Header::Bootstrap {
                question: self.id(),
                interface: "Probe".into(),
                fingerprint: self.next(),
            },
            5 => {
                let len = (self.next() % 64) as usize;
                return (0..len)
                    .map(|_| self.next() as u8)
                    .collect::<Vec<u8>>()
                    .into();
            }
            _ => Header::Call {
                question,
                target,
                method: [method("echo"), method("make"), self.next() as u32]
                    [(self.next() % 3) as usize],
                caps,
            },
        };
        let mut frame = encode_frame(codec, &header, &(self.next() as u32,))
            .unwrap()
            .to_vec();
        // Sometimes flip a byte.
        if self.next() % 4 == 0 && !frame.is_empty() {
            let at = (self.next() as usize) % frame.len();
            frame[at] ^= 1 << (self.next() % 8);
        }
        frame.into()
    }
}

#[tokio::test]
async fn thousands_of_random_frames_never_crash_a_connection() {
    let mut rng = Lcg(2024);
    let mut connections = 0;
    let mut sent = 0;
    for &codec in AnyCodec::ALL {
        while sent < 3000 * AnyCodec::ALL.len() {
            let (ours, theirs) = memory();
            let conn = Connection::builder()
                .codec(codec)
                .root(ProbeServer::new(P))
                .connect(ours);
            let mut raw = Raw {
                transport: theirs,
                codec,
            };
            raw.hello().await;
            connections += 1;
            for _ in 0..200 {
                raw.send_bytes(rng.frame(codec)).await;
                sent += 1;
                tokio::task::yield_now().await;
                if conn.is_closed() {
                    break;
                }
            }
            // Drain what it answered so its queue does not matter, then make sure it
            // either still serves or ended with a reason (never a panic).
            if !conn.is_closed() {
                let stats = tokio::time::timeout(Duration::from_secs(10), conn.stats()).await;
                assert!(stats.expect("a live connection answers").is_ok() || conn.is_closed());
            }
            drop(raw);
            tokio::time::timeout(Duration::from_secs(10), conn.closed())
                .await
                .expect("ends when the peer goes");
            let reason = conn.close_reason().unwrap();
            assert_ne!(reason, CloseReason::TaskStopped, "the connection task died");
        }
    }
    assert!(connections > 1);
}

/// Sends a call carrying `caps` on `target`.
async fn call_with(raw: &mut Raw, question: u64, target: Target, caps: Vec<CapDescriptor>) {
    let header = Header::Call {
        question: Some(question),
        target,
        method: method("echo"),
        caps,
    };
    raw.send(header, &(1u32,)).await;
}

/// Finishes `questions` and checks the answer table empties (a call that no one
/// wants any more never keeps anything).
async fn finishing_frees_everything(conn: &Connection, raw: &mut Raw, questions: &[u64]) {
    for &question in questions {
        raw.send(Header::Finish { question }, &()).await;
    }
    for _ in 0..100 {
        if conn.stats().await.unwrap().answers == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("answers left: {:?}", conn.stats().await.unwrap());
}

#[tokio::test]
async fn a_call_naming_its_own_answer_does_not_wait_for_itself() {
    let (conn, mut raw) = Raw::new().await;
    raw.call(1, Target::Export(0), "hang", &()).await;
    call_with(
        &mut raw,
        2,
        Target::Answer(1),
        vec![CapDescriptor::ReceiverAnswer(2)],
    )
    .await;
    assert!(
        raw.echo_works(50).await,
        "a round trip: the calls above have arrived"
    );
    assert_eq!(conn.stats().await.unwrap().answers, 2);
    finishing_frees_everything(&conn, &mut raw, &[2, 1]).await;
    assert!(raw.echo_works(9).await);
}

#[tokio::test]
async fn calls_naming_answers_not_yet_asked_cannot_wait_in_a_cycle() {
    let (conn, mut raw) = Raw::new().await;
    raw.call(1, Target::Export(0), "hang", &()).await;
    // 2 waits for 1 and names 3 (not asked yet); 3 waits for 2.
    call_with(
        &mut raw,
        2,
        Target::Answer(1),
        vec![CapDescriptor::ReceiverAnswer(3)],
    )
    .await;
    call_with(&mut raw, 3, Target::Answer(2), Vec::new()).await;
    assert!(
        raw.echo_works(50).await,
        "a round trip: the calls above have arrived"
    );
    assert_eq!(conn.stats().await.unwrap().answers, 3);
    finishing_frees_everything(&conn, &mut raw, &[3, 2, 1]).await;
    assert!(raw.echo_works(9).await);
}

#[tokio::test]
async fn a_disembargo_before_the_return_or_twice_ends_the_connection() {
    let (conn, mut raw) = Raw::new().await;
    raw.call(1, Target::Export(0), "hang", &()).await;
    let early = Header::Disembargo {
        question: 1,
        reflected: false,
    };
    raw.send(early, &()).await;
    ended_because(&conn, "has not returned").await;

    // `make` returns a capability, so its answer is kept; a call on it waits behind
    // a call that waits for a running answer.
    let (conn, mut raw) = Raw::new().await;
    raw.call(1, Target::Export(0), "make", &()).await;
    raw.call(2, Target::Export(0), "hang", &()).await;
    call_with(
        &mut raw,
        3,
        Target::Answer(1),
        vec![CapDescriptor::ReceiverAnswer(2)],
    )
    .await;
    for _ in 0..2 {
        let again = Header::Disembargo {
            question: 1,
            reflected: false,
        };
        raw.send(again, &()).await;
    }
    ended_because(&conn, "a second disembargo").await;
}

#[tokio::test]
async fn a_payload_in_an_unknown_codec_fails_its_call_and_only_calls_may_carry_one() {
    let (conn, mut raw) = Raw::new().await;
    let call = Header::Call {
        question: Some(1),
        target: Target::Export(0),
        method: method("echo"),
        caps: Vec::new(),
    };
    let foreign = Header::Foreign {
        codec: 9,
        header: Box::new(call),
    };
    raw.send(foreign, &(1u32,)).await;
    match raw.failure().await {
        Some(WireError::Undecodable(why)) => {
            assert!(why.contains("unknown codec (number 9)"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(raw.echo_works(2).await, "the connection lives on");
    let wrapped_finish = Header::Foreign {
        codec: 1,
        header: Box::new(Header::Finish { question: 2 }),
    };
    raw.send(wrapped_finish, &()).await;
    ended_because(&conn, "only a call or a return").await;
}
