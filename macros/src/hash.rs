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

/// The wire id of a method: derived from its name only, so adding, removing or
/// reordering other methods keeps it stable.
pub(crate) fn method_id(name: &str) -> u32 {
    let h = fnv64(name.as_bytes());
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(method_id("add"), method_id("sub"));
    }
}
