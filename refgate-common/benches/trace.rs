//! Trace format benchmark: bytes per event, encode and decode events per second.
//!
//! `cargo bench -p refgate-common --features std --bench trace`
//! `REFGATE_BENCH_TRACE=path/to/trace.bin cargo bench -p refgate-common --features std --bench trace`
//! measures a real recording instead of the synthetic stream (re-encoding its records);
//! `REFGATE_BENCH_SAVE=path` saves the encoded stream. Without `--bench` (as under
//! `cargo test --benches`) it runs once on a small stream.
use std::hint::black_box;
use std::time::{Duration, Instant};

use refgate_common::event::*;
use refgate_common::trace::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A synthetic stream shaped like a small-file btrfs workload: ~25% add heads, ~20% add tree
/// refs, ~10% add data refs, ~20% run heads, ~20% run refs, ~5% contention, a few commits and
/// extent-tree locks; bytenrs clustered and allocated mostly in order, µs gaps, 6 tids, 2 CPUs.
#[allow(
    clippy::too_many_lines,
    reason = "bench fixture: a synthetic generator"
)]
fn synthetic(n_events: usize) -> Vec<Record> {
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    let tids = [4101u32, 4102, 4103, 4104, 87, 88];
    let mut out = Vec::with_capacity(n_events + 16);
    out.push(Record::Filesystem {
        id: 0,
        fsid: [0x42; 16],
    });
    for (i, &tid) in tids.iter().enumerate() {
        let comm = if i < 4 {
            format!("writer{i}")
        } else {
            format!("kworker/u8:{i}")
        };
        out.push(Record::Task(Task {
            tid,
            tgid: if i < 4 { 4100 } else { tid },
            comm,
        }));
    }
    let locks = [
        0xffff_8880_0a1b_2c40u64,
        0xffff_8880_0a1b_2d80,
        0xffff_8880_3f00_1000,
        0xffff_8880_3f00_1200,
    ];
    let mut ts = 10_000_000_000u64;
    let mut tree_cursor = 30u64 << 30;
    let mut data_cursor = 40u64 << 30;
    let mut pending: std::collections::VecDeque<(u64, bool, u64)> = Default::default();
    let mut running: Option<(u64, bool, u64)> = None;
    let mut last_added: (u64, bool, u64) = (tree_cursor, false, 16384);
    let mut inode = [257u64, 10_257, 20_257, 30_257];
    let mut generation = 1000u64;
    let mut events = 0usize;
    while events < n_events {
        ts += 200 + rng.below(4) * rng.below(3000);
        let w = rng.below(4) as usize;
        let (tid, cpu) = (tids[w], (w % 2) as u32);
        let worker = tids[4 + rng.below(2) as usize];
        let roll = rng.below(100);
        let kind = if roll < 25 {
            // Add a head: a newly allocated tree block or data extent, mostly in order.
            let is_data = rng.below(3) == 0;
            let (bytenr, num_bytes) = if is_data {
                let len = 4096 * (1 + rng.below(8));
                data_cursor += len;
                (data_cursor - len, len)
            } else {
                tree_cursor += 16384 * (1 + rng.below(2));
                if rng.below(20) == 0 {
                    tree_cursor += 16384 * rng.below(1 << 12);
                }
                (tree_cursor, 16384)
            };
            last_added = (bytenr, is_data, num_bytes);
            pending.push_back(last_added);
            if pending.len() > 5000 {
                pending.pop_front();
            }
            EventKind::AddRefHead(RefHead {
                fs: 0,
                bytenr,
                num_bytes,
                action: ADD_DELAYED_REF,
                is_data,
            })
        } else if roll < 45 {
            let bytenr = if last_added.1 {
                tree_cursor
            } else {
                last_added.0
            };
            let shared = rng.below(10) == 0;
            EventKind::AddTreeRef(TreeRef {
                fs: 0,
                bytenr,
                num_bytes: 16384,
                action: if rng.below(4) == 0 {
                    DROP_DELAYED_REF
                } else {
                    ADD_DELAYED_REF
                },
                parent: if shared {
                    tree_cursor - 16384 * rng.below(64)
                } else {
                    0
                },
                ref_root: if shared {
                    0
                } else if rng.below(5) == 0 {
                    2
                } else {
                    5
                },
                level: if rng.below(8) == 0 { 1 } else { 0 },
                ref_type: if shared {
                    SHARED_BLOCK_REF_KEY
                } else {
                    TREE_BLOCK_REF_KEY
                },
                seq: 0,
            })
        } else if roll < 55 {
            let (bytenr, num_bytes) = if last_added.1 {
                (last_added.0, last_added.2)
            } else {
                (data_cursor, 4096)
            };
            inode[w] += rng.below(2);
            EventKind::AddDataRef(DataRef {
                fs: 0,
                bytenr,
                num_bytes,
                action: ADD_DELAYED_REF,
                parent: 0,
                ref_root: 5,
                owner: inode[w],
                offset: 0,
                ref_type: EXTENT_DATA_REF_KEY,
                seq: 0,
            })
        } else if roll < 75 {
            // Run the oldest pending head (the runner walks them in bytenr order).
            let h = pending.pop_front().unwrap_or(last_added);
            running = Some(h);
            let e = Event {
                ts_ns: ts,
                cpu: (rng.below(2)) as u32,
                tid: worker,
                kind: EventKind::RunRefHead(RefHead {
                    fs: 0,
                    bytenr: h.0,
                    num_bytes: h.2,
                    action: 0,
                    is_data: h.1,
                }),
            };
            out.push(Record::Event(e));
            events += 1;
            continue;
        } else if roll < 95 {
            let (bytenr, is_data, num_bytes) = running.unwrap_or(last_added);
            let e = Event {
                ts_ns: ts,
                cpu: (rng.below(2)) as u32,
                tid: worker,
                kind: if is_data {
                    EventKind::RunDataRef(DataRef {
                        fs: 0,
                        bytenr,
                        num_bytes,
                        action: ADD_DELAYED_REF,
                        parent: 0,
                        ref_root: 5,
                        owner: inode[rng.below(4) as usize],
                        offset: 0,
                        ref_type: EXTENT_DATA_REF_KEY,
                        seq: 0,
                    })
                } else {
                    EventKind::RunTreeRef(TreeRef {
                        fs: 0,
                        bytenr,
                        num_bytes,
                        action: ADD_DELAYED_REF,
                        parent: 0,
                        ref_root: 5,
                        level: 0,
                        ref_type: TREE_BLOCK_REF_KEY,
                        seq: 0,
                    })
                },
            };
            out.push(Record::Event(e));
            events += 1;
            continue;
        } else if roll < 99 {
            let l = rng.below(4) as usize;
            EventKind::Contention {
                role: LockRole::ALL[l],
                lock_addr: locks[l],
                flags: if l == 1 { 2 } else { 1 },
                ret: 0,
                wait_ns: 300 + rng.below(20_000),
            }
        } else if rng.below(10) == 0 {
            generation += 1;
            EventKind::TransactionCommit {
                fs: 0,
                generation,
                root_objectid: 5,
            }
        } else {
            EventKind::TreeLock {
                fs: 0,
                block: tree_cursor - 16384 * rng.below(256),
                generation,
                wait_ns: rng.below(50_000),
                owner: 2,
                is_log_tree: false,
            }
        };
        out.push(Record::Event(Event {
            ts_ns: ts,
            cpu,
            tid,
            kind,
        }));
        events += 1;
        if events.is_multiple_of(100_000) {
            out.push(Record::Stats(Stats {
                lost_per_cpu: vec![0, events as u64 / 1_000_000],
                ..Default::default()
            }));
        }
    }
    out
}

fn header() -> TraceHeader {
    TraceHeader {
        kernel_release: "bench".into(),
        cpu_count: 2,
        ..Default::default()
    }
}

/// Encode `records`, flushing every `flush_every` records (the recorder flushes once a second).
fn encode(records: &[Record], flush_every: usize) -> Vec<u8> {
    let mut w = TraceWriter::new(Vec::with_capacity(records.len() * 16), &header()).unwrap();
    for (i, r) in records.iter().enumerate() {
        w.write(r).unwrap();
        if i % flush_every == flush_every - 1 {
            w.flush().unwrap();
        }
    }
    w.finish().unwrap()
}

fn decode(bytes: &[u8]) -> usize {
    let mut r = TraceReader::open(bytes).unwrap();
    let mut n = 0;
    for rec in r.by_ref() {
        black_box(&rec);
        n += 1;
    }
    assert!(r.damage().is_none(), "{:?}", r.damage());
    n
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (what, records) = match std::env::var_os("REFGATE_BENCH_TRACE") {
        Some(path) => {
            let mut r = TraceReader::open_path(&path).unwrap_or_else(|e| panic!("{e}"));
            let recs: Vec<Record> = r.by_ref().collect();
            if let Some(d) = r.damage_error() {
                eprintln!("note: {d}");
            }
            let file_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let ev = recs
                .iter()
                .filter(|r| matches!(r, Record::Event(_)))
                .count();
            println!(
                "file {}: {} bytes, {} events, {:.2} bytes/event as recorded",
                path.to_string_lossy(),
                file_len,
                ev,
                file_len as f64 / ev.max(1) as f64
            );
            (format!("re-encoded {}", path.to_string_lossy()), recs)
        }
        None => {
            let n = if quick { 20_000 } else { 2_000_000 };
            (format!("synthetic stream of {n} events"), synthetic(n))
        }
    };
    let events = records
        .iter()
        .filter(|r| matches!(r, Record::Event(_)))
        .count();
    let runs = if quick { 1 } else { 7 };
    // About one flush per 40,000 records: a second of a busy recording.
    let flush_every = 40_000;
    let bytes = encode(&records, flush_every);
    if let Some(path) = std::env::var_os("REFGATE_BENCH_SAVE") {
        std::fs::write(&path, &bytes).unwrap();
        println!("saved the encoded stream to {}", path.to_string_lossy());
    }
    assert_eq!(decode(&bytes), records.len());
    let enc = best_of(runs, || {
        black_box(encode(black_box(&records), flush_every));
    });
    let dec = best_of(runs, || {
        black_box(decode(black_box(&bytes)));
    });
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for r in &records {
        if let Record::Event(e) = r {
            *kinds.entry(e.kind.probe_name()).or_default() += 1;
        }
    }
    println!("{what}: {} records, {events} events", records.len());
    for (k, n) in kinds {
        println!("  {k:34} {:5.1} %", 100.0 * n as f64 / events as f64);
    }
    println!(
        "size:   {} bytes, {:.2} bytes/event",
        bytes.len(),
        bytes.len() as f64 / events as f64
    );
    println!(
        "encode: {:.2} M events/s ({:.0} ns/event, best of {runs})",
        events as f64 / enc.as_secs_f64() / 1e6,
        enc.as_nanos() as f64 / events as f64
    );
    println!(
        "decode: {:.2} M events/s ({:.0} ns/event, best of {runs})",
        events as f64 / dec.as_secs_f64() / 1e6,
        dec.as_nanos() as f64 / events as f64
    );
}
