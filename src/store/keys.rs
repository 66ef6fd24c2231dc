//! Key layout.
//!
//! - A table's column family: key = insertId as big-endian u64, so keys sort
//!   by insertId and a range read is one seek plus a sequential scan.
//! - `meta` column family: `seq/<table>` → the last insertId issued for the
//!   table (u64 BE), written in the same batch as the records, so ids stay
//!   monotonic across restarts even after retention deleted every record.
//! - `dedup` column family: `0xFF`, then scope, deviceId and messageId, each
//!   as its length (u32 BE) and bytes → table name length (u8), table name,
//!   insertId (u64 BE), expiry (unix ms, u64 BE). Length prefixes make the
//!   encoding injective: no two (scope, deviceId, messageId) triples share a
//!   key, whatever bytes (NUL included) the ids hold. The leading `0xFF`,
//!   which no UTF-8 text contains, keeps these keys apart from those of
//!   older versions (`<deviceId> 0x00 <messageId>`), which simply expire.

/// Column family for counters.
pub const META_CF: &str = "meta";
/// Column family for (deviceId, messageId) de-duplication.
pub const DEDUP_CF: &str = "dedup";

/// Key of a record.
pub fn record_key(insert_id: u64) -> [u8; 8] {
    insert_id.to_be_bytes()
}

/// The insertId a record key holds.
pub fn parse_record_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// Key of a table's insertId counter.
pub fn seq_key(table: &str) -> Vec<u8> {
    format!("seq/{table}").into_bytes()
}

/// First byte of every de-duplication key of this layout.
pub const DEDUP_TAG: u8 = 0xFF;

/// Key of a de-duplication entry: `0xFF`, then each part as u32 BE length
/// and bytes.
pub fn dedup_key(scope: &str, device: &str, message_id: &str) -> Vec<u8> {
    let parts = [scope, device, message_id];
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
    k.push(DEDUP_TAG);
    for p in parts {
        // Ids are bounded by the message size (far below 4 GiB).
        k.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        k.extend_from_slice(p.as_bytes());
    }
    k
}

/// Value of a de-duplication entry.
pub fn dedup_value(table: &str, insert_id: u64, expires_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + table.len() + 16);
    v.push(table.len() as u8);
    v.extend_from_slice(table.as_bytes());
    v.extend_from_slice(&insert_id.to_be_bytes());
    v.extend_from_slice(&expires_ms.to_be_bytes());
    v
}

/// Decode a de-duplication entry: (table, insertId, expiry ms).
pub fn parse_dedup_value(v: &[u8]) -> Option<(String, u64, u64)> {
    let l = *v.first()? as usize;
    let table = std::str::from_utf8(v.get(1..1 + l)?).ok()?.to_owned();
    let id = u64::from_be_bytes(v.get(1 + l..9 + l)?.try_into().ok()?);
    let exp = u64::from_be_bytes(v.get(9 + l..17 + l)?.try_into().ok()?);
    Some((table, id, exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_by_id() {
        let mut ks: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 17]
            .iter()
            .map(|&i| record_key(i))
            .collect();
        ks.sort();
        let ids: Vec<u64> = ks.iter().map(|k| parse_record_key(k).unwrap()).collect();
        assert_eq!(ids, vec![2, 17, 300, 1 << 40]);
    }

    /// Issue 9 item 8: (`a\0b`, `c`) and (`a`, `b\0c`) were one key.
    #[test]
    fn issue9_item8_dedup_keys_do_not_collide() {
        let triples = [
            ("", "a\0b", "c"),
            ("", "a", "b\0c"),
            ("", "a", "b"),
            ("", "ab", ""),
            ("", "", "ab"),
            ("a", "", "b"),
            ("s1", "dev", "m-1"),
            ("s2", "dev", "m-1"),
            ("", "dev", "m-1"),
            ("\0", "", ""),
            ("", "\0", ""),
            ("", "", "\0"),
        ];
        let keys: Vec<Vec<u8>> = triples.iter().map(|(s, d, m)| dedup_key(s, d, m)).collect();
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                assert_eq!(a == b, i == j, "{:?} vs {:?}", triples[i], triples[j]);
            }
            // Never the shape of an old key (UTF-8 text has no 0xFF).
            assert_eq!(a[0], DEDUP_TAG);
        }
    }

    proptest::proptest! {
        #[test]
        fn dedup_keys_are_injective(
            // A small alphabet with NUL, so that near-collisions are common.
            a in proptest::collection::vec("[ab\\x00]{0,4}", 3),
            b in proptest::collection::vec("[ab\\x00]{0,4}", 3),
        ) {
            let ka = dedup_key(&a[0], &a[1], &a[2]);
            let kb = dedup_key(&b[0], &b[1], &b[2]);
            proptest::prop_assert_eq!(ka == kb, a == b);
        }
    }

    #[test]
    fn dedup_round_trip() {
        let v = dedup_value("sensor_data", 42, 1_700_000_000_000);
        assert_eq!(
            parse_dedup_value(&v),
            Some(("sensor_data".into(), 42, 1_700_000_000_000))
        );
        assert_eq!(parse_dedup_value(&v[..5]), None);
    }
}
