//! postcard: compact, maintained, with a stable wire specification.

use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::Serialize;

use super::budget::Budget;
use super::{Codec, CodecError};

/// postcard 1.x.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Postcard;

impl super::sealed::Sealed for Postcard {}

impl Codec for Postcard {
    const NAME: &'static str = "postcard";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let buf = std::mem::take(out);
        *out = postcard::to_extend(value, buf).map_err(CodecError::new)?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let mut budget = Budget::for_input(bytes.len());
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let value = budget
            .seed::<T>()
            .deserialize(&mut de)
            .map_err(|e| budget.error(e))?;
        let rest = de.finalize().map_err(CodecError::new)?;
        if !rest.is_empty() {
            return Err(CodecError(format!("{} trailing bytes", rest.len())));
        }
        Ok(value)
    }
}
