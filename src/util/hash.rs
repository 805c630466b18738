//! A short content hash for blobs (FNV-1a 64 over the raw little-endian bytes): enough to see
//! at a glance whether two blobs hold the same bytes, and to verify freezing.

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Hash of an f32 slice's bytes, as 16 hex digits.
pub fn hash_f32(values: &[f32]) -> String {
    format!("{:016x}", fnv1a64(bytemuck::cast_slice(values)))
}
