//! The bodies of the fuzz targets, shared with the regression test that replays every input
//! in `fuzz/regressions/` under `cargo test` (`refgate-user/tests/fuzz_regressions.rs`
//! includes this file). Each takes arbitrary bytes as a trace file; none may panic, and each
//! checks what must hold of any input, not only that nothing crashes.
//!
//! Every frame carries a CRC32, so almost every mutation of a seed would only exercise the
//! checksum test. Each body therefore runs twice: on the bytes as given (framing, lengths,
//! checksums), and with every frame's CRC recomputed ([`with_fixed_crcs`]), which takes the
//! mutation into the header, LZ4 and record decoders behind the check.
use refgate_common::{
    event::Record,
    trace::{DamageReason, TraceReader, TraceWriter, summary},
};
use refgate_replay::trace_workload::{TraceOptions, workload_from_records};

/// CRC-32 (IEEE), as `crc32fast` computes it, without a dependency the test crate lacks.
fn crc32(parts: &[&[u8]]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
    }
    !c
}

/// `data` with the CRC of every frame that fits in it recomputed (the trace layout of
/// `refgate-common/src/trace.rs`: 10 bytes of magic and version, then frames of
/// `len u32 | crc u32 | payload`, the CRC over the length bytes and the payload).
pub fn with_fixed_crcs(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    let mut at = 10;
    while at + 8 <= v.len() {
        let len = u32::from_le_bytes(v[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e <= v.len()) else {
            break;
        };
        let crc = crc32(&[&v[at..at + 4], &v[at + 8..end]]);
        v[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    v
}

/// Runs `check` on `data` and on `data` with its CRCs fixed.
fn both(data: &[u8], check: fn(&[u8])) {
    check(data);
    check(&with_fixed_crcs(data));
}

/// The reader (header, frames, blocks): everything before the damage, the damage within the
/// file, and the records read re-encode to a trace that reads back to the same records.
pub fn trace_reader(data: &[u8]) {
    both(data, check_reader);
}

fn check_reader(data: &[u8]) {
    let Ok(mut r) = TraceReader::open(data) else {
        return;
    };
    let header = r.header().clone();
    let records: Vec<Record> = r.by_ref().collect();
    match r.damage() {
        None => assert!(r.finished(), "no damage but no end frame either"),
        Some(d) => {
            assert!(d.offset <= data.len() as u64, "damage past the end: {d:?}");
            let _ = (d.to_string(), d.reason.short());
            if d.reason == DamageReason::TrailingData {
                assert!(r.finished());
            }
        }
    }
    let mut w = TraceWriter::new(Vec::new(), &header).expect("a header that was read writes");
    for rec in &records {
        w.write(rec).expect("a record that was read writes");
    }
    let bytes = w.finish().expect("finish");
    let mut back = TraceReader::open(&bytes[..]).expect("a written trace opens");
    let again: Vec<Record> = back.by_ref().collect();
    assert_eq!(back.damage(), None, "a written trace is whole");
    assert_eq!(back.header(), &header);
    assert!(again == records, "records changed in a round trip");
}

/// `refgate inspect`'s summary, its text and its JSON.
pub fn inspect_summary(data: &[u8]) {
    both(data, check_summary);
}

fn check_summary(data: &[u8]) {
    let Ok(r) = TraceReader::open(data) else {
        return;
    };
    let s = summary::summarize(r);
    let _ = summary::render_text(&s);
    serde_json::to_string(&s).expect("the summary serializes");
    assert_eq!(s.damage.is_some(), s.damage_message.is_some());
}

/// Trace → workload, as `refgate replay` does it, with and without think-times; a workload
/// that comes out must pass its own validation.
pub fn trace_workload(data: &[u8]) {
    both(data, check_workload);
}

fn check_workload(data: &[u8]) {
    let Ok(r) = TraceReader::open(data) else {
        return;
    };
    let records: Vec<Record> = r.collect();
    for speed in [None, Some(1.0)] {
        let opts = TraceOptions {
            speed,
            ..TraceOptions::default()
        };
        if let Ok((w, conv)) = workload_from_records(records.clone(), &opts) {
            w.validate().expect("a converted workload is valid");
            assert_eq!(conv.transactions, w.transactions);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_is_ieee() {
        assert_eq!(super::crc32(&[b"123456789"]), 0xcbf4_3926);
    }
}
