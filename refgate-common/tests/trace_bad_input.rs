//! Bad input: the reader must say what is wrong, yield every intact record, and never panic.
#![cfg(feature = "std")]
mod common;

use common::*;
use proptest::prelude::*;
use refgate_common::event::*;
use refgate_common::trace::*;

fn small_records() -> Vec<Record> {
    let mut v = vec![
        Record::Filesystem {
            id: 0,
            fsid: [7; 16],
        },
        Record::Task(Task {
            tid: 42,
            tgid: 40,
            comm: "fsstress".into(),
        }),
    ];
    for i in 0..12u64 {
        v.push(Record::Event(Event {
            ts_ns: 5_000_000 + i * 1_500,
            cpu: (i % 2) as u32,
            tid: 42,
            kind: if i % 3 == 0 {
                EventKind::AddRefHead(RefHead {
                    fs: 0,
                    bytenr: (1 << 30) + i * 16384,
                    num_bytes: 16384,
                    action: ADD_DELAYED_REF,
                    is_data: false,
                })
            } else {
                EventKind::Contention {
                    role: LockRole::HeadMutex,
                    lock_addr: 0xffff_8880_1234_5600,
                    flags: 2,
                    ret: 0,
                    wait_ns: 900 + i,
                }
            },
        }));
    }
    v.push(Record::Stats(Stats {
        lost_per_cpu: vec![0, 3],
        ..Default::default()
    }));
    v
}

fn open_err(bytes: &[u8]) -> TraceError {
    match TraceReader::open(bytes) {
        Ok(_) => panic!("opened a bad trace"),
        Err(e) => e,
    }
}

/// Read everything; never panics (a panic fails the test).
fn read_lossy(bytes: &[u8]) -> Result<(Vec<Record>, Option<Damage>), TraceError> {
    let mut r = TraceReader::open(bytes)?;
    let v: Vec<Record> = r.by_ref().collect();
    // The iterator stays finished.
    assert!(r.next().is_none());
    Ok((v, r.damage().cloned()))
}

#[test]
fn empty_file() {
    let e = open_err(b"");
    assert!(matches!(e, TraceError::Empty { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("is empty") && msg.contains("refgate record"),
        "{msg}"
    );
}

#[test]
fn empty_file_on_disk_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("trace.bin");
    std::fs::write(&p, b"").unwrap();
    let msg = TraceReader::open_path(&p).err().unwrap().to_string();
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    let missing = dir.path().join("nope.bin");
    let msg = TraceReader::open_path(&missing).err().unwrap().to_string();
    assert!(msg.contains("nope.bin"), "{msg}");
}

#[test]
fn foreign_files() {
    for bytes in [
        &b"PERFILE2\x00\x00\x00\x00"[..],
        b"hello world\n",
        b"\x7fELF",
        b"{",
    ] {
        let e = open_err(bytes);
        assert!(matches!(e, TraceError::Foreign { .. }), "{e:?}");
        assert!(e.to_string().contains("not a refgate trace"), "{e}");
    }
}

#[test]
fn newer_and_unknown_versions() {
    let (mut bytes, _) = write_trace(&small_records(), &[], true);
    bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = open_err(&bytes);
    assert!(
        matches!(e, TraceError::NewerVersion { found, supported, .. } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("newer refgate") && msg.contains("upgrade"),
        "{msg}"
    );
    bytes[8..10].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        open_err(&bytes),
        TraceError::UnsupportedVersion { found: 0, .. }
    ));
}

#[test]
fn corrupt_header() {
    let (mut bytes, marks) = write_trace(&small_records(), &[], true);
    let header_end = marks[0].0 as usize;
    bytes[header_end - 1] ^= 0x40;
    let e = open_err(&bytes);
    assert!(matches!(e, TraceError::BadHeader { .. }), "{e:?}");
    // An impossible header length.
    let (mut bytes, _) = write_trace(&[], &[], true);
    bytes[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(open_err(&bytes), TraceError::BadHeader { .. }));
}

/// Cut the trace at every byte offset: every record of a frame that ends before the cut comes
/// back, and the damage names the offset of the first frame not wholly present.
#[test]
fn cut_at_every_offset() {
    let records = small_records();
    let (bytes, marks) = write_trace(&records, &[1, 4, 5, 9, 13], false);
    let header_end = marks[0].0 as usize;
    assert_eq!(marks.last().unwrap().0 as usize, bytes.len());
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        if cut == 0 {
            assert!(matches!(open_err(part), TraceError::Empty { .. }));
            continue;
        }
        if cut < header_end {
            let e = open_err(part);
            assert!(
                matches!(e, TraceError::CutHeader { .. }),
                "cut {cut}: {e:?}"
            );
            continue;
        }
        let (got, damage) = read_lossy(part).unwrap();
        // The last flush point at or before the cut.
        let &(at, n) = marks
            .iter()
            .rev()
            .find(|(off, _)| *off as usize <= cut)
            .unwrap();
        assert_eq!(got, records[..n], "cut {cut}");
        let d = damage.unwrap_or_else(|| panic!("cut {cut}: no damage reported"));
        assert_eq!(d.offset, at, "cut {cut}: {d}");
        if cut == at as usize {
            assert_eq!(d.reason, DamageReason::Unfinished, "cut {cut}");
        } else {
            assert!(
                matches!(d.reason, DamageReason::CutFrame { .. }),
                "cut {cut}: {d:?}"
            );
            let msg = d.to_error("t.bin").to_string();
            assert!(
                msg.contains(&format!("byte offset {at}")) && msg.contains("t.bin"),
                "{msg}"
            );
        }
    }
    // The whole unfinished file: everything, and "unfinished" at its end.
    let (got, damage) = read_lossy(&bytes).unwrap();
    assert_eq!(got, records);
    assert_eq!(
        damage,
        Some(Damage {
            offset: bytes.len() as u64,
            reason: DamageReason::Unfinished
        })
    );
}

/// Flip each byte after the header: the frame it is in fails its CRC (or its length is
/// impossible or runs past the end), the frames before it are all read.
#[test]
fn flipped_bytes_are_caught() {
    let records = small_records();
    let (bytes, marks) = write_trace(&records, &[1, 4, 5, 9, 13], true);
    let header_end = marks[0].0 as usize;
    for i in header_end..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        let (got, damage) = read_lossy(&b).unwrap();
        let d = damage.unwrap_or_else(|| panic!("flip at {i} not detected"));
        // The frame containing byte i starts at the last mark ≤ i (or it is the end frame).
        let &(at, n) = marks
            .iter()
            .rev()
            .find(|(off, _)| (*off as usize) <= i)
            .unwrap();
        assert_eq!(d.offset, at, "flip at {i}: {d}");
        assert_eq!(got, records[..n], "flip at {i}");
        assert!(
            matches!(
                d.reason,
                DamageReason::CrcMismatch { .. }
                    | DamageReason::BadFrameLength { .. }
                    | DamageReason::CutFrame { .. }
            ),
            "flip at {i}: {d:?}"
        );
        if let DamageReason::CrcMismatch { .. } = d.reason {
            let msg = d.to_error("t.bin").to_string();
            assert!(
                msg.contains("checksum") && msg.contains(&format!("offset {at}")),
                "{msg}"
            );
        }
    }
}

#[test]
fn garbage_after_valid_frames() {
    let records = small_records();
    // After an unfinished trace: the garbage is read as a frame and fails.
    let (mut bytes, _) = write_trace(&records, &[], false);
    let end = bytes.len() as u64;
    bytes.extend_from_slice(b"this is not a frame at all, just some text appended");
    let (got, damage) = read_lossy(&bytes).unwrap();
    assert_eq!(got, records);
    assert_eq!(damage.unwrap().offset, end);
    // After a finished trace: trailing data.
    let (mut bytes, _) = write_trace(&records, &[], true);
    let end = bytes.len() as u64;
    bytes.extend_from_slice(&[0; 3]);
    let (got, damage) = read_lossy(&bytes).unwrap();
    assert_eq!(got, records);
    assert_eq!(
        damage,
        Some(Damage {
            offset: end,
            reason: DamageReason::TrailingData
        })
    );
}

/// A frame with a good CRC but contents this reader does not understand (e.g. a record
/// variant from a newer writer that forgot to bump the version).
#[test]
fn undecodable_payload_with_good_crc() {
    let records = small_records();
    let (bytes, marks) = write_trace(&records, &[3], false);
    let at = marks[1].0 as usize;
    let mut b = bytes[..at].to_vec();
    let payload = [0u8, 200, 1, 2, 3]; // kind "stored", then an unknown Wire variant index 200
    let len = payload.len() as u32;
    b.extend_from_slice(&len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&payload);
    b.extend_from_slice(&h.finalize().to_le_bytes());
    b.extend_from_slice(&payload);
    let (got, damage) = read_lossy(&b).unwrap();
    assert_eq!(got, records[..4]);
    let d = damage.unwrap();
    assert_eq!(d.offset, at as u64);
    assert!(
        matches!(d.reason, DamageReason::Undecodable { record: 0, .. }),
        "{d:?}"
    );
    assert!(d.to_error("t").to_string().contains("undecodable"));
    let mut r = TraceReader::open(&b[..]).unwrap();
    assert!(matches!(r.read_all(), Err(TraceError::Undecodable { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes, with or without a valid prefix: no panic, and never a record that was not
    /// written... (that we cannot check for random bytes; we check the reader terminates).
    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..400), keep in 0usize..200) {
        let (mut bytes, _) = write_trace(&small_records(), &[2, 7], true);
        bytes.truncate(keep.min(bytes.len()));
        bytes.extend_from_slice(&tail);
        let _ = read_lossy(&bytes);
        let _ = read_lossy(&tail);
    }

    /// Random corruption of a valid trace: the records read are a prefix of those written.
    #[test]
    fn random_corruption_yields_a_prefix(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let records = small_records();
        let (mut bytes, marks) = write_trace(&records, &[2, 7], true);
        let header_end = marks[0].0 as usize;
        for (ix, x) in flips {
            let i = header_end + ix.index(bytes.len() - header_end);
            bytes[i] ^= x;
        }
        let (got, damage) = read_lossy(&bytes).unwrap();
        prop_assert!(damage.is_some());
        prop_assert!(got.len() <= records.len());
        prop_assert_eq!(&records[..got.len()], &got[..]);
    }
}

/// An LZ4 frame with a good CRC whose contents do not decompress, or claim a wrong length.
#[test]
fn bad_lz4_block_with_good_crc() {
    let records = small_records();
    let (bytes, marks) = write_trace(&records, &[3], false);
    let at = marks[1].0 as usize;
    for payload in [
        &[1u8, 10, 0xff, 0xff, 0xff][..], // claims 10 bytes, garbage LZ4
        &[1u8, 0xff, 0xff, 0xff, 0xff, 0x7f][..], // impossible raw length
        &[1u8][..],                       // no length at all
        &[1u8, 40, 0x10, b'a'][..],       // valid LZ4 of 1 byte, claims 40
    ] {
        let mut b = bytes[..at].to_vec();
        let len = payload.len() as u32;
        b.extend_from_slice(&len.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&len.to_le_bytes());
        h.update(payload);
        b.extend_from_slice(&h.finalize().to_le_bytes());
        b.extend_from_slice(payload);
        let (got, damage) = read_lossy(&b).unwrap();
        assert_eq!(got, records[..4]);
        let d = damage.unwrap();
        assert_eq!(d.offset, at as u64);
        assert!(
            matches!(&d.reason, DamageReason::Undecodable { detail, .. } if detail.contains("LZ4")),
            "{d:?}"
        );
    }
}
