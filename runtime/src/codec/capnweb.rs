//! Values as Cap'n Web expressions: the payload encoding of connections that speak
//! Cap'n Web (see `crate::capnweb`), never agreed with a farcall peer.
//!
//! Cap'n Web sends JSON in which every array is a typed expression: a plain array is
//! escaped as `[[...]]`, bytes are `["bytes", base64]`, `undefined`, non-finite
//! numbers and big integers have forms of their own, and capabilities are
//! `["export", id]` and friends. This codec writes serde values in that form and
//! reads them back, so what JavaScript sends decodes into the Rust types of a trait
//! and what Rust returns arrives in JavaScript as the natural value:
//!
//! | Rust | Cap'n Web |
//! |---|---|
//! | `Vec`, tuples, arrays, tuple structs | `[[e1, e2, ...]]` |
//! | `Bytes`, `serde_bytes` | `["bytes", base64]` |
//! | integers beyond ±(2^53 − 1) | `["bigint", "decimal"]` (numbers below) |
//! | `f64::INFINITY`, `-INFINITY`, `NaN` | `["inf"]`, `["-inf"]`, `["nan"]` |
//! | `()` | `["undefined"]` |
//! | `None`, unit structs | `null` |
//! | structs, maps, enums | as serde_json writes them |
//!
//! On reading, `null` and `["undefined"]` are both `None` and `()`, a tuple missing
//! trailing elements reads them as `undefined` (so optional trailing arguments may
//! be left out by a JavaScript caller), and base64 text is also accepted for bytes.
//!
//! Six forms starting with `$` are placeholders that only the translator writes
//! and reads (the JavaScript side never sees them; the translator refuses them from
//! it): `["$cap", i]` is the `i`th capability of the message (its descriptor, which
//! only the connection assigns, says which Cap'n Web reference it becomes);
//! `["$stream", i]` is a [`Stream`](crate::Stream) whose source is the `i`th
//! capability (written only: the translator makes it a `ReadableStream`);
//! `["$writer", i]` is a [`StreamSender`](crate::StreamSender) whose target is the
//! `i`th capability (written only: the translator makes it a `WritableStream`);
//! `["$args", [e1, ...]]` is a call's argument list (a top-level tuple); `["$ok", v]`
//! and `["$err", e, text]` are a top-level `Result`, which becomes a resolve or a
//! reject with the error's text (a rejection the translator decides itself has a
//! Cap'n Web `["error", type, message]` as `e`, sent as it is).
//!
//! Reading is bounded like every codec: the text is parsed into a tree within the
//! decoding budget (at most [`MAX_DEPTH`] levels, which is Cap'n Web's own limit, and
//! no more elements than the input has bytes plus a slack), then read from the tree.

mod de;
mod ser;

use std::cell::RefCell;

use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::Serialize;

pub(crate) use self::de::from_value;
pub(crate) use self::ser::{array, to_value};
use super::budget::Budget;
use super::{Codec, CodecError};

/// Nesting depth allowed in a Cap'n Web message (the `capnweb` package's default).
pub(crate) const MAX_DEPTH: u32 = 256;

/// The largest integer a JavaScript number holds exactly (2^53 − 1).
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Placeholder codes (see the module documentation).
pub(crate) const CAP: &str = "$cap";
pub(crate) const STREAM: &str = "$stream";
pub(crate) const WRITER: &str = "$writer";
pub(crate) const ARGS: &str = "$args";
pub(crate) const OK: &str = "$ok";
pub(crate) const ERR: &str = "$err";

/// Cap'n Web expressions (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct CapnWeb;

impl super::sealed::Sealed for CapnWeb {}

impl Codec for CapnWeb {
    const NAME: &'static str = "capnweb";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let value = to_value(value).map_err(CodecError::new)?;
        serde_json::to_writer(out, &value).map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let value = parse(bytes)?;
        from_value(&value).map_err(CodecError::new)
    }
}

/// Parses JSON text into a tree within the decoding budget.
pub(crate) fn parse(bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
    let mut budget = Budget::new(
        MAX_DEPTH,
        bytes.len().saturating_add(super::budget::ELEMENT_SLACK),
    );
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The budget bounds the depth instead (serde_json's own limit is 128).
    de.disable_recursion_limit();
    let value = budget
        .seed::<serde_json::Value>()
        .deserialize(&mut de)
        .map_err(|e| budget.error(e))?;
    de.end().map_err(CodecError::new)?;
    Ok(value)
}

thread_local! {
    /// The text of the application error being encoded, if one is.
    static ERROR_TEXT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `encode` with `text` as the words of the application error it encodes, so
/// that a reject carries the error's `Display` (or `Debug`) text. Other codecs
/// ignore it.
pub(crate) fn with_error_text<R>(text: Option<&str>, encode: impl FnOnce() -> R) -> R {
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            ERROR_TEXT.with(|t| *t.borrow_mut() = previous);
        }
    }
    let previous = ERROR_TEXT.with(|t| t.replace(text.map(str::to_owned)));
    let _restore = Restore(previous);
    encode()
}

fn error_text() -> Option<String> {
    ERROR_TEXT.with(|t| t.borrow().clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec::text_tests;

    fn encode<T: Serialize + ?Sized>(value: &T) -> String {
        text_tests::encode::<CapnWeb, T>(value)
    }

    fn decode<T: DeserializeOwned>(text: &str) -> Result<T, String> {
        text_tests::decode::<CapnWeb, T>(text)
    }

    fn round_trip<T>(value: &T, text: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        text_tests::round_trip::<CapnWeb, T>(value, text)
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        tags: Vec<String>,
        note: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Circle(f64),
        Pair(u8, u8),
        Rect { w: u32, h: u32 },
    }

    #[test]
    fn arrays_are_escaped_at_every_depth() {
        round_trip(&vec![1u32, 2], "[[1,2]]");
        round_trip(&vec![vec![1u8], vec![]], "[[[[1]],[[]]]]");
        round_trip(
            &Point {
                x: -1,
                tags: vec!["a".into()],
                note: None,
            },
            r#"{"note":null,"tags":[["a"]],"x":-1}"#,
        );
        // A nested tuple is an array; only a top-level one is an argument list.
        round_trip(&vec![(1u8, "a".to_string())], r#"[[[[1,"a"]]]]"#);
        round_trip(&(1u8, "a".to_string()), r#"["$args",[1,"a"]]"#);
    }

    #[test]
    fn enums_are_written_as_serde_json_writes_them() {
        round_trip(
            &vec![
                Shape::Dot,
                Shape::Circle(1.5),
                Shape::Pair(1, 2),
                Shape::Rect { w: 3, h: 4 },
            ],
            r#"[["Dot",{"Circle":1.5},{"Pair":[[1,2]]},{"Rect":{"h":4,"w":3}}]]"#,
        );
    }

    #[test]
    fn special_values_have_their_expressions() {
        round_trip(&Bytes::from_static(b"hi!"), r#"["bytes","aGkh"]"#);
        round_trip(
            &vec![f64::INFINITY, f64::NEG_INFINITY],
            r#"[[["inf"],["-inf"]]]"#,
        );
        assert!(decode::<f64>(r#"["nan"]"#).unwrap().is_nan());
        assert_eq!(encode(&f64::NAN), r#"["nan"]"#);
        round_trip(&MAX_SAFE_INTEGER, "9007199254740991");
        round_trip(&u64::MAX, r#"["bigint","18446744073709551615"]"#);
        round_trip(&i64::MIN, r#"["bigint","-9223372036854775808"]"#);
        round_trip(
            &u128::MAX,
            r#"["bigint","340282366920938463463374607431768211455"]"#,
        );
        round_trip(&(), r#"["undefined"]"#);
        round_trip(&BTreeMap::from([(7u32, "x".to_string())]), r#"{"7":"x"}"#);
    }

    #[test]
    fn javascript_conveniences_are_read() {
        assert_eq!(decode::<Option<u8>>(r#"["undefined"]"#).unwrap(), None);
        assert_eq!(decode::<Bytes>(r#""aGkh""#).unwrap(), "hi!");
        // Left-out trailing arguments read as undefined.
        assert_eq!(
            decode::<(u8, Option<u8>)>(r#"["$args",[1]]"#).unwrap(),
            (1, None)
        );
        // A single argument where the type is not a tuple (a callback's argument).
        assert_eq!(decode::<Vec<u8>>(r#"["$args",[[[1,2]]]]"#).unwrap(), [1, 2]);
        assert_eq!(decode::<()>(r#"["$args",[]]"#).unwrap(), ());
        assert_eq!(decode::<Option<u8>>(r#"["$args",[]]"#).unwrap(), None);
        let err = decode::<u8>(r#"["$args",[1,2]]"#).unwrap_err();
        assert!(err.contains("2 arguments"), "{err}");
    }

    #[test]
    fn a_top_level_result_is_marked_and_nested_ones_are_plain() {
        round_trip(&Ok::<u8, String>(1), r#"["$ok",1]"#);
        assert_eq!(
            encode(&Err::<u8, String>("no".into())),
            r#"["$err","no",null]"#
        );
        assert_eq!(
            with_error_text(Some("it broke"), || encode(&Err::<u8, u8>(3))),
            r#"["$err",3,"it broke"]"#
        );
        assert_eq!(
            decode::<Result<u8, String>>(r#"["$err","no",null]"#).unwrap(),
            Err("no".into())
        );
        // JavaScript resolves with the plain value.
        assert_eq!(decode::<Result<u8, String>>("7").unwrap(), Ok(7));
        round_trip(&vec![Ok::<u8, u8>(1)], r#"[[{"Ok":1}]]"#);
    }

    #[test]
    fn malformed_and_unsupported_expressions_are_errors() {
        for (bad, says) in [
            (r#"["date",1]"#, "not supported"),
            (r#"["bytes",7]"#, "bytes"),
            (r#"["bytes","***"]"#, "base64"),
            (r#"["bigint","x"]"#, "bigint"),
            ("[]", "empty array"),
            (r#"[1,2]"#, "expression"),
        ] {
            let err = decode::<serde::de::IgnoredAny>(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn depth_is_bounded_by_the_budget() {
        let deep = |n: usize| format!("{}1{}", "[[".repeat(n), "]]".repeat(n));
        assert!(decode::<serde::de::IgnoredAny>(&deep(60)).is_ok());
        let err = decode::<serde::de::IgnoredAny>(&deep(200)).unwrap_err();
        assert!(err.contains("nesting deeper than 256"), "{err}");
    }
}
