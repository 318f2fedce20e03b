//! JSON via serde_json: readable on the wire, for debugging and non-Rust peers.

use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::Serialize;

use super::budget::Budget;
use super::{Codec, CodecError};

/// JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let mut budget = Budget::for_input(bytes.len());
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = budget
            .seed::<T>()
            .deserialize(&mut de)
            .map_err(|e| budget.error(e))?;
        de.end().map_err(CodecError::new)?;
        Ok(value)
    }
}
