//! The protocol: frame layout, message headers and ids.
//!
//! A frame is one message: the payload (arguments, a result or a
//! [`WireError`](crate::error::WireError), in the connection's codec), then the header
//! (a [`Header`], in the codec too), then the header's length as a little-endian
//! `u16`. The header goes last so that a payload can be encoded straight into the
//! buffer that becomes the frame, by the caller's task, before the connection task
//! adds the header with the capability descriptors it alone can assign; and the
//! connection task routes a frame by decoding only the few header bytes.
//!
//! The message set follows Cap'n Proto's level 1 design: a `Call` names a question id
//! chosen by the caller, which the callee's answer table tracks until it sends the
//! `Return`; `Finish` tells the callee the caller no longer wants an answer; `Release`
//! gives back references to exported objects, with a count so that a release racing a
//! new reference to the same object never frees a live entry. Ids name entries of the
//! receiver's own tables, so a peer can only reach what it was handed.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::codec::AnyCodec;
use crate::error::RpcError;

#[cfg(fuzzing)]
pub mod fuzz;

/// Identifies a question: a call awaiting a return. Chosen by the caller, never reused
/// on a connection.
pub(crate) type QuestionId = u64;

/// Identifies an entry in the sender's (for `SenderHosted`) or receiver's export
/// table. The root object is export 0.
pub(crate) type ExportId = u64;

/// The export id of the root object offered by a connection's builder.
pub(crate) const ROOT_EXPORT: ExportId = 0;

/// What a call is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[allow(unreachable_pub, missing_docs)] // `pub` for `__private::fuzz` (`cfg(fuzzing)` builds)
pub enum Target {
    /// An object in the receiver's export table.
    Export(#[cfg_attr(fuzzing, arbitrary(with = fuzz::id))] ExportId),
    /// The capability that the receiver's answer to this question of the sender's
    /// holds (its first): promise pipelining.
    Answer(#[cfg_attr(fuzzing, arbitrary(with = fuzz::id))] QuestionId),
}

/// A capability inside a payload, as the receiver must interpret it. The payload
/// refers to capabilities by their index in the header's list of descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[allow(unreachable_pub, missing_docs)] // `pub` for `__private::fuzz` (`cfg(fuzzing)` builds)
pub enum CapDescriptor {
    /// An object the sender exports under this id; the receiver imports it and owes
    /// one `Release` reference for it.
    SenderHosted(#[cfg_attr(fuzzing, arbitrary(with = fuzz::id))] ExportId),
    /// An object the receiver itself exported under this id, coming home.
    ReceiverHosted(#[cfg_attr(fuzzing, arbitrary(with = fuzz::id))] ExportId),
    /// The capability the receiver's answer to this question will hold (a promise
    /// passed before it resolved).
    ReceiverAnswer(#[cfg_attr(fuzzing, arbitrary(with = fuzz::id))] QuestionId),
}

/// How a `Return` ended; the payload's type follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[allow(unreachable_pub, missing_docs)] // `pub` for `__private::fuzz` (`cfg(fuzzing)` builds)
pub enum Outcome {
    /// The payload is the method's value (or its `Ok` value).
    Value,
    /// The payload is the method's application error (its `Err` value).
    AppError,
    /// The payload is a `WireError`.
    Failed,
}

/// The header of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
#[allow(unreachable_pub, missing_docs)] // `pub` for `__private::fuzz` (`cfg(fuzzing)` builds)
pub enum Header {
    /// Asks for the receiver's root object, stating the interface expected. Payload: `()`.
    Bootstrap {
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::id))]
        question: QuestionId,
        interface: String,
        fingerprint: u64,
    },
    /// Calls `method` on `target`; `question` is `None` for a one-way call.
    /// Payload: the arguments as a tuple.
    Call {
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::opt_id))]
        question: Option<QuestionId>,
        target: Target,
        method: u32,
        caps: Vec<CapDescriptor>,
    },
    /// Ends a question. Payload according to `outcome`.
    Return {
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::id))]
        question: QuestionId,
        outcome: Outcome,
        caps: Vec<CapDescriptor>,
    },
    /// The caller no longer wants the answer to `question`; the callee may stop work.
    Finish {
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::id))]
        question: QuestionId,
    },
    /// The sender drops `count` references to the receiver's export `id`.
    Release {
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::id))]
        id: ExportId,
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::id))]
        count: u64,
    },
    /// Sent by a caller whose promise resolved to one of its own objects after it
    /// pipelined calls on it; the callee sends it back (`reflected`) after every call
    /// it reflected, and the caller releases the result only then, so calls made on
    /// the promise stay ahead of calls made on what it resolved to.
    Disembargo {
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::id))]
        question: QuestionId,
        reflected: bool,
    },
    /// Nothing to do: keeps a quiet connection from looking idle to the peer.
    Ping,
    /// The sender is about to close the connection because of `reason`.
    Abort { reason: String },
    /// The owner of the sender's export `id` revoked it: calls on it fail with
    /// `Revoked`, and the receiver's handles report it closed.
    Revoked {
        #[cfg_attr(fuzzing, arbitrary(with = fuzz::id))]
        id: ExportId,
    },
    /// A `Call` or `Return` whose payload is in another codec than the
    /// connection's (numbered as in the opening message): a payload forwarded from
    /// a connection with another codec travels as it is, since only its final
    /// receiver knows its type.
    Foreign { codec: u8, header: Box<Header> },
}

/// Longest abort reason put on the wire.
const MAX_REASON: usize = 1024;

impl Header {
    pub(crate) fn abort(reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Header::Abort {
            reason: reason[..end].to_owned(),
        }
    }
}

/// The largest `max_frame_size` a connection accepts (1 GiB).
pub const MAX_FRAME_CEILING: usize = 1 << 30;

// bincode's decode limit must admit any frame a connection can accept.
#[cfg(feature = "bincode")]
const _: () = assert!(MAX_FRAME_CEILING <= crate::codec::bincode::DECODE_LIMIT);

/// The protocol version this build speaks, sent in the opening [`Hello`].
pub(crate) const PROTOCOL_VERSION: u16 = 1;

/// Starts every opening message, so a peer speaking something else entirely is told
/// apart from a farcall peer of another version.
pub(crate) const HELLO_MAGIC: &[u8; 8] = b"farcall\0";

/// In the header-length slot, marks an opening message (0xFFFF marks a chunk).
const HELLO_MARK: u16 = 0xFFFE;

/// The opening message, each side's first frame: who it is and what it accepts.
///
/// Its layout is fixed and independent of the codec, so two ends that disagree on
/// the codec or the version can still read it and say so: the magic, the version
/// (`u16`), the codec's number (`u8`), the largest frame accepted (`u64`), all
/// little-endian, then the mark in place of a header length. A later version may
/// append fields before the mark; this one ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) version: u16,
    pub(crate) codec: u8,
    pub(crate) max_frame_size: u64,
}

impl Hello {
    /// Length of the fields this version writes, before the mark.
    const LEN: usize = HELLO_MAGIC.len() + 2 + 1 + 8;

    pub(crate) fn ours(codec: AnyCodec, max_frame_size: usize) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            codec: codec.wire_id(),
            max_frame_size: max_frame_size as u64,
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(Self::LEN + 2);
        buf.extend_from_slice(HELLO_MAGIC);
        buf.extend_from_slice(&self.version.to_le_bytes());
        buf.extend_from_slice(&[self.codec]);
        buf.extend_from_slice(&self.max_frame_size.to_le_bytes());
        buf.extend_from_slice(&HELLO_MARK.to_le_bytes());
        buf.freeze()
    }

    /// Reads a peer's first frame; `None` if it is not an opening message at all.
    pub(crate) fn decode(frame: &[u8]) -> Option<Self> {
        let (body, mark) = frame.split_at_checked(frame.len().checked_sub(2)?)?;
        if u16::from_le_bytes([mark[0], mark[1]]) != HELLO_MARK
            || body.len() < Self::LEN
            || !body.starts_with(HELLO_MAGIC)
        {
            return None;
        }
        let at = HELLO_MAGIC.len();
        Some(Hello {
            version: u16::from_le_bytes([body[at], body[at + 1]]),
            codec: body[at + 2],
            max_frame_size: u64::from_le_bytes(body[at + 3..at + 11].try_into().ok()?),
        })
    }

    /// Why a connection between `self` (ours) and `peer` cannot work, if it cannot.
    pub(crate) fn mismatch(&self, peer: &Hello) -> Option<String> {
        if peer.version != self.version {
            return Some(format!(
                "the peer speaks farcall protocol version {}, this side version {}",
                peer.version, self.version
            ));
        }
        if peer.codec != self.codec {
            return Some(format!(
                "the peer encodes with {}, this side with {}: both ends must use the same codec",
                AnyCodec::name_of(peer.codec),
                AnyCodec::name_of(self.codec)
            ));
        }
        None
    }
}

/// Room reserved after a payload for the header, so appending it rarely reallocates.
pub(crate) const HEADER_ROOM: usize = 64;

/// The least a frame adds to its payload: a one-byte header and its length.
pub(crate) const MIN_FRAME_OVERHEAD: usize = 3;

/// Starts a frame buffer with the payload encoded into it.
pub(crate) fn encode_payload<P: Serialize + ?Sized>(
    codec: AnyCodec,
    payload: &P,
) -> Result<Vec<u8>, RpcError> {
    let mut buf = Vec::with_capacity(64 + HEADER_ROOM);
    codec
        .encode(payload, &mut buf)
        .map_err(|e| RpcError::Encode(e.to_string()))?;
    buf.reserve(HEADER_ROOM);
    Ok(buf)
}

/// Completes a frame: appends the header and its length to the encoded payload.
pub(crate) fn finish_frame(
    codec: AnyCodec,
    payload: Bytes,
    header: &Header,
) -> Result<Bytes, RpcError> {
    let mut buf: Vec<u8> = match payload.try_into_mut() {
        Ok(unique) => BytesMut::into(unique),
        Err(shared) => shared.to_vec(),
    };
    let start = buf.len();
    header_codec(codec)
        .encode(header, &mut buf)
        .map_err(|e| RpcError::Encode(e.to_string()))?;
    // 0xFFFF marks a chunk (see `connection/outbound.rs`) and 0xFFFE an opening
    // message, so a header stays shorter.
    let header_len = u16::try_from(buf.len() - start)
        .ok()
        .filter(|&len| len < HELLO_MARK)
        .ok_or_else(|| RpcError::Encode("message header of 65534 bytes or more".into()))?;
    buf.extend_from_slice(&header_len.to_le_bytes());
    Ok(buf.into())
}

/// The codec of a connection's frame headers: its own, except on Cap'n Web
/// sessions, whose frames never leave the process (the translator writes and reads
/// them) and whose headers need none of the expression form: there the cheapest
/// codec built in (a binary one if any, else JSON without building a tree).
fn header_codec(codec: AnyCodec) -> AnyCodec {
    match codec {
        #[cfg(all(feature = "capnweb", feature = "bincode"))]
        AnyCodec::CapnWeb => AnyCodec::Bincode,
        #[cfg(all(feature = "capnweb", not(feature = "bincode"), feature = "postcard"))]
        AnyCodec::CapnWeb => AnyCodec::Postcard,
        #[cfg(all(
            feature = "capnweb",
            not(feature = "bincode"),
            not(feature = "postcard")
        ))]
        AnyCodec::CapnWeb => AnyCodec::Json,
        other => other,
    }
}

/// Encodes a frame whose payload has no capabilities (control messages).
pub(crate) fn encode_frame<P: Serialize + ?Sized>(
    codec: AnyCodec,
    header: &Header,
    payload: &P,
) -> Result<Bytes, RpcError> {
    finish_frame(codec, encode_payload(codec, payload)?.into(), header)
}

/// Splits a received frame into its decoded header and its payload bytes.
pub(crate) fn decode_frame(codec: AnyCodec, frame: Bytes) -> Result<(Header, Bytes), RpcError> {
    let bad = |what: String| RpcError::BadMessage(what);
    let len = frame.len();
    if len < 2 {
        return Err(bad(format!("frame of {len} bytes is too short")));
    }
    let header_len = u16::from_le_bytes([frame[len - 2], frame[len - 1]]) as usize;
    let Some(header_start) = (len - 2).checked_sub(header_len) else {
        return Err(bad(format!(
            "header length {header_len} exceeds frame of {len} bytes"
        )));
    };
    let header = header_codec(codec)
        .decode(&frame[header_start..len - 2])
        .map_err(|e| bad(format!("undecodable header: {e}")))?;
    Ok((header, frame.slice(..header_start)))
}

/// Marks a chunk where a frame has its header length (a header is never that long).
const CHUNK_MARK: [u8; 2] = [0xFF, 0xFF];
/// What a chunk adds to its slice: the stream id, a flags byte and the mark.
pub(crate) const CHUNK_TRAILER: usize = 4 + 1 + 2;
/// The flag of a message's last chunk.
const LAST_CHUNK: u8 = 1;

/// One chunk of a large frame: the slice, then the stream id (`u32` LE), a flags
/// byte (1 = last chunk) and `0xFFFF` where an ordinary frame has its header length.
pub(crate) fn encode_chunk(slice: &[u8], stream: u32, last: bool) -> Bytes {
    let mut chunk = BytesMut::with_capacity(slice.len() + CHUNK_TRAILER);
    chunk.extend_from_slice(slice);
    chunk.extend_from_slice(&stream.to_le_bytes());
    chunk.extend_from_slice(&[if last { LAST_CHUNK } else { 0 }]);
    chunk.extend_from_slice(&CHUNK_MARK);
    chunk.freeze()
}

/// Whether a received frame is a chunk.
pub(crate) fn is_chunk(frame: &[u8]) -> bool {
    frame.len() >= CHUNK_TRAILER && frame[frame.len() - 2..] == CHUNK_MARK
}

/// A chunk's slice, stream id and whether it is the last (`is_chunk` must hold).
pub(crate) fn split_chunk(chunk: &[u8]) -> (&[u8], u32, bool) {
    let end = chunk.len() - CHUNK_TRAILER;
    let stream = u32::from_le_bytes(chunk[end..end + 4].try_into().expect("4 bytes"));
    (&chunk[..end], stream, chunk[end + 4] & LAST_CHUNK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_every_codec() {
        for &codec in AnyCodec::ALL {
            let header = Header::Call {
                question: Some(u64::MAX),
                target: Target::Export(3),
                method: 0xdead_beef,
                caps: vec![
                    CapDescriptor::SenderHosted(7),
                    CapDescriptor::ReceiverHosted(0),
                ],
            };
            let frame = encode_frame(codec, &header, &(1u8, "two")).unwrap();
            let (back, payload) = decode_frame(codec, frame).unwrap();
            assert_eq!(back, header);
            let args: (u8, String) = codec.decode(&payload).unwrap();
            assert_eq!(args, (1, "two".to_string()));
        }
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors() {
        for &codec in AnyCodec::ALL {
            for frame in [&b""[..], &[5], &[1, 2, 200, 0], &[0xff, 0xff, 0xff, 3, 0]] {
                let err = decode_frame(codec, Bytes::copy_from_slice(frame)).unwrap_err();
                assert!(matches!(err, RpcError::BadMessage(_)), "{err}");
            }
        }
    }

    #[test]
    fn hello_round_trips_and_names_mismatches() {
        let ours = Hello::ours(AnyCodec::default(), 1 << 20);
        let frame = ours.encode();
        assert_eq!(Hello::decode(&frame), Some(ours));
        assert_eq!(ours.mismatch(&ours), None);
        // Fields a later version appends are skipped.
        let mut longer = frame[..frame.len() - 2].to_vec();
        longer.extend_from_slice(&[9, 9, 9]);
        longer.extend_from_slice(&HELLO_MARK.to_le_bytes());
        assert_eq!(Hello::decode(&longer), Some(ours));
        let other = Hello { version: 7, ..ours };
        assert!(ours.mismatch(&other).unwrap().contains("version 7"));
        let other = Hello { codec: 3, ..ours };
        let why = ours.mismatch(&other).unwrap();
        let ours_name = AnyCodec::default().name();
        assert!(why.contains("json") && why.contains(ours_name), "{why}");
        // Not an opening message: an ordinary frame, too short, wrong magic.
        let call = encode_frame(AnyCodec::default(), &Header::Ping, &()).unwrap();
        assert_eq!(Hello::decode(&call), None);
        assert_eq!(Hello::decode(&frame[4..]), None);
        assert_eq!(Hello::decode(&[0xFE, 0xFF]), None);
        assert_eq!(Hello::decode(&[]), None);
    }

    #[test]
    fn chunks_round_trip_and_are_told_from_frames() {
        let chunk = encode_chunk(b"slice", 7, true);
        assert!(is_chunk(&chunk));
        assert_eq!(split_chunk(&chunk), (&b"slice"[..], 7, true));
        let middle = encode_chunk(b"", u32::MAX, false);
        assert_eq!(split_chunk(&middle), (&b""[..], u32::MAX, false));
        let frame = encode_frame(AnyCodec::default(), &Header::Ping, &()).unwrap();
        assert!(!is_chunk(&frame));
        assert!(!is_chunk(&[0xFF, 0xFF]), "too short for a trailer");
    }

    #[test]
    fn abort_reason_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_REASON);
        let Header::Abort { reason } = Header::abort(&long) else {
            unreachable!()
        };
        assert!(reason.len() <= MAX_REASON && reason.chars().all(|c| c == 'é'));
    }
}
