//! 64-bit FNV-1a digests: stable across builds and platforms, unlike std's hasher.

/// The FNV-1a digest of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The FNV-1a digest of `value`'s JSON form (for types without `Hash`, such as API objects).
pub fn of_json(value: &impl serde::Serialize) -> u64 {
    fnv1a(&serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The FNV-1a 64 reference values.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of_json(&"a"), fnv1a(b"\"a\""));
    }
}
