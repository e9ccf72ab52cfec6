//! Round trips through the trace writer and reader.
#![cfg(feature = "std")]
mod common;

use common::*;
use proptest::prelude::*;
use refgate_common::event::*;
use refgate_common::trace::*;

fn read_back(bytes: &[u8]) -> (TraceHeader, Vec<Record>, Option<Damage>, bool) {
    let mut r = TraceReader::open(bytes).expect("open");
    let recs: Vec<Record> = r.by_ref().collect();
    (r.header().clone(), recs, r.damage().cloned(), r.finished())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn records_round_trip_with_arbitrary_flushes(
        records in prop::collection::vec(record(), 0..300),
        flush_after in prop::collection::vec(0usize..300, 0..10),
    ) {
        let (bytes, _) = write_trace(&records, &flush_after, true);
        let (header, back, damage, finished) = read_back(&bytes);
        prop_assert_eq!(header, sample_header());
        prop_assert_eq!(damage, None);
        prop_assert!(finished);
        prop_assert_eq!(back, records);
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Realistic streams: nearby bytenrs and timestamps, few tids; many blocks.
    #[test]
    fn clustered_streams_round_trip(
        seed in prop::collection::vec((0u64..2_000_000, 0i64..64, 0u32..4, event_kind()), 0..2000),
    ) {
        let mut ts = 1_000_000_000u64;
        let mut bn = 30_000_000_000u64;
        let records: Vec<Record> = seed
            .into_iter()
            .map(|(dt, dbn, tid, mut kind)| {
                ts += dt;
                bn = bn.wrapping_add_signed((dbn - 32) * 16384);
                match &mut kind {
                    EventKind::AddTreeRef(r) | EventKind::RunTreeRef(r) => r.bytenr = bn,
                    EventKind::AddDataRef(r) | EventKind::RunDataRef(r) => r.bytenr = bn,
                    EventKind::AddRefHead(r) | EventKind::RunRefHead(r) => r.bytenr = bn,
                    _ => {}
                }
                Record::Event(Event { ts_ns: ts, cpu: tid % 2, tid: 4000 + tid, kind })
            })
            .collect();
        let (bytes, _) = write_trace(&records, &[], true);
        let (_, back, damage, _) = read_back(&bytes);
        prop_assert_eq!(damage, None);
        prop_assert_eq!(back, records);
    }
}

#[test]
fn empty_trace_has_header_and_no_records() {
    let (bytes, _) = write_trace(&[], &[], true);
    let (header, back, damage, finished) = read_back(&bytes);
    assert_eq!(header, sample_header());
    assert!(back.is_empty());
    assert_eq!(damage, None);
    assert!(finished);
}

#[test]
fn big_streams_span_many_blocks_and_flushes_end_frames() {
    let records: Vec<Record> = (0..100_000u64)
        .map(|i| {
            Record::Event(Event {
                ts_ns: i * 1000 + (i * 7919) % 1000,
                cpu: (i % 2) as u32,
                tid: 100 + (i % 3) as u32,
                kind: EventKind::AddRefHead(RefHead {
                    fs: 0,
                    bytenr: ((i * 2_654_435_761) % 50_000) << 14,
                    num_bytes: 16384,
                    action: ADD_DELAYED_REF,
                    is_data: false,
                }),
            })
        })
        .collect();
    let mut w = TraceWriter::new(Vec::new(), &sample_header()).unwrap();
    let after_header = w.bytes_written();
    w.write(&records[0]).unwrap();
    assert_eq!(
        w.bytes_written(),
        after_header,
        "a record waits for its block"
    );
    w.flush().unwrap();
    let after_flush = w.bytes_written();
    assert!(after_flush > after_header, "flush ends the block");
    for r in &records[1..] {
        w.write(r).unwrap();
    }
    // Bounded memory: blocks reach the writer as they fill, not at the end.
    assert!(
        w.bytes_written() > after_flush + BLOCK_TARGET as u64,
        "{}",
        w.bytes_written()
    );
    let bytes = w.finish().unwrap();
    assert_eq!(read_back(&bytes).1, records);
}

#[test]
fn open_path_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.bin");
    let recs = vec![Record::Task(Task {
        tid: 1,
        tgid: 1,
        comm: "kworker/u8:1".into(),
    })];
    let (bytes, _) = write_trace(&recs, &[], true);
    std::fs::write(&p, bytes).unwrap();
    let mut r = TraceReader::open_path(&p).unwrap();
    assert_eq!(r.read_all().unwrap(), recs);
    assert_eq!(r.format_version(), FORMAT_VERSION);
}

/// The writer stores a block as-is when LZ4 would not make it smaller, and compresses it when it
/// does; both kinds read back.
#[test]
fn stored_and_compressed_blocks_both_read_back() {
    let fsid: [u8; 16] = std::array::from_fn(|i| (i * 37) as u8);
    let one = vec![Record::Filesystem { id: 3, fsid }];
    let (bytes, marks) = write_trace(&one, &[], true);
    let first_payload = marks[0].0 as usize + 8;
    assert_eq!(bytes[first_payload], 0, "a tiny block is stored");
    assert_eq!(read_back(&bytes).1, one);

    let many: Vec<Record> = (0..2000).map(|_| one[0].clone()).collect();
    let (bytes, marks) = write_trace(&many, &[], true);
    assert_eq!(
        bytes[marks[0].0 as usize + 8],
        1,
        "a repetitive block is LZ4"
    );
    assert!(bytes.len() < 2000 * 4, "and small: {} bytes", bytes.len());
    assert_eq!(read_back(&bytes).1, many);
}

/// A disk of `cap` bytes: a write past it is cut short, then fails with ENOSPC.
struct Disk {
    data: Vec<u8>,
    pos: usize,
    cap: usize,
}

impl std::io::Write for Disk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.pos >= self.cap {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = buf.len().min(self.cap - self.pos);
        if self.data.len() < self.pos + n {
            self.data.resize(self.pos + n, 0);
        }
        self.data[self.pos..self.pos + n].copy_from_slice(&buf[..n]);
        self.pos += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Disk {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match to {
            std::io::SeekFrom::Start(p) => self.pos = p as usize,
            _ => unimplemented!(),
        }
        Ok(self.pos as u64)
    }
}

impl Truncate for Disk {
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.data.truncate(len as usize);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// ENOSPC at any byte: `salvage` leaves a file that ends with a whole frame (and its end
    /// frame when 9 bytes fit), holding exactly the records it says, none damaged.
    #[test]
    fn a_full_disk_is_salvaged_to_the_last_whole_frame(
        records in prop::collection::vec(record(), 1..300),
        flush_after in prop::collection::vec(0usize..300, 0..10),
        cap_frac in 0.0f64..1.2,
    ) {
        let (full, _) = write_trace(&records, &flush_after, true);
        let header_len = TraceWriter::new(Vec::new(), &sample_header()).unwrap().bytes_written();
        let cap = header_len as usize + ((full.len() as f64 - header_len as f64) * cap_frac) as usize;
        let disk = Disk { data: Vec::new(), pos: 0, cap };
        let mut w = TraceWriter::new(disk, &sample_header()).unwrap();
        let mut handed = 0u64;
        let mut res = Ok(());
        for (i, r) in records.iter().enumerate() {
            res = w.write(r);
            if res.is_err() { break; }
            handed += 1;
            if flush_after.contains(&i) {
                res = w.flush();
                if res.is_err() { break; }
            }
        }
        if res.is_ok() {
            res = w.close();
        }
        prop_assert_eq!(res.is_err(), w.failed());
        let (disk, s) = w.salvage().unwrap();
        prop_assert_eq!(s.bytes as usize, disk.data.len());
        prop_assert!(s.kept.records <= handed);
        prop_assert_eq!(s.lost_records, handed - s.kept.records);
        if cap >= full.len() {
            prop_assert!(s.finished);
            prop_assert_eq!(&disk.data, &full);
        }
        let (_, back, damage, finished) = read_back(&disk.data);
        prop_assert_eq!(finished, s.finished);
        if s.finished {
            prop_assert_eq!(damage, None);
        } else {
            prop_assert_eq!(damage.map(|d| (d.offset, d.reason)), Some((s.bytes, DamageReason::Unfinished)));
        }
        prop_assert_eq!(back.len() as u64, s.kept.records);
        prop_assert_eq!(&back[..], &records[..back.len()]);
    }
}

/// A header written before a field was appended (here: `pointers`) reads with that field's
/// default, so older traces stay readable.
#[test]
fn a_header_without_later_fields_reads_with_their_defaults() {
    let mut h = sample_header();
    h.pointers = Pointers::Raw;
    let payload = postcard::to_stdvec(&h).unwrap();
    assert_eq!(
        payload.last(),
        Some(&0),
        "Pointers::Raw is variant 0: one zero byte"
    );
    let old = &payload[..payload.len() - 1];
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let len = old.len() as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(old);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&crc.finalize().to_le_bytes());
    bytes.extend_from_slice(old);
    let r = TraceReader::open(&bytes[..]).expect("an old header reads");
    assert_eq!(r.header(), &h);
}
