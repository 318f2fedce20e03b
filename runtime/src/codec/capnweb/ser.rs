//! Writing serde values as Cap'n Web expressions: a serializer that builds the
//! expression tree (compound values must be wrapped, `[[...]]`, which a streaming
//! writer could only do by looking ahead), written out by serde_json.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::ser::{self, Error as _, Serialize};
use serde_json::{Map, Value};

use super::{error_text, ARGS, CAP, ERR, MAX_SAFE_INTEGER, OK, STREAM, WRITER};
use crate::codec::{CAP_NEWTYPE, STREAM_NEWTYPE, WRITER_NEWTYPE};

type Error = serde_json::Error;

/// The expression for `value`.
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    value.serialize(Ser { top: true })
}

fn nested<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    value.serialize(Ser { top: false })
}

/// `["code", args...]`.
pub(crate) fn special(code: &str, args: impl IntoIterator<Item = Value>) -> Value {
    let mut items = vec![Value::String(code.to_owned())];
    items.extend(args);
    Value::Array(items)
}

/// An array expression: `[[items...]]`.
pub(crate) fn array(items: Vec<Value>) -> Value {
    Value::Array(vec![Value::Array(items)])
}

fn bigint(decimal: String) -> Value {
    special("bigint", [Value::String(decimal)])
}

fn float(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => special("nan", []),
        None if v > 0.0 => special("inf", []),
        None => special("-inf", []),
    }
}

fn signed(v: i128) -> Value {
    if v.unsigned_abs() <= u128::from(MAX_SAFE_INTEGER) {
        Value::from(v as i64)
    } else {
        bigint(v.to_string())
    }
}

fn unsigned(v: u128) -> Value {
    if v <= u128::from(MAX_SAFE_INTEGER) {
        Value::from(v as u64)
    } else {
        bigint(v.to_string())
    }
}

/// The serializer; `top` is true for the whole value only (where a tuple is an
/// argument list and a `Result` a resolve or a reject).
struct Ser {
    top: bool,
}

impl ser::Serializer for Ser {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = Seq;
    type SerializeTuple = Seq;
    type SerializeTupleStruct = Seq;
    type SerializeTupleVariant = Seq;
    type SerializeMap = Obj;
    type SerializeStruct = Obj;
    type SerializeStructVariant = Obj;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(signed(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(signed(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(signed(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(signed(v.into()))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        Ok(signed(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(unsigned(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(unsigned(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(unsigned(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(unsigned(v.into()))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        Ok(unsigned(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        Ok(float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        Ok(float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(special("bytes", [Value::String(STANDARD.encode(v))]))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        nested(value)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(special("undefined", []))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(Value::String(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        if name == CAP_NEWTYPE {
            return Ok(special(CAP, [nested(value)?]));
        }
        // `["$stream", i]`: the capability `i` is a stream's source;
        // `["$writer", i]`: it is a stream sender's target.
        let marked = match name {
            STREAM_NEWTYPE => Some(STREAM),
            WRITER_NEWTYPE => Some(WRITER),
            _ => None,
        };
        if let Some(code) = marked {
            return match nested(value)? {
                Value::Array(mut cap) if cap.len() == 2 && cap[0] == CAP => {
                    Ok(special(code, [cap.swap_remove(1)]))
                }
                _ => Err(Error::custom("a stream whose end is not a capability")),
            };
        }
        nested(value)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        match (self.top, name, variant) {
            (true, "Result", "Ok") => Ok(special(OK, [nested(value)?])),
            (true, "Result", "Err") => {
                let text = error_text().map_or(Value::Null, Value::String);
                Ok(special(ERR, [nested(value)?, text]))
            }
            _ => {
                let mut map = Map::new();
                map.insert(variant.to_owned(), nested(value)?);
                Ok(Value::Object(map))
            }
        }
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Error> {
        Ok(Seq::new(len.unwrap_or(0), Wrap::Array))
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq, Error> {
        let wrap = if self.top { Wrap::Args } else { Wrap::Array };
        Ok(Seq::new(len, wrap))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq, Error> {
        Ok(Seq::new(len, Wrap::Array))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq, Error> {
        Ok(Seq::new(len, Wrap::Variant(variant)))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Obj, Error> {
        Ok(Obj::new(None))
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Obj, Error> {
        Ok(Obj::new(None))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Obj, Error> {
        Ok(Obj::new(Some(variant)))
    }
}

/// How a sequence is wrapped when it ends.
enum Wrap {
    /// `[[...]]`.
    Array,
    /// `["$args", [...]]`: a top-level tuple.
    Args,
    /// `{"Variant": [[...]]}`.
    Variant(&'static str),
}

struct Seq {
    items: Vec<Value>,
    wrap: Wrap,
}

impl Seq {
    fn new(len: usize, wrap: Wrap) -> Self {
        Seq {
            // A claimed length is a hint only.
            items: Vec::with_capacity(len.min(1024)),
            wrap,
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.items.push(nested(value)?);
        Ok(())
    }

    fn finish(self) -> Result<Value, Error> {
        Ok(match self.wrap {
            Wrap::Array => array(self.items),
            Wrap::Args => special(ARGS, [Value::Array(self.items)]),
            Wrap::Variant(variant) => {
                let mut map = Map::new();
                map.insert(variant.to_owned(), array(self.items));
                Value::Object(map)
            }
        })
    }
}

macro_rules! seq_impl {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Seq {
            type Ok = Value;
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.push(value)
            }
            fn end(self) -> Result<Value, Error> {
                self.finish()
            }
        }
    )*};
}

seq_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

struct Obj {
    map: Map<String, Value>,
    key: Option<String>,
    variant: Option<&'static str>,
}

impl Obj {
    fn new(variant: Option<&'static str>) -> Self {
        Obj {
            map: Map::new(),
            key: None,
            variant,
        }
    }

    fn finish(self) -> Result<Value, Error> {
        let object = Value::Object(self.map);
        Ok(match self.variant {
            Some(variant) => {
                let mut map = Map::new();
                map.insert(variant.to_owned(), object);
                Value::Object(map)
            }
            None => object,
        })
    }
}

/// A map key as JSON object keys must be: text, numbers written as text.
fn key<T: Serialize + ?Sized>(key: &T) -> Result<String, Error> {
    match nested(key)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::custom("a map key must be a string or a number")),
    }
}

impl ser::SerializeMap for Obj {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        self.key = Some(key(k)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error::custom("a map value without a key"))?;
        self.map.insert(key, nested(value)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        self.finish()
    }
}

macro_rules! struct_impl {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Obj {
            type Ok = Value;
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.map.insert(name.to_owned(), nested(value)?);
                Ok(())
            }
            fn end(self) -> Result<Value, Error> {
                self.finish()
            }
        }
    )*};
}

struct_impl!(SerializeStruct, SerializeStructVariant);
