//! Records of `__transaction_state`: key = the transactional id, value =
//! its [`TxnMeta`]; a null value (tombstone) forgets an expired id. The
//! last record of a key is its state, so the topic compacts.
//!
//! Format (big-endian, strings as `i16` length + UTF-8):
//! key `version: i16 = 0, transactional_id: string`;
//! value `version: i16 = 0, producer_id: i64, producer_epoch: i16,
//! last_producer_epoch: i16, timeout_ms: i32, state: i8, partitions: i32`,
//! then per partition `topic: string, partition: i32`, then
//! `start_ms: i64, update_ms: i64`.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::state::{TxnMeta, TxnState};

pub const TXN_STATE_TOPIC: &str = "__transaction_state";

const VERSION: i16 = 0;

/// Why a record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("__transaction_state record does not decode: {0}")]
pub struct RecordError(String);

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or_else(|| RecordError("truncated".into()))?;
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let len =
            usize::try_from(self.i16()?).map_err(|_| RecordError("negative length".into()))?;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| RecordError("not UTF-8".into()))
    }
    fn version(&mut self) -> Result<(), RecordError> {
        match self.i16()? {
            VERSION => Ok(()),
            v => Err(RecordError(format!("unknown version {v}"))),
        }
    }
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    put_str(&mut out, transactional_id);
    Bytes::from(out)
}

pub fn decode_key(b: &[u8]) -> Result<String, RecordError> {
    let mut r = Reader(b);
    r.version()?;
    r.string()
}

pub fn encode_value(m: &TxnMeta) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.last_producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state.code() as u8);
    out.extend_from_slice(&(m.partitions.len() as i32).to_be_bytes());
    for (topic, partition) in &m.partitions {
        put_str(&mut out, topic);
        out.extend_from_slice(&partition.to_be_bytes());
    }
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out.extend_from_slice(&m.update_ms.to_be_bytes());
    Bytes::from(out)
}

pub fn decode_value(transactional_id: &str, b: &[u8]) -> Result<TxnMeta, RecordError> {
    let mut r = Reader(b);
    r.version()?;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let last_producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let [code] = r.array::<1>()?;
    let state = TxnState::from_code(code as i8)
        .ok_or_else(|| RecordError(format!("unknown state {code}")))?;
    let count = r.i32()?;
    if count < 0 || count as usize > r.0.len() / 6 {
        return Err(RecordError(format!(
            "partition count out of range. count={count}"
        )));
    }
    let mut partitions = BTreeSet::new();
    for _ in 0..count {
        let topic = r.string()?;
        partitions.insert((topic, r.i32()?));
    }
    let start_ms = r.i64()?;
    let update_ms = r.i64()?;
    if !r.0.is_empty() {
        return Err(RecordError(format!("{} trailing bytes", r.0.len())));
    }
    Ok(TxnMeta {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        last_producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        update_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(parts: &[(&str, i32)]) -> TxnMeta {
        TxnMeta {
            transactional_id: "app-1".into(),
            producer_id: 4_000,
            producer_epoch: 3,
            last_producer_epoch: 2,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: parts.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            start_ms: 1_700_000_000_000,
            update_ms: 1_700_000_000_500,
        }
    }

    #[test]
    fn records_round_trip() {
        let m = meta(&[("orders", 0), ("orders", 3), ("__consumer_offsets", 17)]);
        assert_eq!(decode_key(&encode_key("app-1")), Ok("app-1".to_string()));
        assert_eq!(decode_value("app-1", &encode_value(&m)), Ok(m));
    }

    #[test]
    fn damaged_values_are_errors() {
        let bytes = encode_value(&meta(&[("t", 1)]));
        for cut in 0..bytes.len() {
            assert!(decode_value("x", &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.to_vec();
        bad[1] = 9;
        assert!(decode_value("x", &bad).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode_value("x", &bytes);
            let _ = decode_key(&bytes);
        }
    }
}
