//! Stable hashes for method ids and interface fingerprints (FNV-1a: simple, and the
//! same on every platform and compiler version, unlike `std`'s hasher).

pub(crate) fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Bits of a method id that come from its signature (the low ones); the rest come
/// from its name. Must match `SIGNATURE_BITS` in the runtime's `dispatch.rs`.
pub(crate) const SIGNATURE_BITS: u32 = 12;

/// Mixes a hash so that its high bits depend on every input byte (FNV-1a alone
/// leaves them nearly unchanged by the last bytes: `get1` and `get2` would share
/// them). MurmurHash3's 64-bit finalizer.
fn mix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The wire id of a method: 20 bits from its name, so adding, removing or
/// reordering other methods keeps it stable, and 12 from its signature (argument
/// and result types as written), so a peer whose method of the same name has
/// other types tells the caller so instead of failing to decode. Free on the wire:
/// the id is one `u32` either way.
///
/// The runtime's `interface::by_name::method_id` computes the same name bits for
/// calls by name (Cap'n Web); its test checks the two agree on generated ids.
pub(crate) fn method_id(name: &str, signature: &str) -> u32 {
    let name = (mix(fnv64(name.as_bytes())) >> (64 - (32 - SIGNATURE_BITS))) as u32;
    let signature = (mix(fnv64(signature.as_bytes())) >> (64 - SIGNATURE_BITS)) as u32;
    // All ones is the wildcard of a call by name (the runtime's
    // `interface::by_name::WILDCARD`): no generated id carries it, so a call by
    // name is never taken for a call with a checked signature.
    let signature = signature.min(WILDCARD - 1);
    (name << SIGNATURE_BITS) | signature
}

/// The signature bits of a call by name.
const WILDCARD: u32 = (1 << SIGNATURE_BITS) - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(method_id("add", "u64"), method_id("sub", "u64"));
        // Similar names differ in the name bits; another signature only in the rest.
        let name_bits = |id: u32| id >> SIGNATURE_BITS;
        assert_ne!(
            name_bits(method_id("get1", "")),
            name_bits(method_id("get2", ""))
        );
        // No signature hashes to the wildcard: over many, none carries it.
        for i in 0..20_000 {
            let id = method_id("m", &format!("sig{i}"));
            assert_ne!(id & WILDCARD, WILDCARD, "signature {i}");
        }
        let (a, b) = (method_id("get", "u32->u64"), method_id("get", "u32->u32"));
        assert_eq!(name_bits(a), name_bits(b));
        assert_ne!(a, b);
    }
}
