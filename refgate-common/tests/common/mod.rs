//! Shared helpers for the trace tests: proptest strategies for records and a sample header.
#![allow(dead_code)]
use proptest::prelude::*;
use refgate_common::event::*;
use refgate_common::trace::*;

pub fn sample_header() -> TraceHeader {
    TraceHeader {
        kernel_release: "6.18.44-test".into(),
        probes: vec![
            ProbeInfo {
                name: "btrfs:add_delayed_tree_ref".into(),
                kind: ProbeKind::Tracepoint,
                attached: true,
                note: String::new(),
            },
            ProbeInfo {
                name: "btrfs_run_delayed_refs".into(),
                kind: ProbeKind::Kprobe,
                attached: false,
                note: "CONFIG_KPROBES is not set".into(),
            },
        ],
        clock: Clock::Monotonic,
        cpu_count: 2,
        tool_version: "0.1.0".into(),
        hostname: "testhost".into(),
        start_unix_ns: 1_700_000_000_000_000_000,
        provenance: Provenance {
            command_line: vec!["refgate".into(), "record".into(), "--scratch".into()],
            scratch: true,
            workload: "4 writers x 5000 small files".into(),
        },
        run_arg: RunArg::MinBytes,
        nodesize: Some(16384),
        pointers: Pointers::Ids,
    }
}

/// Values that exercise the encodings' edge cases (units, wrap-around) as often as random ones.
fn u64_edgy() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u64..1 << 20).prop_map(|x| x << 12),
        Just(0u64),
        Just(u64::MAX),
        0u64..300,
    ]
}

fn tree_ref() -> BoxedStrategy<TreeRef> {
    (
        any::<u16>(),
        u64_edgy(),
        u64_edgy(),
        any::<u8>(),
        u64_edgy(),
        u64_edgy(),
        any::<u8>(),
        any::<u8>(),
        u64_edgy(),
    )
        .prop_map(
            |(fs, bytenr, num_bytes, action, parent, ref_root, level, ref_type, seq)| TreeRef {
                fs,
                bytenr,
                num_bytes,
                action,
                parent,
                ref_root,
                level,
                ref_type,
                seq,
            },
        )
        .boxed()
}

fn data_ref() -> BoxedStrategy<DataRef> {
    (
        (
            any::<u16>(),
            u64_edgy(),
            u64_edgy(),
            any::<u8>(),
            u64_edgy(),
        ),
        (u64_edgy(), u64_edgy(), u64_edgy(), any::<u8>(), u64_edgy()),
    )
        .prop_map(
            |(
                (fs, bytenr, num_bytes, action, parent),
                (ref_root, owner, offset, ref_type, seq),
            )| {
                DataRef {
                    fs,
                    bytenr,
                    num_bytes,
                    action,
                    parent,
                    ref_root,
                    owner,
                    offset,
                    ref_type,
                    seq,
                }
            },
        )
        .boxed()
}

fn ref_head() -> BoxedStrategy<RefHead> {
    (
        any::<u16>(),
        u64_edgy(),
        u64_edgy(),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(fs, bytenr, num_bytes, action, is_data)| RefHead {
            fs,
            bytenr,
            num_bytes,
            action,
            is_data,
        })
        .boxed()
}

fn lock_role() -> impl Strategy<Value = LockRole> {
    prop::sample::select(LockRole::ALL.to_vec())
}

pub fn event_kind() -> BoxedStrategy<EventKind> {
    prop_oneof![
        tree_ref().prop_map(EventKind::AddTreeRef),
        data_ref().prop_map(EventKind::AddDataRef),
        ref_head().prop_map(EventKind::AddRefHead),
        tree_ref().prop_map(EventKind::RunTreeRef),
        data_ref().prop_map(EventKind::RunDataRef),
        ref_head().prop_map(EventKind::RunRefHead),
        (any::<u16>(), u64_edgy(), u64_edgy()).prop_map(|(fs, generation, root_objectid)| {
            EventKind::TransactionCommit {
                fs,
                generation,
                root_objectid,
            }
        }),
        (
            any::<u16>(),
            u64_edgy(),
            u64_edgy(),
            u64_edgy(),
            u64_edgy(),
            any::<bool>()
        )
            .prop_map(|(fs, block, generation, wait_ns, owner, is_log_tree)| {
                EventKind::TreeLock {
                    fs,
                    block,
                    generation,
                    wait_ns,
                    owner,
                    is_log_tree,
                }
            }),
        (
            lock_role(),
            prop_oneof![
                u64_edgy(),
                (0u64..4).prop_map(|i| 0xffff_8880_0000_0000 + i * 64)
            ],
            any::<u32>(),
            any::<i32>(),
            u64_edgy()
        )
            .prop_map(
                |(role, lock_addr, flags, ret, wait_ns)| EventKind::Contention {
                    role,
                    lock_addr,
                    flags,
                    ret,
                    wait_ns,
                }
            ),
        (u64_edgy(), any::<i64>(), u64_edgy()).prop_map(|(arg, ret, duration_ns)| {
            EventKind::RunDelayedRefsCall {
                arg,
                ret,
                duration_ns,
            }
        }),
        u64_edgy().prop_map(|handle| EventKind::TransHandleStart { handle }),
        u64_edgy().prop_map(|handle| EventKind::TransHandleEnd { handle }),
        (u64_edgy(), any::<i64>(), u64_edgy()).prop_map(|(handle, ret, duration_ns)| {
            EventKind::CommitTransactionCall {
                handle,
                ret,
                duration_ns,
            }
        }),
    ]
    .boxed()
}

pub fn event() -> BoxedStrategy<Event> {
    (
        u64_edgy(),
        prop_oneof![any::<u32>(), 0u32..4],
        prop_oneof![any::<u32>(), 1000u32..1004],
        event_kind(),
    )
        .prop_map(|(ts_ns, cpu, tid, kind)| Event {
            ts_ns,
            cpu,
            tid,
            kind,
        })
        .boxed()
}

pub fn record() -> BoxedStrategy<Record> {
    prop_oneof![
        8 => event().prop_map(Record::Event),
        1 => (any::<u32>(), any::<u32>(), ".{0,20}").prop_map(|(tid, tgid, comm)| Record::Task(Task { tid, tgid, comm })),
        1 => (any::<u16>(), any::<[u8; 16]>()).prop_map(|(id, fsid)| Record::Filesystem { id, fsid }),
        1 => (prop::collection::vec(any::<u64>(), 0..8), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(lost_per_cpu, contention_not_btrfs, tree_lock_not_extent, other_fs, unpaired_contention)| Record::Stats(Stats {
                lost_per_cpu, contention_not_btrfs, tree_lock_not_extent, other_fs, unpaired_contention,
            })),
    ].boxed()
}

/// Write `records` with a flush after each index in `flush_after`; returns the bytes and, for
/// each flush, (file length after it, records written before it).
pub fn write_trace(
    records: &[Record],
    flush_after: &[usize],
    finish: bool,
) -> (Vec<u8>, Vec<(u64, usize)>) {
    let mut w = TraceWriter::new(Vec::new(), &sample_header()).unwrap();
    let mut marks = vec![(w.bytes_written(), 0)];
    for (i, r) in records.iter().enumerate() {
        w.write(r).unwrap();
        if flush_after.contains(&i) {
            w.flush().unwrap();
            marks.push((w.bytes_written(), i + 1));
        }
    }
    w.flush().unwrap();
    marks.push((w.bytes_written(), records.len()));
    let bytes = if finish {
        w.finish().unwrap()
    } else {
        let n = w.bytes_written();
        let mut v = w.finish().unwrap();
        v.truncate(n as usize);
        v
    };
    (bytes, marks)
}
