//! Resource limits for decoding untrusted input, independent of the wire format.
//!
//! Every value received from a peer is decoded through [`Budget::seed`], a
//! [`DeserializeSeed`] that wraps the format's [`Deserializer`] (and every `Visitor`,
//! `SeqAccess`, `MapAccess`, `EnumAccess` and `VariantAccess` it hands out) so that a
//! small frame cannot make us do unbounded work:
//!
//! * **Nesting depth.** Each level of nesting (sequence, tuple, struct, map, enum,
//!   newtype struct, `Some`) counts; going deeper than [`MAX_DEPTH`] is an error
//!   instead of a stack overflow. The level is counted when the format hands the
//!   value to its visitor (`visit_seq`, `visit_map`, `visit_enum`, `visit_some`,
//!   `visit_newtype_struct`), so it works the same for self-describing formats
//!   (`deserialize_any`) and for formats driven by the type.
//! * **Element count.** The elements of variable-length sequences plus the entries of
//!   maps, summed over the whole value, may not exceed the input length plus
//!   [`ELEMENT_SLACK`]. An honest encoding spends at least one byte on almost every
//!   element, so this only rejects lengths claimed for zero-sized elements (a
//!   `Vec<()>` "of 2^36 elements" in nine bytes), which the formats would otherwise
//!   loop over without reading anything. Fields of tuples, arrays, structs and tuple
//!   variants are not counted: their number is fixed by the type, not by the input.
//! * **Owned buffers.** Requests for an owned `String` or byte buffer are forwarded as
//!   requests for a borrowed `str` or `[u8]`: the visitor then copies exactly the
//!   bytes that are present, whereas a format may allocate the claimed length before
//!   reading (bincode 2 allocates up to its configured limit, 1 GiB, for a six-byte
//!   frame).
//!
//! The wrappers are the one place every nested deserializer passes through, so they
//! also apply how a format reads byte strings ([`ByteStrings`]): natively in the
//! binary formats, as base64 text in JSON.
//!
//! On a violation the error is the format's own, made with
//! [`serde::de::Error::custom`]; as some formats drop custom messages (postcard), the
//! budget also remembers the violation and [`Budget::error`] reports it.
//!
//! The wrappers share one small [`Budget`] by `&mut` and never allocate.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, Error, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::CodecError;

/// The deepest nesting a decoded value may have.
pub(crate) const MAX_DEPTH: u32 = 128;

/// Elements allowed beyond the input length (see the module documentation).
pub(crate) const ELEMENT_SLACK: usize = 4096;

/// Which limit a decode ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Violation {
    /// Nesting deeper than this many levels.
    Depth(u32),
    /// Too many sequence elements and map entries.
    Elements,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Depth(max) => write!(f, "nesting deeper than {max} levels"),
            Violation::Elements => f.write_str("more elements than the message can hold"),
        }
    }
}

/// How a format reads a byte string (`deserialize_bytes`, `deserialize_byte_buf`).
pub(crate) trait ByteStrings {
    /// Deserializes a byte string from `deserializer` with `visitor`.
    fn deserialize<'de, D: Deserializer<'de>, V: Visitor<'de>>(
        deserializer: D,
        visitor: V,
    ) -> Result<V::Value, D::Error>;
}

/// Byte strings as the format itself reads them.
#[derive(Debug)]
pub(crate) struct Native;

impl ByteStrings for Native {
    /// Asks for borrowed bytes even for a byte buffer: the visitor copies what is
    /// there (see the module documentation).
    #[inline]
    fn deserialize<'de, D: Deserializer<'de>, V: Visitor<'de>>(
        deserializer: D,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        deserializer.deserialize_bytes(visitor)
    }
}

/// The limits left for one decode, shared by all the wrappers of that decode; `B`
/// reads its byte strings.
#[derive(Debug)]
pub(crate) struct Budget<B = Native> {
    max_depth: u32,
    depth_left: u32,
    elements_left: usize,
    violation: Option<Violation>,
    bytes: PhantomData<fn() -> B>,
}

impl Budget {
    /// The budget for decoding `input_len` bytes: [`MAX_DEPTH`] levels and
    /// `input_len + ELEMENT_SLACK` elements.
    pub(crate) fn for_input(input_len: usize) -> Self {
        Budget::new(MAX_DEPTH, input_len.saturating_add(ELEMENT_SLACK))
    }

    /// A budget with explicit limits.
    pub(crate) fn new(max_depth: u32, max_elements: usize) -> Self {
        Budget {
            max_depth,
            depth_left: max_depth,
            elements_left: max_elements,
            violation: None,
            bytes: PhantomData,
        }
    }
}

impl<B> Budget<B> {
    /// The same budget, with byte strings read by `C`.
    // Only the JSON codec reads byte strings otherwise than natively.
    #[cfg_attr(not(feature = "json"), allow(dead_code))]
    pub(crate) fn bytes_as<C: ByteStrings>(self) -> Budget<C> {
        Budget {
            max_depth: self.max_depth,
            depth_left: self.depth_left,
            elements_left: self.elements_left,
            violation: self.violation,
            bytes: PhantomData,
        }
    }

    /// A seed that deserializes a `T` within this budget.
    pub(crate) fn seed<T>(&mut self) -> Seed<'_, PhantomData<T>, B> {
        self.wrap_seed(PhantomData)
    }

    /// Wraps any seed so that it deserializes within this budget.
    pub(crate) fn wrap_seed<S>(&mut self, seed: S) -> Seed<'_, S, B> {
        Seed { seed, budget: self }
    }

    /// Turns the error of a failed decode into a [`CodecError`], naming the exceeded
    /// limit if there was one (some formats drop custom error messages).
    pub(crate) fn error(&self, e: impl fmt::Display) -> CodecError {
        match self.violation {
            Some(v) => CodecError(v.to_string()),
            None => CodecError::new(e),
        }
    }

    fn fail<E: Error>(&mut self, v: Violation) -> E {
        self.violation = Some(v);
        E::custom(v)
    }

    #[inline]
    fn enter<E: Error>(&mut self) -> Result<(), E> {
        match self.depth_left.checked_sub(1) {
            Some(left) => {
                self.depth_left = left;
                Ok(())
            }
            None => Err(self.fail(Violation::Depth(self.max_depth))),
        }
    }

    #[inline]
    fn leave(&mut self) {
        self.depth_left += 1;
    }

    #[inline]
    fn take_element<E: Error>(&mut self) -> Result<(), E> {
        match self.elements_left.checked_sub(1) {
            Some(left) => {
                self.elements_left = left;
                Ok(())
            }
            None => Err(self.fail(Violation::Elements)),
        }
    }
}

/// A [`DeserializeSeed`] that runs `seed` within a [`Budget`].
pub(crate) struct Seed<'a, S, B> {
    seed: S,
    budget: &'a mut Budget<B>,
}

impl<'de, S: DeserializeSeed<'de>, B: ByteStrings> DeserializeSeed<'de> for Seed<'_, S, B> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Budgeted {
            inner: deserializer,
            budget: self.budget,
        })
    }
}

/// A [`Deserializer`] that enforces a [`Budget`] on `inner`.
pub(crate) struct Budgeted<'a, D, B> {
    inner: D,
    budget: &'a mut Budget<B>,
}

impl<'a, D, B> Budgeted<'a, D, B> {
    /// Wraps `V` for a value whose sequence elements count against the budget.
    #[inline]
    fn counted<V>(budget: &'a mut Budget<B>, inner: V) -> BudgetVisitor<'a, V, B> {
        BudgetVisitor {
            inner,
            budget,
            count: true,
        }
    }

    /// Wraps `V` for a value whose sequence length is fixed by its type.
    #[inline]
    fn fixed<V>(budget: &'a mut Budget<B>, inner: V) -> BudgetVisitor<'a, V, B> {
        BudgetVisitor {
            inner,
            budget,
            count: false,
        }
    }
}

/// Forwards `deserialize_*` methods to the inner deserializer with a wrapped visitor.
macro_rules! forward {
    ($wrap:ident: $($method:ident($($arg:ident: $ty:ty),*))*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* Self::$wrap(self.budget, visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>, B: ByteStrings> Deserializer<'de> for Budgeted<'_, D, B> {
    type Error = D::Error;

    forward! { counted:
        deserialize_any()
        deserialize_bool()
        deserialize_i8()
        deserialize_i16()
        deserialize_i32()
        deserialize_i64()
        deserialize_i128()
        deserialize_u8()
        deserialize_u16()
        deserialize_u32()
        deserialize_u64()
        deserialize_u128()
        deserialize_f32()
        deserialize_f64()
        deserialize_char()
        deserialize_str()
        deserialize_option()
        deserialize_unit()
        deserialize_unit_struct(name: &'static str)
        deserialize_newtype_struct(name: &'static str)
        deserialize_seq()
        deserialize_map()
        deserialize_enum(name: &'static str, variants: &'static [&'static str])
        deserialize_identifier()
        deserialize_ignored_any()
    }

    forward! { fixed:
        deserialize_tuple(len: usize)
        deserialize_tuple_struct(name: &'static str, len: usize)
        deserialize_struct(name: &'static str, fields: &'static [&'static str])
    }

    /// Asks for a borrowed string: the visitor copies what is there (see the module
    /// documentation).
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_str(Self::counted(self.budget, visitor))
    }

    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        B::deserialize(self.inner, Self::counted(self.budget, visitor))
    }

    /// Read as [`deserialize_bytes`](Self::deserialize_bytes): the visitor copies
    /// what is there (see the module documentation).
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        B::deserialize(self.inner, Self::counted(self.budget, visitor))
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A [`Visitor`] that counts the nesting levels and wraps what it is given.
struct BudgetVisitor<'a, V, B> {
    inner: V,
    budget: &'a mut Budget<B>,
    /// Whether the elements of a sequence count against the element budget.
    count: bool,
}

/// Forwards `visit_*` methods that carry no nested value.
macro_rules! forward_visit {
    ($($method:ident($ty:ty))*) => {$(
        #[inline]
        fn $method<E: Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>, B: ByteStrings> Visitor<'de> for BudgetVisitor<'_, V, B> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool)
        visit_i8(i8)
        visit_i16(i16)
        visit_i32(i32)
        visit_i64(i64)
        visit_i128(i128)
        visit_u8(u8)
        visit_u16(u16)
        visit_u32(u32)
        visit_u64(u64)
        visit_u128(u128)
        visit_f32(f32)
        visit_f64(f64)
        visit_char(char)
        visit_str(&str)
        visit_borrowed_str(&'de str)
        visit_string(String)
        visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8])
        visit_byte_buf(Vec<u8>)
    }

    #[inline]
    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    #[inline]
    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let budget = self.budget;
        budget.enter()?;
        let value = self.inner.visit_some(Budgeted {
            inner: deserializer,
            budget: &mut *budget,
        });
        budget.leave();
        value
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        let budget = self.budget;
        budget.enter()?;
        let value = self.inner.visit_newtype_struct(Budgeted {
            inner: deserializer,
            budget: &mut *budget,
        });
        budget.leave();
        value
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget;
        budget.enter()?;
        let value = self.inner.visit_seq(BudgetSeq {
            inner: seq,
            budget: &mut *budget,
            count: self.count,
        });
        budget.leave();
        value
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget;
        budget.enter()?;
        let value = self.inner.visit_map(BudgetMap {
            inner: map,
            budget: &mut *budget,
        });
        budget.leave();
        value
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget;
        budget.enter()?;
        let value = self.inner.visit_enum(BudgetEnum {
            inner: data,
            budget: &mut *budget,
        });
        budget.leave();
        value
    }
}

/// A [`SeqAccess`] that charges each element to the budget (when `count`) and
/// deserializes it within the budget.
struct BudgetSeq<'a, A, B> {
    inner: A,
    budget: &'a mut Budget<B>,
    count: bool,
}

impl<'de, A: SeqAccess<'de>, B: ByteStrings> SeqAccess<'de> for BudgetSeq<'_, A, B> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let element = self.inner.next_element_seed(Seed {
            seed,
            budget: &mut *self.budget,
        })?;
        if self.count && element.is_some() {
            self.budget.take_element()?;
        }
        Ok(element)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        match self.inner.size_hint() {
            Some(n) if self.count => Some(n.min(self.budget.elements_left)),
            hint => hint,
        }
    }
}

/// A [`MapAccess`] that charges each entry to the budget and deserializes keys and
/// values within the budget.
struct BudgetMap<'a, A, B> {
    inner: A,
    budget: &'a mut Budget<B>,
}

impl<'de, A: MapAccess<'de>, B: ByteStrings> MapAccess<'de> for BudgetMap<'_, A, B> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(Seed {
            seed,
            budget: &mut *self.budget,
        })?;
        if key.is_some() {
            self.budget.take_element()?;
        }
        Ok(key)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(Seed {
            seed,
            budget: &mut *self.budget,
        })
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner
            .size_hint()
            .map(|n| n.min(self.budget.elements_left))
    }
}

/// An [`EnumAccess`] whose variant is deserialized within the budget.
struct BudgetEnum<'a, A, B> {
    inner: A,
    budget: &'a mut Budget<B>,
}

impl<'a, 'de, A: EnumAccess<'de>, B: ByteStrings> EnumAccess<'de> for BudgetEnum<'a, A, B> {
    type Error = A::Error;
    type Variant = BudgetVariant<'a, A::Variant, B>;

    #[inline]
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let budget = self.budget;
        let (tag, variant) = self.inner.variant_seed(Seed {
            seed,
            budget: &mut *budget,
        })?;
        Ok((
            tag,
            BudgetVariant {
                inner: variant,
                budget,
            },
        ))
    }
}

/// A [`VariantAccess`] whose content is deserialized within the budget.
struct BudgetVariant<'a, A, B> {
    inner: A,
    budget: &'a mut Budget<B>,
}

impl<'de, A: VariantAccess<'de>, B: ByteStrings> VariantAccess<'de> for BudgetVariant<'_, A, B> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            seed,
            budget: self.budget,
        })
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            BudgetVisitor {
                inner: visitor,
                budget: self.budget,
                count: false,
            },
        )
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            BudgetVisitor {
                inner: visitor,
                budget: self.budget,
                count: false,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::time::{Duration, Instant};

    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    use super::super::AnyCodec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Newtype(u32);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Unit,
        Newtype(Option<Box<Kind>>),
        Tuple(u8, String),
        Struct { a: i64, b: Vec<u16> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        name: String,
        blobs: Vec<Vec<u8>>,
        bytes: bytes::Bytes,
        map: BTreeMap<String, Option<Kind>>,
        hash: HashMap<u64, (bool, char)>,
        kinds: Vec<Kind>,
        tuple: (u8, i128, f64),
        array: [u16; 3],
        unit: (),
        newtype: Newtype,
        nothing: Option<Newtype>,
        units: Vec<()>,
    }

    fn record() -> Record {
        Record {
            name: "héllo".into(),
            blobs: vec![vec![], vec![1, 2, 3], vec![0xff; 300]],
            bytes: bytes::Bytes::from_static(b"\x00\x01binary\xff"),
            map: BTreeMap::from([
                ("none".to_string(), None),
                (
                    "some".to_string(),
                    Some(Kind::Newtype(Some(Box::new(Kind::Unit)))),
                ),
            ]),
            hash: HashMap::from([(1, (true, 'x')), (u64::MAX, (false, '✓'))]),
            kinds: vec![
                Kind::Unit,
                Kind::Newtype(None),
                Kind::Tuple(9, "t".into()),
                Kind::Struct {
                    a: -5,
                    b: vec![1, 600],
                },
            ],
            tuple: (1, -(1 << 100), 0.5),
            array: [1, 2, 3],
            unit: (),
            newtype: Newtype(42),
            nothing: None,
            units: vec![(); 100],
        }
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
        for codec in AnyCodec::ALL {
            let mut out = Vec::new();
            codec.encode(value, &mut out).unwrap();
            let back: T = codec
                .decode(&out)
                .unwrap_or_else(|e| panic!("{}: {e}", codec.name()));
            assert_eq!(&back, value, "{}", codec.name());
        }
    }

    /// Runs `f` on a thread with a 2 MiB stack, as a proof that it does not overflow.
    fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// A varint length prefix as bincode (standard config) writes it.
    fn bincode_len(n: u64) -> Vec<u8> {
        let mut out = vec![0xfd];
        out.extend_from_slice(&n.to_le_bytes());
        out
    }

    /// A varint length prefix as postcard (LEB128) writes it.
    fn postcard_len(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// The length prefix `codec` writes for `n`, if it writes one.
    fn length_prefix(codec: AnyCodec, n: u64) -> Option<Vec<u8>> {
        match codec.name() {
            "bincode" => Some(bincode_len(n)),
            "postcard" => Some(postcard_len(n)),
            _ => None,
        }
    }

    /// Decodes `bytes` as a `T` and expects an error, quickly.
    fn expect_error<T: DeserializeOwned + std::fmt::Debug>(
        codec: AnyCodec,
        bytes: &[u8],
    ) -> String {
        let start = Instant::now();
        let result = codec.decode::<T>(bytes);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{}: took {:?}",
            codec.name(),
            start.elapsed()
        );
        match result {
            Ok(v) => panic!("{}: decoded {v:?}", codec.name()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ordinary_values_round_trip() {
        round_trip(&record());
        round_trip(&vec![record(), record()]);
        round_trip(&Some(vec![Some(Box::new(Kind::Unit)), None]));
        round_trip(&String::new());
        round_trip(&Vec::<Vec<u8>>::new());
        // Up to the slack, even zero-sized elements are fine.
        round_trip(&vec![(); super::ELEMENT_SLACK]);
    }

    #[test]
    fn a_large_byte_vector_fits_the_budget() {
        let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7) as u8).collect();
        round_trip(&big);
        let nested: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; i % 7]).collect();
        round_trip(&nested);
        let bytes = bytes::Bytes::from(big);
        round_trip(&bytes);
    }

    #[test]
    fn only_zero_sized_elements_can_exceed_the_budget() {
        // Every JSON element takes bytes, so a real array never exceeds the budget;
        // the binary codecs spend nothing on a `()`, so many of them are refused.
        let units = vec![(); 100_000];
        let mut out = Vec::new();
        for &codec in AnyCodec::ALL {
            out.clear();
            codec.encode(&units, &mut out).unwrap();
            if codec.name() == "json" {
                assert_eq!(codec.decode::<Vec<()>>(&out).unwrap().len(), 100_000);
            } else {
                expect_error::<Vec<()>>(codec, &out);
            }
        }
    }

    #[test]
    fn a_claimed_length_of_zero_sized_elements_is_refused() {
        for &codec in AnyCodec::ALL {
            let Some(bomb) = length_prefix(codec, 1 << 36) else {
                continue;
            };
            let msg = expect_error::<Vec<()>>(codec, &bomb);
            assert_eq!(
                msg,
                "more elements than the message can hold",
                "{}",
                codec.name()
            );
            expect_error::<Vec<[u8; 0]>>(codec, &bomb);
            expect_error::<BTreeMap<(), ()>>(codec, &bomb);
            expect_error::<Vec<Vec<()>>>(codec, &bomb);

            // The budget is for the whole message, not per sequence.
            let mut three = length_prefix(codec, 3).unwrap();
            for _ in 0..3 {
                three.extend(length_prefix(codec, 3000).unwrap());
            }
            let msg = expect_error::<Vec<Vec<()>>>(codec, &three);
            assert_eq!(
                msg,
                "more elements than the message can hold",
                "{}",
                codec.name()
            );
        }
    }

    #[test]
    fn a_huge_claimed_string_or_byte_length_is_an_error() {
        for &codec in AnyCodec::ALL {
            let Some(huge) = length_prefix(codec, u64::MAX) else {
                expect_error::<String>(codec, b"\"unterminated");
                continue;
            };
            expect_error::<String>(codec, &huge);
            expect_error::<Vec<u8>>(codec, &huge);
            expect_error::<bytes::Bytes>(codec, &huge);
            // Within bincode's limit but beyond the input: copied from the input as
            // borrowed data, so this fails before anything is allocated.
            let gig = length_prefix(codec, (1 << 30) - 1).unwrap();
            expect_error::<String>(codec, &gig);
            expect_error::<bytes::Bytes>(codec, &gig);
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Nest {
        Leaf,
        Node(Box<Nest>),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Tree(Vec<Tree>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Chain(Option<Box<Chain>>);

    fn nest(depth: usize) -> Nest {
        (0..depth).fold(Nest::Leaf, |inner, _| Nest::Node(Box::new(inner)))
    }

    fn tree(depth: usize) -> Tree {
        (0..depth).fold(Tree(vec![]), |inner, _| Tree(vec![inner]))
    }

    fn chain(depth: usize) -> Chain {
        (0..depth).fold(Chain(None), |inner, _| Chain(Some(Box::new(inner))))
    }

    /// Drops a deep value without recursing.
    fn drop_nest(mut n: Nest) {
        while let Nest::Node(inner) = n {
            n = *inner;
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        const DEPTH: usize = 1_000_000;
        on_small_stack(|| {
            for &codec in AnyCodec::ALL {
                let (nest_bytes, tree_bytes) = if length_prefix(codec, 0).is_some() {
                    // Variant index 1 (`Node`), `Some`, and a length of 1 are all the
                    // byte 1 in bincode and postcard; the innermost value is a 0.
                    let mut bytes = vec![1u8; DEPTH];
                    bytes.push(0);
                    (bytes.clone(), bytes)
                } else {
                    let nest = format!(
                        "{}\"Leaf\"{}",
                        "{\"Node\":".repeat(DEPTH),
                        "}".repeat(DEPTH)
                    );
                    let tree = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
                    (nest.into_bytes(), tree.into_bytes())
                };
                let msg = expect_error::<Nest>(codec, &nest_bytes);
                if codec.name() != "json" {
                    // serde_json's own limit (also 128) may answer first.
                    assert_eq!(msg, "nesting deeper than 128 levels", "{}", codec.name());
                    expect_error::<Chain>(codec, &tree_bytes);
                }
                expect_error::<Tree>(codec, &tree_bytes);
                expect_error::<Vec<Tree>>(codec, &tree_bytes);
            }
        });
    }

    #[test]
    fn moderately_deep_values_decode() {
        on_small_stack(|| {
            for &codec in AnyCodec::ALL {
                let mut out = Vec::new();
                codec.encode(&nest(100), &mut out).unwrap();
                let back: Nest = codec.decode(&out).unwrap();
                assert_eq!(back, nest(100), "{}", codec.name());
                drop_nest(back);

                // A level of `Tree` is two levels of the data model: the newtype and
                // its vector.
                out.clear();
                codec.encode(&tree(60), &mut out).unwrap();
                assert_eq!(codec.decode::<Tree>(&out).unwrap(), tree(60));
                out.clear();
                codec.encode(&tree(70), &mut out).unwrap();
                codec.decode::<Tree>(&out).unwrap_err();

                if codec.name() != "json" {
                    out.clear();
                    codec.encode(&chain(60), &mut out).unwrap();
                    assert_eq!(codec.decode::<Chain>(&out).unwrap(), chain(60));
                }
            }
        });
    }

    #[test]
    fn trailing_data_is_refused() {
        for codec in AnyCodec::ALL {
            let mut out = Vec::new();
            codec.encode(&(1u8, "x"), &mut out).unwrap();
            out.push(b'7');
            assert!(
                codec.decode::<(u8, String)>(&out).is_err(),
                "{}",
                codec.name()
            );
        }
    }
}
