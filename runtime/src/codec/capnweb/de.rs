//! Reading serde values from a parsed Cap'n Web expression tree.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, Error as _, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::Value;

use super::{ARGS, CAP, ERR, OK};
use crate::codec::CAP_NEWTYPE;

type Error = serde_json::Error;

/// Reads base64 with or without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest decimal text of a `["bigint", ...]` read (an `i128` has 40 characters).
const MAX_BIGINT: usize = 48;

/// Deserializes a `T` from an expression tree.
pub(crate) fn from_value<T: de::DeserializeOwned>(value: &Value) -> Result<T, Error> {
    T::deserialize(Expr { value, top: true })
}

const UNDEFINED: Value = Value::Null;

/// One expression; `top` for the whole value.
#[derive(Clone, Copy)]
struct Expr<'de> {
    value: &'de Value,
    top: bool,
}

fn nested(value: &Value) -> Expr<'_> {
    Expr { value, top: false }
}

/// The type code and arguments of a special form, `["code", args...]`.
fn special(value: &Value) -> Option<(&str, &[Value])> {
    match value {
        Value::Array(items) => match items.split_first() {
            Some((Value::String(code), args)) => Some((code, args)),
            _ => None,
        },
        _ => None,
    }
}

/// The elements of an array expression, `[[...]]`.
fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(outer) if outer.len() == 1 => match &outer[0] {
            Value::Array(items) => Some(items),
            _ => None,
        },
        _ => None,
    }
}

fn is_undefined(value: &Value) -> bool {
    value.is_null() || matches!(special(value), Some(("undefined", [])))
}

impl<'de> Expr<'de> {
    /// The argument list, if this is the top-level `["$args", [...]]`.
    fn args(&self) -> Option<&'de [Value]> {
        if !self.top {
            return None;
        }
        match special(self.value) {
            Some((ARGS, [Value::Array(args)])) => Some(args),
            _ => None,
        }
    }

    /// What a value other than a tuple, a unit or a `Result` reads: the single
    /// argument of an argument list (`undefined` if there is none), the value of a
    /// top-level `["$ok", v]`, or the expression itself.
    fn plain(self) -> Result<Expr<'de>, Error> {
        if let Some(args) = self.args() {
            return match args {
                [] => Ok(nested(&UNDEFINED)),
                [one] => Ok(nested(one)),
                more => Err(Error::custom(format_args!(
                    "{} arguments where one was expected",
                    more.len()
                ))),
            };
        }
        if self.top {
            if let Some((OK, [value])) = special(self.value) {
                return Ok(nested(value));
            }
        }
        Ok(nested(self.value))
    }

    fn any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Object(map) => visitor.visit_map(Entries {
                entries: map.iter(),
                value: None,
            }),
            Value::Array(items) => {
                if let Some(items) = array(self.value) {
                    return visitor.visit_seq(Elements::new(items, 0));
                }
                let Some((code, args)) = special(self.value) else {
                    return Err(if items.is_empty() {
                        Error::custom("an empty array is not a Cap'n Web expression")
                    } else {
                        Error::custom("an array that is not a Cap'n Web expression")
                    });
                };
                match (code, args) {
                    ("undefined", []) => visitor.visit_unit(),
                    ("inf", []) => visitor.visit_f64(f64::INFINITY),
                    ("-inf", []) => visitor.visit_f64(f64::NEG_INFINITY),
                    ("nan", []) => visitor.visit_f64(f64::NAN),
                    ("bytes", [Value::String(text), ..]) => visitor.visit_byte_buf(
                        LENIENT
                            .decode(text)
                            .map_err(|e| Error::custom(format_args!("invalid base64: {e}")))?,
                    ),
                    ("bytes", _) => Err(Error::custom("malformed bytes expression")),
                    ("bigint", [Value::String(text)]) => bigint(text, visitor),
                    ("bigint", _) => Err(Error::custom("malformed bigint expression")),
                    (CAP, [index]) => index.deserialize_u64(visitor),
                    (ARGS, [Value::Array(args)]) => visitor.visit_seq(Elements::new(args, 0)),
                    (OK, [value]) => nested(value).any(visitor),
                    (code, _) => Err(Error::custom(format_args!(
                        "Cap'n Web values of type `{code}` are not supported here"
                    ))),
                }
            }
        }
    }
}

fn bigint<'de, V: Visitor<'de>>(text: &str, visitor: V) -> Result<V::Value, Error> {
    let bad = || Error::custom(format_args!("malformed bigint `{text}`"));
    if text.len() > MAX_BIGINT {
        return Err(bad());
    }
    if let Ok(i) = text.parse::<i64>() {
        visitor.visit_i64(i)
    } else if let Ok(u) = text.parse::<u64>() {
        visitor.visit_u64(u)
    } else if let Ok(i) = text.parse::<i128>() {
        visitor.visit_i128(i)
    } else if let Ok(u) = text.parse::<u128>() {
        visitor.visit_u128(u)
    } else {
        Err(bad())
    }
}

impl<'de> Deserializer<'de> for Expr<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.plain()?.any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let this = self.plain()?;
        if is_undefined(this.value) {
            visitor.visit_none()
        } else {
            visitor.visit_some(this)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let empty = |v: &Value| array(v).is_some_and(<[Value]>::is_empty);
        match self.args() {
            Some([]) => return visitor.visit_unit(),
            Some(_) => {}
            None if is_undefined(self.value) || empty(self.value) => return visitor.visit_unit(),
            None => {}
        }
        self.plain()?.any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let this = self.plain()?;
        match this.value {
            Value::String(text) => visitor.visit_byte_buf(
                LENIENT
                    .decode(text)
                    .map_err(|e| Error::custom(format_args!("invalid base64: {e}")))?,
            ),
            _ => this.any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let this = self.plain()?;
        if name == CAP_NEWTYPE {
            return match special(this.value) {
                Some((CAP, [index])) => visitor.visit_newtype_struct(nested(index)),
                _ => Err(Error::custom("expected a capability")),
            };
        }
        visitor.visit_newtype_struct(this)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        if let Some(args) = self.args() {
            return visitor.visit_seq(Elements::new(args, len));
        }
        self.plain()?.any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if self.top && name == "Result" && variants == ["Ok", "Err"] {
            // A top-level `Result`: marked when Rust wrote it; a plain value from
            // JavaScript, which has no `Result`, is its `Ok`.
            return match special(self.value) {
                Some((ERR, [error, ..])) => visitor.visit_enum(Variant {
                    name: "Err",
                    value: Some(error),
                }),
                Some((OK, [value])) => visitor.visit_enum(Variant {
                    name: "Ok",
                    value: Some(value),
                }),
                _ => visitor.visit_enum(Variant {
                    name: "Ok",
                    value: Some(self.value),
                }),
            };
        }
        let this = self.plain()?;
        match this.value {
            Value::String(name) => visitor.visit_enum(Variant { name, value: None }),
            Value::Object(map) if map.len() == 1 => {
                let (name, value) = map.iter().next().expect("one entry");
                visitor.visit_enum(Variant {
                    name,
                    value: Some(value),
                })
            }
            _ => Err(Error::custom(
                "expected an enum: a variant's name, or an object with one entry",
            )),
        }
    }

    scalars! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string
    }

    forward_to_deserialize_any! {
        seq map struct identifier ignored_any
    }
}

/// Plain values (numbers, text, booleans): an object in their place is refused
/// rather than read as its index among the message's capabilities.
macro_rules! scalars {
    ($($name:ident)*) => {
        $(
            fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                let this = self.plain()?;
                if let Some((CAP, _)) = special(this.value) {
                    return Err(Error::custom(
                        "an object (a stub, function or stream) where a plain value was expected",
                    ));
                }
                this.any(visitor)
            }
        )*
    };
}
use scalars;

/// The elements of an array, padded with `undefined` up to `len` (a tuple whose
/// trailing elements were left out).
struct Elements<'de> {
    items: std::slice::Iter<'de, Value>,
    padding: usize,
}

impl<'de> Elements<'de> {
    fn new(items: &'de [Value], len: usize) -> Self {
        Elements {
            padding: len.saturating_sub(items.len()),
            items: items.iter(),
        }
    }
}

impl<'de> SeqAccess<'de> for Elements<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some(value) => seed.deserialize(nested(value)).map(Some),
            None if self.padding > 0 => {
                self.padding -= 1;
                seed.deserialize(nested(&UNDEFINED)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Entries<'de> {
    entries: serde_json::map::Iter<'de>,
    value: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(Key(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| Error::custom("a map value without a key"))?;
        seed.deserialize(nested(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An object key: text, which numeric key types parse.
struct Key<'de>(&'de str);

macro_rules! parse_key {
    ($($method:ident => $visit:ident: $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0.parse::<$ty>() {
                Ok(n) => visitor.$visit(n),
                Err(_) => visitor.visit_borrowed_str(self.0),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Key<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    parse_key! {
        deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32, deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128, deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16, deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64, deserialize_u128 => visit_u128: u128,
        deserialize_bool => visit_bool: bool
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    forward_to_deserialize_any! {
        f32 f64 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct enum identifier ignored_any
    }
}

/// An enum variant: its name and, unless a unit variant, its content.
struct Variant<'de> {
    name: &'de str,
    value: Option<&'de Value>,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let name = de::value::BorrowedStrDeserializer::<'de, Error>::new(self.name);
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(value) if is_undefined(value) => Ok(()),
            Some(_) => Err(Error::custom("a unit variant with content")),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        seed.deserialize(nested(self.value.unwrap_or(&UNDEFINED)))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Some(value) => nested(value).deserialize_tuple(len, visitor),
            None => Err(Error::custom("a tuple variant without content")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Some(value) => nested(value).any(visitor),
            None => Err(Error::custom("a struct variant without content")),
        }
    }
}
