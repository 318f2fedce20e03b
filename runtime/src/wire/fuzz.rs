//! What the `fuzz/` crate's targets use, built only with `--cfg fuzzing` (which
//! cargo-fuzz passes) and re-exported as `farcall::__private::fuzz`. Not for any
//! other use.
//!
//! The wire types themselves derive `arbitrary::Arbitrary` under the same cfg, so a
//! target builds frames from the real [`Header`] and [`WireError`] and cannot drift
//! from them. Their ids go through [`id`], biased the way real ids are.

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::codec::AnyCodec;
use crate::error::RpcError;

pub use super::{CapDescriptor, Header, Outcome, Target};
pub use crate::error::WireError;

/// The protocol version of this build (see `Hello`).
pub const PROTOCOL_VERSION: u16 = super::PROTOCOL_VERSION;

/// Starts every opening message.
pub const HELLO_MAGIC: &[u8; 8] = super::HELLO_MAGIC;

/// Ends every opening message, in place of a header length (little-endian).
pub const HELLO_MARK: u16 = super::HELLO_MARK;

/// The number naming `codec` in opening messages.
pub fn codec_number(codec: AnyCodec) -> u8 {
    codec.wire_id()
}

/// An id (question, export or reference count): mostly small, as ids are allocated
/// from 0 or 1 upwards, sometimes extreme, sometimes anything.
pub fn id(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=5 => u.int_in_range(0..=6)?,
        6 => u64::MAX - u.int_in_range(0..=1)?,
        _ => u.arbitrary()?,
    })
}

/// An optional id (a call's question: `None` for a one-way call), as
/// `Option::arbitrary` draws it, with the id from [`id`].
pub fn opt_id(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<u64>> {
    Ok(if bool::arbitrary(u)? {
        Some(id(u)?)
    } else {
        None
    })
}

/// A frame: `payload` (already encoded), then `header` encoded in `codec`, then the
/// header's length, as a connection writes it.
pub fn encode_frame(
    codec: AnyCodec,
    header: &Header,
    payload: Vec<u8>,
) -> Result<Vec<u8>, RpcError> {
    super::finish_frame(codec, Bytes::from(payload), header).map(Vec::from)
}

/// Splits `bytes` as a received frame with the connection's own frame decoder and,
/// when that succeeds, checks that the header re-encodes to itself and decodes the
/// payload as a few unrelated types. Results are discarded: what matters is that
/// nothing panics, whatever the bytes.
pub fn decode_frame(codec: AnyCodec, bytes: &[u8]) {
    let frame = Bytes::copy_from_slice(bytes);
    let Ok((header, payload)) = super::decode_frame(codec, frame) else {
        return;
    };
    if let Ok(again) = super::encode_frame(codec, &header, &()) {
        let (back, _) = super::decode_frame(codec, again).expect("re-encoded frame");
        assert_eq!(back, header, "header does not round-trip");
    }
    let _ = codec.decode::<WireError>(&payload);
    let _ = codec.decode::<(u64, String, Vec<u8>)>(&payload);
    let _ = codec.decode::<Vec<Option<Vec<u32>>>>(&payload);
    let _ = codec.decode::<(i64, f64, bool, char, ())>(&payload);
    let _ = codec.decode::<std::collections::BTreeMap<String, (u8, Option<Bytes>)>>(&payload);
}
