//! Key layout.
//!
//! - A table's column family: key = insertId as big-endian u64, so keys sort
//!   by insertId and a range read is one seek plus a sequential scan.
//! - `meta` column family: `seq/<table>` → the last insertId issued for the
//!   table (u64 BE), written in the same batch as the records, so ids stay
//!   monotonic across restarts even after retention deleted every record.
//! - `dedup` column family: `<deviceId> 0x00 <messageId>` → table name
//!   length (u8), table name, insertId (u64 BE), expiry (unix ms, u64 BE).

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

/// Key of a de-duplication entry.
pub fn dedup_key(device: &str, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.len() + 1 + message_id.len());
    k.extend_from_slice(device.as_bytes());
    k.push(0);
    k.extend_from_slice(message_id.as_bytes());
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
