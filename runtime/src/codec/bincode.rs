//! bincode 2 (serde API). bincode is marked unmaintained (RUSTSEC-2025-0141), so the
//! version is pinned to `=2.0.1`; postcard and JSON are tested alternatives.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::budget::Budget;
use super::{Codec, CodecError};

/// The most bytes a decode may claim for containers: a frame can never be larger than
/// the hard ceiling on `max_frame_size` (1 GiB, `wire::MAX_FRAME_CEILING`, which
/// asserts at compile time that it is not above this), so no honest value needs
/// more. Written out rather than imported: codecs sit below the wire format.
pub(crate) const DECODE_LIMIT: usize = 1 << 30;

type Config = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

const CONFIG: Config = bincode::config::standard().with_limit::<DECODE_LIMIT>();

/// bincode 2 with varint integers and a decode limit (the default codec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Bincode;

impl super::sealed::Sealed for Bincode {}

impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(value, out, CONFIG)
            .map(drop)
            .map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let mut budget = Budget::for_input(bytes.len());
        let (value, used) =
            bincode::serde::seed_decode_from_slice(budget.seed::<T>(), bytes, CONFIG)
                .map_err(|e| budget.error(e))?;
        if used != bytes.len() {
            return Err(CodecError(format!("{} trailing bytes", bytes.len() - used)));
        }
        Ok(value)
    }
}
