//! Client-to-server payload masking (RFC 6455 §5.3).
//!
//! Every byte a client sends is XORed with a 4-byte key; unmasking is the one
//! per-byte loop on the receive path, so it runs a machine word at a time.
//! The word loop is written in safe Rust (`chunks_exact_mut` + `u64` XOR) and
//! the compiler vectorises it; `apply_mask_bytewise` is the reference it is
//! tested against (every length × every key offset).

/// Unmask (or mask) `buf` in place with `key`, as if the payload started at
/// byte `offset` of the frame (so a frame unmasked in pieces stays correct).
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let rot = (offset % 4) as u32;
    let key32 = u32::from_le_bytes(key).rotate_right(rot * 8);
    let k = key32.to_le_bytes();
    let key64 = u64::from_le_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let v = u64::from_le_bytes(w) ^ key64;
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// The obvious byte-at-a-time version, kept as the reference for tests and
/// benchmarks.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_mask_matches_bytewise_for_all_lengths_and_offsets() {
        let key = [0x6d, 0xb6, 0xb2, 0x80];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..data.len() {
            for offset in 0..=3 {
                let mut a = data[..len].to_vec();
                let mut b = a.clone();
                apply_mask(&mut a, key, offset);
                apply_mask_bytewise(&mut b, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn masking_twice_is_identity() {
        let key = [1, 2, 3, 4];
        let orig = b"hello websocket world".to_vec();
        let mut v = orig.clone();
        apply_mask(&mut v, key, 0);
        assert_ne!(v, orig);
        apply_mask(&mut v, key, 0);
        assert_eq!(v, orig);
    }

    #[test]
    fn split_unmask_equals_whole() {
        let key = [9, 8, 7, 6];
        let orig: Vec<u8> = (0..101u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, key, 0);
        let mut parts = orig.clone();
        let (a, b) = parts.split_at_mut(13);
        apply_mask(a, key, 0);
        apply_mask(b, key, 13);
        assert_eq!(whole, parts);
    }
}
