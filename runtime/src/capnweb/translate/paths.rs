//! Property paths on a kept result: the part of the value a path names, followed as
//! the `capnweb` package's own server follows it (`followPath`): own properties of
//! objects, indices of arrays, no properties on other values, a `TypeError` when
//! reading through `undefined`; a capability met on the way takes the rest of the
//! path. Values are payload expressions (Cap'n Web's, with `["$cap", i]` and
//! `["$stream", i]` placeholders: see `codec/capnweb.rs`); a stream is a value
//! without properties, read whole.

use serde_json::Value;

use super::{capnweb_special, error_expr, CAP, STREAM, WRITER};
use crate::wire::CapDescriptor;

/// Where a property path leads in a value.
#[derive(Debug, PartialEq)]
pub(super) enum Walked<'p> {
    /// To this value (`["undefined"]` where a property is missing).
    Value(Value),
    /// To the result's capability `index`, with the `rest` of the path (maybe
    /// none) still to apply to it.
    Cap { index: usize, rest: &'p [String] },
    /// Through `undefined`, reading this property: JavaScript throws a `TypeError`.
    Undefined { reading: &'p str },
}

fn undefined() -> Value {
    capnweb_special("undefined", [])
}

/// The index of a capability placeholder.
fn placeholder(value: &Value) -> Option<usize> {
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(code), index]) if code == CAP => {
            index.as_u64().and_then(|i| usize::try_from(i).ok())
        }
        _ => None,
    }
}

/// An array index as JavaScript writes one: decimal digits, no leading zero.
fn index(key: &str) -> Option<usize> {
    let canonical = key == "0" || (!key.is_empty() && !key.starts_with('0'));
    if canonical && key.bytes().all(|b| b.is_ascii_digit()) {
        key.parse().ok()
    } else {
        None
    }
}

/// Follows `path` into `value`.
pub(super) fn walk(mut value: Value, path: &[String]) -> Walked<'_> {
    for (at, key) in path.iter().enumerate() {
        if let Some(index) = placeholder(&value) {
            return Walked::Cap {
                index,
                rest: &path[at..],
            };
        }
        value = match value {
            Value::Object(mut map) => map.remove(key).unwrap_or_else(undefined),
            Value::Array(mut items) => {
                if matches!(items.as_slice(), [Value::String(code)] if code == "undefined") {
                    return Walked::Undefined { reading: key };
                }
                // An array is escaped as `[[...]]`; bytes, big integers, dates... have
                // no properties to read.
                let array = matches!(items.as_slice(), [Value::Array(_)]);
                match (array, index(key)) {
                    (true, Some(i)) => match items.swap_remove(0) {
                        Value::Array(mut elements) if i < elements.len() => elements.swap_remove(i),
                        _ => undefined(),
                    },
                    _ => undefined(),
                }
            }
            // Strings, numbers, booleans and `null`: none either.
            _ => undefined(),
        };
    }
    match placeholder(&value) {
        Some(index) => Walked::Cap { index, rest: &[] },
        None => Walked::Value(value),
    }
}

/// A part of a result as a result of its own: its placeholders numbered afresh into
/// the capabilities it holds (one per placeholder, as the codec writes them).
pub(super) fn extract(value: Value, caps: &[CapDescriptor]) -> (Value, Vec<CapDescriptor>) {
    fn renumber(value: Value, from: &[CapDescriptor], to: &mut Vec<CapDescriptor>) -> Value {
        // A stream's placeholder keeps its code: it goes out as a pipe, not a stub.
        let found = match value.as_array().map(Vec::as_slice) {
            Some([Value::String(code), index])
                if code == CAP || code == STREAM || code == WRITER =>
            {
                index
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .map(|i| (code.clone(), i))
            }
            _ => None,
        };
        if let Some((code, index)) = found {
            return match from.get(index) {
                Some(cap) => {
                    to.push(*cap);
                    capnweb_special(&code, [Value::from(to.len() - 1)])
                }
                None => error_expr("a capability missing from its message"),
            };
        }
        match value {
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| renumber(v, from, to)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, renumber(v, from, to)))
                    .collect(),
            ),
            other => other,
        }
    }
    let mut held = Vec::new();
    let value = renumber(value, caps, &mut held);
    (value, held)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    fn team() -> Value {
        json!({
            "name": "core",
            "lead": ["$cap", 0],
            "stats": {"x": 1, "y": 2, "tags": [["a", "b"]]},
            "members": [[["$cap", 1], {"who": ["$cap", 2]}]],
            "nothing": ["undefined"],
            "none": null,
            "blob": ["bytes", "aGkh"],
        })
    }

    #[test]
    fn objects_and_arrays_are_read_at_depth() {
        let p = path(&["stats", "y"]);
        assert_eq!(walk(team(), &p), Walked::Value(json!(2)));
        let p = path(&["stats", "tags", "1"]);
        assert_eq!(walk(team(), &p), Walked::Value(json!("b")));
        let p = path(&["stats"]);
        assert_eq!(
            walk(team(), &p),
            Walked::Value(json!({"x": 1, "y": 2, "tags": [["a", "b"]]}))
        );
        assert_eq!(walk(team(), &[]), Walked::Value(team()));
    }

    #[test]
    fn what_is_not_there_is_undefined_and_reading_through_it_throws() {
        for missing in [
            &["nope"][..],
            &["stats", "tags", "2"],
            &["stats", "tags", "01"],
            &["stats", "tags", "-1"],
            &["stats", "tags", "length"],
            &["name", "length"],
            &["none", "x"],
            &["blob", "0"],
            &["stats", "x", "y"],
        ] {
            let p = path(missing);
            assert_eq!(walk(team(), &p), Walked::Value(undefined()), "{missing:?}");
        }
        let p = path(&["nope", "deeper", "still"]);
        assert_eq!(walk(team(), &p), Walked::Undefined { reading: "deeper" });
        let p = path(&["nothing", "x"]);
        assert_eq!(walk(team(), &p), Walked::Undefined { reading: "x" });
    }

    #[test]
    fn a_capability_takes_the_rest_of_the_path() {
        let p = path(&["lead"]);
        assert_eq!(
            walk(team(), &p),
            Walked::Cap {
                index: 0,
                rest: &[]
            }
        );
        let p = path(&["lead", "greet"]);
        assert_eq!(
            walk(team(), &p),
            Walked::Cap {
                index: 0,
                rest: &p[1..]
            }
        );
        let p = path(&["members", "1", "who", "a", "b"]);
        assert_eq!(
            walk(team(), &p),
            Walked::Cap {
                index: 2,
                rest: &p[3..]
            }
        );
    }

    #[test]
    fn a_part_holds_only_its_own_capabilities_renumbered() {
        let caps = [
            CapDescriptor::SenderHosted(10),
            CapDescriptor::SenderHosted(11),
            CapDescriptor::ReceiverHosted(12),
        ];
        let p = path(&["members"]);
        let Walked::Value(members) = walk(team(), &p) else {
            panic!("a value")
        };
        let (value, held) = extract(members, &caps);
        assert_eq!(value, json!([[["$cap", 0], {"who": ["$cap", 1]}]]));
        assert_eq!(held, caps[1..]);
        let (value, held) = extract(json!(["$cap", 7]), &caps);
        assert_eq!(value[0], "error");
        assert!(held.is_empty());
    }

    #[test]
    fn a_stream_is_a_value_read_whole_and_keeps_its_placeholder() {
        let result = json!({"name": "pair", "lead": ["$cap", 0], "numbers": ["$stream", 1]});
        let caps = [
            CapDescriptor::SenderHosted(10),
            CapDescriptor::SenderHosted(11),
        ];
        let p = path(&["numbers"]);
        let Walked::Value(numbers) = walk(result.clone(), &p) else {
            panic!("a value")
        };
        assert_eq!(
            extract(numbers, &caps),
            (json!(["$stream", 0]), vec![CapDescriptor::SenderHosted(11)])
        );
        let p = path(&["numbers", "locked"]);
        assert_eq!(walk(result.clone(), &p), Walked::Value(undefined()));
        assert_eq!(
            extract(result, &caps[..]),
            (
                json!({"name": "pair", "lead": ["$cap", 0], "numbers": ["$stream", 1]}),
                caps.to_vec()
            )
        );
    }
}
