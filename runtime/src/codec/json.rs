//! JSON via serde_json: readable on the wire, for debugging and non-Rust peers. Byte
//! strings are base64 text (see [`Json`] and `byte_strings`).

mod byte_strings;

use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::Serialize;

use self::byte_strings::{Base64, WithBase64};
use super::budget::Budget;
use super::{Codec, CodecError};

/// JSON, as serde_json writes it, except for byte strings.
///
/// A byte string (a `Bytes`, a `serde_bytes` field, anything serialized with
/// `serialize_bytes`) is a base64 string, standard alphabet with padding, where
/// serde_json alone would write an array of numbers about 3.6 times its size. A plain
/// `Vec<u8>` is a sequence to serde, not a byte string, and stays an array of
/// numbers. A byte string is read from base64 text, with or without padding, or from
/// an array of numbers as older peers write it.
///
/// One case cannot be told apart: where serde buffers a value before it knows its
/// type (a `#[serde(flatten)]` field, an untagged or internally tagged enum, an
/// adjacently tagged one whose content comes before its tag), a byte string inside
/// reaches its type as a string, not through the codec, and `Bytes` and
/// `serde_bytes` take the string's characters as the bytes: the base64 text itself,
/// not what it encodes. Keep byte strings out of such types under this codec.
///
/// ```
/// use farcall::codec::{Codec, Json};
///
/// #[derive(serde::Serialize)]
/// struct Upload {
///     name: &'static str,
///     data: bytes::Bytes,
///     plain: Vec<u8>,
/// }
///
/// let mut out = Vec::new();
/// let upload = Upload { name: "a", data: bytes::Bytes::from_static(b"hi!"), plain: vec![1] };
/// Json::encode(&upload, &mut out)?;
/// assert_eq!(out, br#"{"name":"a","data":"aGkh","plain":[1]}"#);
/// # Ok::<(), farcall::codec::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Json;

impl super::sealed::Sealed for Json {}

impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        WithBase64(value)
            .serialize(&mut serde_json::Serializer::new(out))
            .map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let mut budget = Budget::for_input(bytes.len()).bytes_as::<Base64>();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = budget
            .seed::<T>()
            .deserialize(&mut de)
            .map_err(|e| budget.error(e))?;
        de.end().map_err(CodecError::new)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    use super::Json;
    use crate::codec::text_tests;

    fn encode<T: Serialize + ?Sized>(value: &T) -> String {
        text_tests::encode::<Json, T>(value)
    }

    fn decode<T: DeserializeOwned>(text: &str) -> Result<T, String> {
        text_tests::decode::<Json, T>(text)
    }

    fn round_trip<T>(value: &T, text: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        text_tests::round_trip::<Json, T>(value, text)
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Blob {
        name: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Message {
        Blobs(Vec<Blob>),
        Chunk {
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
            last: bool,
        },
        Pair(Bytes, Option<Bytes>),
    }

    fn blob(name: &str, data: &[u8]) -> Blob {
        Blob {
            name: name.into(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn bytes_are_base64_text() {
        round_trip(&Bytes::from_static(b"\x00\x01\xff"), r#""AAH/""#);
        round_trip(&Bytes::from_static(b"hello"), r#""aGVsbG8=""#);
        round_trip(&Bytes::from_static(b"hell"), r#""aGVsbA==""#);
        let all: Vec<u8> = (0..=255).collect();
        let text = encode(&Bytes::from(all.clone()));
        assert_eq!(text.len(), 2 + 4 * 86);
        assert_eq!(decode::<Bytes>(&text).unwrap(), all);
    }

    #[test]
    fn an_empty_byte_string_is_an_empty_string() {
        round_trip(&Bytes::new(), r#""""#);
        round_trip(&blob("", b""), r#"{"name":"","data":""}"#);
    }

    #[test]
    fn nested_byte_strings_are_base64_text() {
        round_trip(
            &vec![blob("a", b"\x01"), blob("b", b"\x02\x03")],
            r#"[{"name":"a","data":"AQ=="},{"name":"b","data":"AgM="}]"#,
        );
        round_trip(
            &Message::Blobs(vec![blob("x", b"xyz")]),
            r#"{"Blobs":[{"name":"x","data":"eHl6"}]}"#,
        );
        round_trip(
            &Message::Chunk {
                data: vec![0xfb, 0xff],
                last: true,
            },
            r#"{"Chunk":{"data":"+/8=","last":true}}"#,
        );
        round_trip(
            &Message::Pair(Bytes::from_static(b"a"), Some(Bytes::from_static(b"b"))),
            r#"{"Pair":["YQ==","Yg=="]}"#,
        );
        round_trip(
            &(Some(Bytes::from_static(b"\xff")), None::<Bytes>),
            r#"["/w==",null]"#,
        );
        round_trip(
            &BTreeMap::from([(Bytes::from_static(b"k"), Bytes::from_static(b"v"))]),
            r#"{"aw==":"dg=="}"#,
        );
    }

    #[test]
    fn a_plain_byte_vector_is_still_an_array_of_numbers() {
        round_trip(&vec![1u8, 2, 255], "[1,2,255]");
    }

    #[test]
    fn an_array_of_numbers_is_still_accepted() {
        assert_eq!(decode::<Bytes>("[0, 1, 255]").unwrap(), [0u8, 1, 255][..]);
        assert_eq!(decode::<Bytes>("[]").unwrap(), Bytes::new());
        assert_eq!(
            decode::<Message>(r#"{"Chunk":{"data":[104,105],"last":false}}"#).unwrap(),
            Message::Chunk {
                data: b"hi".to_vec(),
                last: false
            }
        );
        assert!(decode::<Bytes>("[256]").is_err());
    }

    #[test]
    fn padding_is_optional_and_escapes_are_expanded() {
        assert_eq!(decode::<Bytes>(r#""aGVsbA""#).unwrap(), "hell");
        assert_eq!(decode::<Bytes>(r#""aGVsbG8""#).unwrap(), "hello");
        assert_eq!(
            decode::<Bytes>(r#""\u0061GVsbA\u003d\u003d""#).unwrap(),
            "hell"
        );
        assert_eq!(decode::<Bytes>(r#""\/w==""#).unwrap(), b"\xff"[..]);
    }

    #[test]
    fn invalid_base64_is_a_clear_error() {
        for bad in [
            r#""a*b=""#,
            r#""a""#,
            r#""aGVsbA===""#,
            r#""AB==""#,
            r#""aGVs bA==""#,
            r#""aGVsbA==\n""#,
            r#""\u00ff""#,
        ] {
            let err = decode::<Bytes>(bad).unwrap_err();
            assert!(
                err.starts_with("a byte string is not valid base64"),
                "{bad}: {err}"
            );
            let err =
                decode::<Vec<Blob>>(&format!(r#"[{{"name":"n","data":{bad}}}]"#)).unwrap_err();
            assert!(err.contains("not valid base64"), "{bad}: {err}");
        }
        let err = decode::<Bytes>("7").unwrap_err();
        assert!(err.contains("base64 text or an array of numbers"), "{err}");
        assert!(decode::<Bytes>(r#""aGVsbA"#).is_err());
    }

    #[test]
    fn other_values_are_written_as_serde_json_writes_them() {
        let value = (
            BTreeMap::from([("k".to_string(), vec![Some(1.5), None])]),
            'x',
            u128::MAX,
            -1i8,
            "quote\"and\\",
            (),
        );
        assert_eq!(encode(&value), serde_json::to_string(&value).unwrap());
    }
}
