//! Arbitrary bytes as a received frame, in every codec: the frame split, the header
//! decode (and its re-encoding) and payload decodes must never panic.

#![no_main]

use farcall::AnyCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for &codec in AnyCodec::ALL {
        farcall::__private::fuzz::decode_frame(codec, data);
    }
});
