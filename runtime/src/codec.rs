//! Wire codecs: how values become bytes.
//!
//! A [`Codec`] turns serde values into bytes and back. Each codec lives in its own file
//! behind a cargo feature; [`AnyCodec`] picks one at connection time. Both ends of a
//! connection must use the same codec.
//!
//! Decoding is bounded whatever the codec, since frames come from peers that may be
//! hostile: values may nest at most 128 levels deep, sequences and maps may not hold
//! more elements in total than the input has bytes (plus 4096), and length prefixes
//! never make a codec allocate more than the input holds.
//!
//! | codec | feature | notes |
//! |---|---|---|
//! | `Bincode` | `bincode` (default) | bincode 2.0.1, serde API, varint integers |
//! | `Postcard` | `postcard` | compact, maintained, stable specification |
//! | `Json` | `json` | readable; for peers written in other languages |

use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "bincode")]
pub(crate) mod bincode;
mod budget;
#[cfg(feature = "capnweb")]
pub(crate) mod capnweb;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "postcard")]
mod postcard;

#[cfg(feature = "bincode")]
pub use self::bincode::Bincode;
#[cfg(feature = "json")]
pub use self::json::Json;
#[cfg(feature = "postcard")]
pub use self::postcard::Postcard;

/// The name of the newtype struct a capability's index is written as. bincode,
/// postcard and serde_json write a newtype struct as its content, so on their wire a
/// capability is a bare `u32` index; a format that must tell capabilities apart from
/// numbers (the Cap'n Web expressions, `codec/capnweb.rs`) looks for this name.
pub(crate) const CAP_NEWTYPE: &str = "$farcall::Cap";

/// The name of the newtype struct a [`Stream`](crate::Stream) wraps its source's
/// capability in: transparent to every codec but Cap'n Web's, which marks it so
/// that the stream crosses as a `ReadableStream`.
pub(crate) const STREAM_NEWTYPE: &str = "$farcall::Stream";

/// The name of the newtype struct a [`StreamSender`](crate::StreamSender) wraps its
/// target's capability in: transparent to every codec but Cap'n Web's, which marks
/// it so that the sender crosses as a `WritableStream`.
pub(crate) const WRITER_NEWTYPE: &str = "$farcall::StreamSender";

/// A codec failed; the message comes from the underlying serde format.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub(crate) String);

impl CodecError {
    pub(crate) fn new(e: impl std::fmt::Display) -> Self {
        CodecError(e.to_string())
    }
}

mod sealed {
    /// Keeps [`Codec`](super::Codec) to the codecs farcall ships.
    pub trait Sealed {}
}

/// A serde format used on the wire.
///
/// Sealed: a connection picks its codec from the closed set [`AnyCodec`], which both
/// ends name in their opening message, so a codec of your own could not be agreed
/// on. The trait is public so the codecs can be used on their own (to look at what a
/// value becomes on the wire, say).
pub trait Codec: sealed::Sealed {
    /// A short name for logs and diagnostics.
    const NAME: &'static str;
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Decodes a whole value from `bytes`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// The codec a connection uses, chosen when it is built (see
/// [`Builder::codec`](crate::Builder::codec)). The default is bincode when that
/// feature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AnyCodec {
    /// [`Bincode`].
    #[cfg(feature = "bincode")]
    Bincode,
    /// [`Postcard`].
    #[cfg(feature = "postcard")]
    Postcard,
    /// [`Json`].
    #[cfg(feature = "json")]
    Json,
    /// Cap'n Web expressions: the payloads of connections made by
    /// [`crate::capnweb`], set by it. Not for a connection between farcall peers.
    #[cfg(feature = "capnweb")]
    #[doc(hidden)]
    CapnWeb,
}

impl AnyCodec {
    /// Whether this is Cap'n Web's codec, which only the translator of a Cap'n Web
    /// session reads.
    pub(crate) fn is_capnweb(self) -> bool {
        #[cfg(feature = "capnweb")]
        if self == AnyCodec::CapnWeb {
            return true;
        }
        false
    }
}

/// Runs `$body` with `$C` bound to the codec type selected by `$self`.
macro_rules! with_codec {
    ($self:expr, $C:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "bincode")]
            AnyCodec::Bincode => {
                type $C = Bincode;
                $body
            }
            #[cfg(feature = "postcard")]
            AnyCodec::Postcard => {
                type $C = Postcard;
                $body
            }
            #[cfg(feature = "json")]
            AnyCodec::Json => {
                type $C = Json;
                $body
            }
            #[cfg(feature = "capnweb")]
            AnyCodec::CapnWeb => {
                type $C = capnweb::CapnWeb;
                $body
            }
        }
    };
}

impl AnyCodec {
    /// Every codec compiled into this build, for tests that run under each (not the
    /// Cap'n Web expressions, which only the `capnweb` translator uses).
    pub const ALL: &'static [AnyCodec] = &[
        #[cfg(feature = "bincode")]
        AnyCodec::Bincode,
        #[cfg(feature = "postcard")]
        AnyCodec::Postcard,
        #[cfg(feature = "json")]
        AnyCodec::Json,
    ];

    /// The codec's short name.
    pub fn name(self) -> &'static str {
        with_codec!(self, C => C::NAME)
    }

    /// The number naming the codec in the opening exchange; fixed whatever features
    /// a build has, so a peer can name a codec this build lacks.
    pub(crate) fn wire_id(self) -> u8 {
        match self {
            #[cfg(feature = "bincode")]
            AnyCodec::Bincode => 1,
            #[cfg(feature = "postcard")]
            AnyCodec::Postcard => 2,
            #[cfg(feature = "json")]
            AnyCodec::Json => 3,
            #[cfg(feature = "capnweb")]
            AnyCodec::CapnWeb => 4,
        }
    }

    /// The codec numbered `id`, if this build has it.
    /// Cap'n Web payloads are never forwarded to another connection in their own
    /// codec (no other connection could read them), so it is not found here.
    pub(crate) fn from_wire_id(id: u8) -> Option<AnyCodec> {
        AnyCodec::ALL.iter().copied().find(|c| c.wire_id() == id)
    }

    /// The name of the codec numbered `id` (see [`wire_id`](Self::wire_id)).
    pub(crate) fn name_of(id: u8) -> String {
        match id {
            1 => "bincode".into(),
            2 => "postcard".into(),
            3 => "json".into(),
            4 => "capnweb".into(),
            other => format!("an unknown codec (number {other})"),
        }
    }

    /// Appends the encoding of `value` to `out`.
    pub fn encode<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        with_codec!(self, C => C::encode(value, out))
    }

    /// Decodes a whole value from `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        with_codec!(self, C => C::decode(bytes))
    }
}

impl Default for AnyCodec {
    fn default() -> Self {
        #[cfg(feature = "bincode")]
        return AnyCodec::Bincode;
        #[cfg(all(not(feature = "bincode"), feature = "postcard"))]
        return AnyCodec::Postcard;
        #[cfg(all(not(feature = "bincode"), not(feature = "postcard"), feature = "json"))]
        return AnyCodec::Json;
    }
}

#[cfg(not(any(feature = "bincode", feature = "postcard", feature = "json")))]
compile_error!("farcall needs at least one codec feature: `bincode`, `postcard` or `json`");

macro_rules! codec_from {
    ($feature:literal, $ty:ident) => {
        #[cfg(feature = $feature)]
        impl From<$ty> for AnyCodec {
            fn from(_: $ty) -> Self {
                AnyCodec::$ty
            }
        }
    };
}
codec_from!("bincode", Bincode);
codec_from!("postcard", Postcard);
codec_from!("json", Json);

/// Text-codec test helpers shared by the JSON and Cap'n Web codecs' tests.
#[cfg(all(test, feature = "json"))]
pub(crate) mod text_tests {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::Codec;

    /// `value` encoded by `C`, as text.
    pub(crate) fn encode<C: Codec, T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = Vec::new();
        C::encode(value, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// `text` decoded by `C`, the error in words.
    pub(crate) fn decode<C: Codec, T: DeserializeOwned>(text: &str) -> Result<T, String> {
        C::decode(text.as_bytes()).map_err(|e| e.to_string())
    }

    /// Encodes `value`, checks the text is `text` and that it decodes back.
    pub(crate) fn round_trip<C: Codec, T>(value: &T, text: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(encode::<C, T>(value), text);
        assert_eq!(&decode::<C, T>(text).unwrap(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    enum Shape {
        Unit,
        Pair(u8, String),
        Named { map: HashMap<String, Vec<i64>> },
    }

    #[test]
    fn every_codec_round_trips_and_appends() {
        for codec in AnyCodec::ALL {
            let value = vec![
                Shape::Unit,
                Shape::Pair(7, "x".into()),
                Shape::Named {
                    map: HashMap::from([("k".to_string(), vec![-1, 1 << 40])]),
                },
            ];
            let mut out = vec![0xAA];
            codec.encode(&value, &mut out).unwrap();
            assert_eq!(out[0], 0xAA, "{} must append", codec.name());
            let back: Vec<Shape> = codec.decode(&out[1..]).unwrap();
            assert_eq!(back, value, "{}", codec.name());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in AnyCodec::ALL {
            assert!(codec
                .decode::<Vec<String>>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f])
                .is_err());
        }
    }
}
