//! The protocol: frame layout, message headers and ids.
//!
//! A frame is one message: a little-endian `u16` header length, the header (a
//! [`Header`] in the connection's codec), then the payload (arguments, a result or a
//! [`WireError`](crate::error::WireError), also in the codec). Keeping the payload
//! outside the header lets the actor route a frame by decoding only the few header
//! bytes, and lets the caller's task, not the actor, decode the payload.
//!
//! The message set follows Cap'n Proto's level 1 design: a `Call` names a question id
//! chosen by the caller, which the callee's answer table tracks until it sends the
//! `Return`; `Finish` tells the callee the caller no longer wants an answer. Ids name
//! entries of the receiver's own tables, so a peer can only reach what it was handed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::AnyCodec;
use crate::error::RpcError;

/// Identifies a question: a call awaiting a return. Chosen by the caller, never reused
/// on a connection.
pub(crate) type QuestionId = u64;

/// Identifies an entry in the receiver's export table. The root object is export 0.
pub(crate) type ExportId = u64;

/// The export id of the root object offered by a connection's builder.
pub(crate) const ROOT_EXPORT: ExportId = 0;

/// What a call is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Target {
    /// An object in the receiver's export table.
    Export(ExportId),
}

/// How a `Return` ended; the payload's type follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The payload is the method's value (or its `Ok` value).
    Value,
    /// The payload is the method's application error (its `Err` value).
    AppError,
    /// The payload is a `WireError`.
    Failed,
}

/// The header of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Header {
    /// Asks for the receiver's root object, stating the interface expected. Payload: `()`.
    Bootstrap {
        question: QuestionId,
        interface: String,
        fingerprint: u64,
    },
    /// Calls `method` on `target`; `question` is `None` for a one-way call.
    /// Payload: the arguments as a tuple.
    Call {
        question: Option<QuestionId>,
        target: Target,
        method: u32,
    },
    /// Ends a question. Payload according to `outcome`.
    Return {
        question: QuestionId,
        outcome: Outcome,
    },
    /// The caller no longer wants the answer to `question`; the callee may stop work.
    Finish { question: QuestionId },
    /// The sender is about to close the connection because of `reason`.
    Abort { reason: String },
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

/// Encodes a whole frame: header length, header, payload.
pub(crate) fn encode_frame<P: Serialize + ?Sized>(
    codec: AnyCodec,
    header: &Header,
    payload: &P,
) -> Result<Vec<u8>, RpcError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0, 0]);
    codec
        .encode(header, &mut buf)
        .map_err(|e| RpcError::Encode(e.to_string()))?;
    let header_len = u16::try_from(buf.len() - 2)
        .map_err(|_| RpcError::Encode("message header longer than 65535 bytes".into()))?;
    buf[..2].copy_from_slice(&header_len.to_le_bytes());
    codec
        .encode(payload, &mut buf)
        .map_err(|e| RpcError::Encode(e.to_string()))?;
    Ok(buf)
}

/// Splits a received frame into its decoded header and its payload bytes.
pub(crate) fn decode_frame(codec: AnyCodec, frame: Bytes) -> Result<(Header, Bytes), RpcError> {
    let bad = |what: String| RpcError::BadMessage(what);
    if frame.len() < 2 {
        return Err(bad(format!("frame of {} bytes is too short", frame.len())));
    }
    let header_len = u16::from_le_bytes([frame[0], frame[1]]) as usize;
    let header_end = 2 + header_len;
    if header_end > frame.len() {
        return Err(bad(format!(
            "header length {header_len} exceeds frame of {} bytes",
            frame.len()
        )));
    }
    let header = codec
        .decode(&frame[2..header_end])
        .map_err(|e| bad(format!("undecodable header: {e}")))?;
    Ok((header, frame.slice(header_end..)))
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
            };
            let frame = encode_frame(codec, &header, &(1u8, "two")).unwrap();
            let (back, payload) = decode_frame(codec, Bytes::from(frame)).unwrap();
            assert_eq!(back, header);
            let args: (u8, String) = codec.decode(&payload).unwrap();
            assert_eq!(args, (1, "two".to_string()));
        }
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors() {
        for &codec in AnyCodec::ALL {
            for frame in [&b""[..], &[5], &[200, 0, 1, 2], &[3, 0, 0xff, 0xff, 0xff]] {
                let err = decode_frame(codec, Bytes::copy_from_slice(frame)).unwrap_err();
                assert!(matches!(err, RpcError::BadMessage(_)), "{err}");
            }
        }
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
