//! What an item costs against a stream's window: a deterministic size computed from
//! the value alone (not from its encoding), so the producer and the consumer agree on
//! it whatever the codec, and the consumer can tell when a peer sent more than its
//! credit.
//!
//! The size is that of a fixed-width binary layout (bincode's, with 8-byte lengths),
//! plus one byte per item so that even empty items use credit. Capabilities inside an
//! item count as their 4-byte index.

use serde::ser::{self, Serialize};

/// Counted once per item on top of its size.
const PER_ITEM: u64 = 1;

/// The cost of one item on a connection of `codec`: its size, or 1 on a Cap'n Web
/// session, whose peer cannot size a value the way Rust types do (its windows count
/// items; see `capnweb::session_config`).
pub(crate) fn cost_in<T: Serialize + ?Sized>(
    codec: Option<crate::codec::AnyCodec>,
    item: &T,
) -> u64 {
    #[cfg(feature = "capnweb")]
    if codec == Some(crate::codec::AnyCodec::CapnWeb) {
        return 1;
    }
    let _ = codec;
    cost_of(item)
}

/// The cost of one item.
pub(crate) fn cost_of<T: Serialize + ?Sized>(item: &T) -> u64 {
    let mut counter = Counter(0);
    // Capabilities serialize as an index into the message being encoded: give them
    // a throwaway one. An error (a `Serialize` impl that refuses) counts what was
    // reached, identically on both sides.
    crate::cap::counting(|| {
        let _ = item.serialize(&mut counter);
    });
    counter.0.saturating_add(PER_ITEM)
}

struct Counter(u64);

impl Counter {
    fn add(&mut self, n: u64) {
        self.0 = self.0.saturating_add(n);
    }
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot count")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Never
    }
}

macro_rules! fixed {
    ($($method:ident: $ty:ty = $n:expr;)*) => {
        $(fn $method(self, _: $ty) -> Result<(), Never> {
            self.add($n);
            Ok(())
        })*
    };
}

impl ser::Serializer for &mut Counter {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fixed! {
        serialize_bool: bool = 1;
        serialize_i8: i8 = 1;
        serialize_i16: i16 = 2;
        serialize_i32: i32 = 4;
        serialize_i64: i64 = 8;
        serialize_i128: i128 = 16;
        serialize_u8: u8 = 1;
        serialize_u16: u16 = 2;
        serialize_u32: u32 = 4;
        serialize_u64: u64 = 8;
        serialize_u128: u128 = 16;
        serialize_f32: f32 = 4;
        serialize_f64: f64 = 8;
        serialize_char: char = 4;
    }

    fn serialize_str(self, v: &str) -> Result<(), Never> {
        self.add(8 + v.len() as u64);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Never> {
        self.add(8 + v.len() as u64);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Never> {
        self.add(1);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Never> {
        self.add(1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Never> {
        self.add(4);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.add(4);
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        self.add(8);
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.add(4);
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        self.add(8);
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.add(4);
        Ok(self)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

macro_rules! compound {
    ($($trait:ident: $method:ident;)*) => {
        $(impl ser::$trait for &mut Counter {
            type Ok = ();
            type Error = Never;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Never> {
                Ok(())
            }
        })*
    };
}

compound! {
    SerializeSeq: serialize_element;
    SerializeTuple: serialize_element;
    SerializeTupleStruct: serialize_field;
    SerializeTupleVariant: serialize_field;
}

impl ser::SerializeMap for &mut Counter {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

macro_rules! named_fields {
    ($($trait:ident),*) => {
        $(impl ser::$trait for &mut Counter {
            type Ok = ();
            type Error = Never;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Never> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Never> {
                Ok(())
            }
        })*
    };
}

named_fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::cost_of;
    use bytes::Bytes;

    #[test]
    fn sizes_are_fixed_width() {
        assert_eq!(cost_of(&7u64), 9);
        assert_eq!(cost_of(&()), 1);
        assert_eq!(cost_of(&Bytes::from(vec![0u8; 1000])), 1009);
        assert_eq!(cost_of(&"abc".to_string()), 12);
        assert_eq!(cost_of(&Some(1u32)), 6);
        assert_eq!(cost_of(&vec![1u16, 2, 3]), 15);
        assert_eq!(cost_of(&(1u8, 2u8)), 3);
    }
}
