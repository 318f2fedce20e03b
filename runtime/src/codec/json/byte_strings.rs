//! Byte strings as base64 text under JSON.
//!
//! serde_json writes a byte string (`serialize_bytes`: `Bytes`, `serde_bytes` fields)
//! as an array of numbers, about 3.6 times its size, and has no option to do
//! otherwise. [`Base64Serializer`] wraps its serializer, and every compound serializer
//! it hands out, so that byte strings at any depth are written as base64 strings
//! (standard alphabet, padded) and everything else as serde_json writes it. The
//! encoding streams through serde_json's `collect_str`: no base64 copy of the
//! payload is made.
//!
//! On decoding, [`Base64`] plugs into the budget's wrappers (see
//! [`ByteStrings`]), so it sees every `deserialize_bytes` and `deserialize_byte_buf`:
//! a JSON string is base64-decoded (padding optional), and an array of numbers is
//! still accepted as it was before, counted against the element budget. serde_json
//! hands over a string with its escapes expanded, so an escaped base64 character
//! still decodes as itself. The decoded buffer is at most three quarters of the
//! string's length: no length claimed by the input is ever allocated.

use std::fmt;

use base64::display::Base64Display;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

use crate::codec::budget::ByteStrings;

/// Standard alphabet; writes padding, reads with or without it.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Serializes `T` with its byte strings as base64 text.
pub(super) struct WithBase64<'a, T: ?Sized>(pub(super) &'a T);

impl<T: Serialize + ?Sized> Serialize for WithBase64<'_, T> {
    #[inline]
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Base64Serializer(serializer))
    }
}

/// A [`Serializer`] that writes byte strings as base64 strings and everything else
/// as `S` does.
pub(super) struct Base64Serializer<S>(S);

/// Forwards `serialize_*` methods that carry no nested value.
macro_rules! forward_ser {
    ($($method:ident($($arg:ident: $ty:ty),*))*) => {$(
        #[inline]
        fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.0.$method($($arg),*)
        }
    )*};
}

impl<S: Serializer> Serializer for Base64Serializer<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward_ser! {
        serialize_bool(v: bool)
        serialize_i8(v: i8)
        serialize_i16(v: i16)
        serialize_i32(v: i32)
        serialize_i64(v: i64)
        serialize_i128(v: i128)
        serialize_u8(v: u8)
        serialize_u16(v: u16)
        serialize_u32(v: u32)
        serialize_u64(v: u64)
        serialize_u128(v: u128)
        serialize_f32(v: f32)
        serialize_f64(v: f64)
        serialize_char(v: char)
        serialize_str(v: &str)
        serialize_none()
        serialize_unit()
        serialize_unit_struct(name: &'static str)
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str)
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        self.0.collect_str(&Base64Display::new(v, &ENGINE))
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&WithBase64(value))
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &WithBase64(value))
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &WithBase64(value))
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Compound)
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Compound)
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Compound)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Compound)
    }

    #[inline]
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Compound)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
    }

    #[inline]
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(value)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A compound serializer of `S` whose elements, fields, keys and values are
/// serialized with their byte strings as base64 text.
pub(super) struct Compound<C>(C);

/// The compound serializers that take one value at a time: each passes it on with
/// its byte strings as base64 text.
macro_rules! one_value_at_a_time {
    ($($trait:ident::$method:ident),* $(,)?) => {$(
        impl<C: $trait> $trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                self.0.$method(&WithBase64(value))
            }

            #[inline]
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    )*};
}

one_value_at_a_time! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
}

impl<C: SerializeMap> SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.0.serialize_key(&WithBase64(key))
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&WithBase64(value))
    }

    #[inline]
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), C::Error> {
        self.0.serialize_entry(&WithBase64(key), &WithBase64(value))
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

macro_rules! named_fields {
    ($($trait:ident),* $(,)?) => {$(
        impl<C: $trait> $trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                self.0.serialize_field(key, &WithBase64(value))
            }

            #[inline]
            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.0.skip_field(key)
            }

            #[inline]
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    )*};
}

named_fields!(SerializeStruct, SerializeStructVariant);

/// Byte strings read as base64 text, or as an array of numbers.
#[derive(Debug)]
pub(super) struct Base64;

impl ByteStrings for Base64 {
    #[inline]
    fn deserialize<'de, D: Deserializer<'de>, V: Visitor<'de>>(
        deserializer: D,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        deserializer.deserialize_bytes(Base64Visitor(visitor))
    }
}

/// A [`Visitor`] that base64-decodes the text it is given for `V`.
struct Base64Visitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Base64Visitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(" (base64 text or an array of numbers)")
    }

    #[inline]
    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<V::Value, E> {
        let bytes = ENGINE
            .decode(v)
            .map_err(|e| E::custom(format_args!("a byte string is not valid base64: {e}")))?;
        self.0.visit_byte_buf(bytes)
    }

    #[inline]
    fn visit_str<E: Error>(self, v: &str) -> Result<V::Value, E> {
        self.visit_bytes(v.as_bytes())
    }

    /// An array of numbers, as serde_json writes byte strings.
    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(seq)
    }
}
