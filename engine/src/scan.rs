//! Walking the records of a data file, a whole atomic unit at a time.
//!
//! A unit is a lone put or tombstone, or a whole batch: a batch-begin record and the
//! `op_count` records inside its `body_len` bytes. A batch is handed out only once every one
//! of its records has been read and verified, which is what makes batches atomic across a
//! crash: a batch cut short is never applied.

use crate::error::Corruption;
use crate::format::{BatchBegin, DecodeError, RecordKind, RecordView, decode_record};

/// One put or tombstone of a unit, with its offset in the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    pub(crate) offset: u64,
    pub(crate) record: RecordView<'a>,
}

/// Why a scan stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanError {
    /// Offset of the unit that failed; everything before it was good.
    pub(crate) unit_offset: u64,
    /// Offset of the bad record: the unit's own, or one inside its batch.
    pub(crate) offset: u64,
    pub(crate) reason: Corruption,
    /// Where a record that follows the failed unit could start: just past the failed
    /// record, or past the batch's declared end when its framing was readable. Recovery
    /// looks for valid records from here on to tell a torn tail from corruption.
    pub(crate) resume_at: u64,
}

/// What a record that failed to decode says about the file.
pub(crate) fn corruption(error: DecodeError) -> Corruption {
    match error {
        DecodeError::Truncated => Corruption::Truncated,
        DecodeError::BadKind(kind) => Corruption::BadKind(kind),
        DecodeError::Checksum { stored, computed } => Corruption::Checksum { stored, computed },
    }
}

/// Scans `bytes` (a whole data file, header included) from `start`, calling `on_unit` with
/// each unit's ops and the bytes of its framing. Returns the offset where the records end, or
/// the first failure.
pub(crate) fn scan_units<'a>(
    bytes: &'a [u8],
    start: u64,
    mut on_unit: impl FnMut(&[Op<'a>], u64),
) -> Result<u64, ScanError> {
    let mut offset = start as usize;
    let mut batch: Vec<Op<'a>> = Vec::new();
    while offset < bytes.len() {
        let fail = |bad_at: usize, reason, resume_at: usize| ScanError {
            unit_offset: offset as u64,
            offset: bad_at as u64,
            reason,
            resume_at: resume_at as u64,
        };
        let record =
            decode_record(&bytes[offset..]).map_err(|e| fail(offset, corruption(e), offset + 1))?;
        let record_len = record.len();
        match record.kind {
            RecordKind::Put | RecordKind::Tombstone => {
                on_unit(
                    &[Op {
                        offset: offset as u64,
                        record,
                    }],
                    0,
                );
                offset += record_len;
            }
            RecordKind::BatchBegin => {
                let begin = BatchBegin::decode(record.value)
                    .ok_or_else(|| fail(offset, Corruption::BadBatch, offset + 1))?;
                let body_start = offset + record_len;
                let body_end = body_start + begin.body_len as usize;
                if body_end > bytes.len() {
                    return Err(fail(offset, Corruption::Truncated, bytes.len()));
                }
                batch.clear();
                let mut at = body_start;
                while at < body_end {
                    let op = decode_record(&bytes[at..body_end])
                        .map_err(|e| fail(at, corruption(e), body_end))?;
                    if op.kind == RecordKind::BatchBegin {
                        return Err(fail(at, Corruption::BadBatch, body_end));
                    }
                    batch.push(Op {
                        offset: at as u64,
                        record: op,
                    });
                    at += op.len();
                }
                if batch.len() != begin.op_count as usize {
                    return Err(fail(offset, Corruption::BadBatch, body_end));
                }
                on_unit(&batch, record_len as u64);
                offset = body_end;
            }
        }
    }
    Ok(offset as u64)
}

/// Whether `bytes` from `from` on are all zeros: the unused runway of a preallocated active
/// file, where no write ever began. (A record's kind byte is never zero.)
pub(crate) fn is_runway(bytes: &[u8], from: u64) -> bool {
    bytes[from as usize..].iter().all(|&b| b == 0)
}

/// Where the first valid record at or after `from` starts, if any: a bad record followed by
/// good ones is corruption (unless [`lost_sectors`] says otherwise), while one followed by
/// nothing valid is a torn tail.
pub(crate) fn next_valid_record(bytes: &[u8], from: u64) -> Option<u64> {
    (from as usize..bytes.len())
        .find(|&at| decode_record(&bytes[at..]).is_ok())
        .map(|at| at as u64)
}

/// The unit in which disks persist writes atomically, at the least.
const SECTOR: usize = 512;

/// Whether the damage in `bytes[from..to)` (from a failed unit to the next valid record) has
/// the shape of sectors of an unsynced write that never reached the disk: zeros from `from`
/// to the end of its sector, or a whole sector of zeros. A crash may persist any subset of
/// an unsynced write's sectors, and in the preallocated runway a sector not persisted reads
/// as zeros, so valid records of that same write may follow the damage. Nothing from such a
/// write was acknowledged, and nothing after it was written later still, so it is a torn
/// tail, not corruption.
pub(crate) fn lost_sectors(bytes: &[u8], from: u64, to: u64) -> bool {
    let (from, to) = (from as usize, (to as usize).min(bytes.len()));
    let zeros = |range: std::ops::Range<usize>| bytes[range].iter().all(|&b| b == 0);
    let first_end = (from / SECTOR + 1) * SECTOR;
    if first_end > to {
        return false;
    }
    zeros(from..first_end)
        || (first_end..to)
            .step_by(SECTOR)
            .any(|sector| sector + SECTOR <= to && zeros(sector..sector + SECTOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_sectors_are_zeros_to_a_sector_end_or_a_whole_zero_sector() {
        let mut bytes = vec![7u8; 4 * SECTOR];
        assert!(!lost_sectors(&bytes, 100, 4 * SECTOR as u64), "no zeros");
        bytes[100..SECTOR].fill(0);
        assert!(
            lost_sectors(&bytes, 100, 4 * SECTOR as u64),
            "zeros to the sector's end"
        );
        assert!(
            !lost_sectors(&bytes, 100, 400),
            "the next record is in the same sector"
        );
        bytes[100..SECTOR].fill(7);
        bytes[2 * SECTOR..3 * SECTOR].fill(0);
        assert!(
            lost_sectors(&bytes, 100, 3 * SECTOR as u64),
            "a whole zero sector"
        );
        assert!(
            !lost_sectors(&bytes, 100, 3 * SECTOR as u64 - 1),
            "not whole before `to`"
        );
        bytes[2 * SECTOR..3 * SECTOR - 1].fill(7);
        assert!(
            !lost_sectors(&bytes, 100, 4 * SECTOR as u64),
            "zeros short of a sector"
        );
    }
    use crate::format::{FILE_HEADER_LEN, FileHeader, FileKind, RECORD_HEADER_LEN, encode_record};

    fn file_with(units: &[&[(&[u8], &[u8])]]) -> Vec<u8> {
        let mut bytes = FileHeader::new(FileKind::Data, 1).encode().to_vec();
        for unit in units {
            if unit.len() == 1 {
                encode_record(&mut bytes, RecordKind::Put, 1, unit[0].0, unit[0].1);
                continue;
            }
            let mut body = Vec::new();
            for (key, value) in *unit {
                encode_record(&mut body, RecordKind::Put, 1, key, value);
            }
            let begin = BatchBegin {
                op_count: unit.len() as u32,
                body_len: body.len() as u32,
            };
            encode_record(&mut bytes, RecordKind::BatchBegin, 1, b"", &begin.encode());
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    #[test]
    fn units_come_out_whole() {
        let bytes = file_with(&[&[(b"a", b"1")], &[(b"b", b"2"), (b"c", b"3")]]);
        let mut units = Vec::new();
        let end = scan_units(&bytes, FILE_HEADER_LEN as u64, |ops, framing| {
            units.push((
                ops.iter()
                    .map(|op| op.record.key.to_vec())
                    .collect::<Vec<_>>(),
                framing,
            ));
        })
        .unwrap();
        assert_eq!(end, bytes.len() as u64);
        assert_eq!(units.len(), 2);
        assert_eq!(units[1].0, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(units[1].1, (RECORD_HEADER_LEN + 8) as u64);
    }

    #[test]
    fn a_cut_batch_is_never_handed_out() {
        let whole = file_with(&[&[(b"a", b"1")], &[(b"b", b"2"), (b"c", b"3")]]);
        let batch_at = FILE_HEADER_LEN + RECORD_HEADER_LEN + 2;
        for cut in batch_at + 1..whole.len() {
            let mut units = 0;
            let error =
                scan_units(&whole[..cut], FILE_HEADER_LEN as u64, |_, _| units += 1).unwrap_err();
            assert_eq!(units, 1, "cut {cut}");
            assert_eq!(error.unit_offset, batch_at as u64);
            assert!(
                next_valid_record(&whole[..cut], error.resume_at).is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_before_good_records_is_corruption() {
        let mut bytes = file_with(&[&[(b"a", b"1")], &[(b"b", b"2")]]);
        bytes[FILE_HEADER_LEN + RECORD_HEADER_LEN] ^= 1;
        let error = scan_units(&bytes, FILE_HEADER_LEN as u64, |_, _| {}).unwrap_err();
        assert_eq!(error.offset, FILE_HEADER_LEN as u64);
        assert!(matches!(error.reason, Corruption::Checksum { .. }));
        assert!(next_valid_record(&bytes, error.resume_at).is_some());
    }
}
