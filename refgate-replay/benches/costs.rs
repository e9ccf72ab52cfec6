//! Where the virtual engine's default costs come from (`refgate_replay::cost`): the model's
//! own operations timed on one thread, and this host's context switch and wake-up.
//!
//! `cargo bench -p refgate-replay --bench costs` prints one line per cost (median of 5 runs,
//! ns). The defaults in `src/cost.rs` are a run of this on the development machine, copied
//! by hand and dated there; they are never measured at replay time, so that a replay gives
//! the same figures on any host. BENCHMARKS.md keeps the run they came from.

use refgate_replay::internals::extent_tree::{ExtentItem, ExtentTree, RunRef, TreeConfig};
use refgate_replay::internals::head::{DelayedRefHead, HeadInner};
use refgate_replay::internals::root::{FsModel, TransHandle, Worker};
use refgate_replay::internals::run_v3::btrfs_find_ref_cluster;
use refgate_replay::live::Live;
use refgate_replay::metrics::ThreadMetrics;
use refgate_replay::params::{ExtentLock, ExtentTreeModel, Params};
use refgate_replay::refkey::{AddAction, BackrefKey, Era, NodeKey, RefAction, RefSpec};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const N: u64 = 200_000;

fn spec(i: u64) -> RefSpec {
    RefSpec {
        for_cow: true,
        ..RefSpec::data((i + 1) << 20, 4096, AddAction::AddExtent, 0, 5, 257, i)
    }
}

fn model() -> (FsModel, Worker) {
    let live = Arc::new(Live::new(1));
    let fs = FsModel::new(Era::V3, Params::default(), Vec::new(), live.clone());
    (fs, Worker::new(0, live))
}

/// The part of an add-API call done under `delayed_refs->lock` (§1.4): the head inserted
/// into the queue's map and the ref into the head's tree; the head and its ref tree are
/// allocated before the lock is taken, as in the kernel, and so outside the timing.
fn add_ref() -> f64 {
    let heads: Vec<Arc<DelayedRefHead>> = (0..N)
        .map(|i| Arc::new(DelayedRefHead::new((i + 1) << 20, 4096, true, 64)))
        .collect();
    let mut inners: Vec<HeadInner> = (0..N).map(|_| HeadInner::new(4096, true)).collect();
    let mut map: BTreeMap<u64, Arc<DelayedRefHead>> = BTreeMap::new();
    let t = Instant::now();
    for (i, (head, hi)) in heads.iter().zip(&mut inners).enumerate() {
        map.entry(head.bytenr).or_insert_with(|| head.clone());
        let key = NodeKey::new(Era::V3, &BackrefKey::data(0, 5, 257, i as u64), 0);
        black_box(hi.insert_ref(Era::V3, key, RefAction::Add, 0));
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

/// A whole add-API call of the model (allocation included), for comparison.
fn add_ref_call() -> f64 {
    let (fs, mut w) = model();
    let mut h = TransHandle::default();
    let t = Instant::now();
    for i in 0..N {
        fs.add_ref(&mut w, &mut h, &spec(i), None).unwrap();
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

/// `btrfs_find_ref_cluster` over a queue of one-ref heads, per node walked.
fn walk_node() -> f64 {
    let (fs, mut w) = model();
    let mut h = TransHandle::default();
    for i in 0..N {
        fs.add_ref(&mut w, &mut h, &spec(i), None).unwrap();
    }
    let mut g = fs.root_lock_for_tests(&mut w);
    let t = Instant::now();
    let mut start = 0;
    loop {
        let c = btrfs_find_ref_cluster(&fs, &mut w, &mut g, start);
        let Some(last) = c.back() else { break };
        start = last.bytenr;
        black_box(c);
    }
    let ns = t.elapsed().as_nanos() as f64;
    drop(g);
    ns / w.m.nodes_walked as f64
}

/// `select_delayed_ref` + `erase_ref` of one node in a head of 8 refs.
fn select_ref() -> f64 {
    let mut total = 0.0;
    let rounds = N / 8;
    for r in 0..rounds {
        let mut hi = HeadInner::new(4096, true);
        for k in 0..8 {
            let key = NodeKey::new(Era::V3, &BackrefKey::data(0, 5, 257, k + r), 0);
            hi.insert_ref(Era::V3, key, RefAction::Add, 0);
        }
        let t = Instant::now();
        while let Some(k) = hi.select_delayed_ref(Era::V3) {
            black_box(hi.erase_ref(&k));
        }
        total += t.elapsed().as_nanos() as f64;
    }
    total / (rounds * 8) as f64
}

/// One ref node applied to the extent-tree oracle (no modelled search cost).
fn run_ref() -> f64 {
    // The oracle under one lock (`--extent-tree single`): the model's own update, no walk.
    let cfg = TreeConfig {
        model: ExtentTreeModel::Single,
        ext_cost_ns: 0,
        virtual_cost_ns: 1,
        lock_kind: ExtentLock::Sleep,
        nodesize: 16384,
        extent_items: None,
        key_end: None,
        v3: false,
    };
    let tree = ExtentTree::new(
        Vec::<(u64, ExtentItem)>::new(),
        &cfg,
        Arc::new(Live::new(1)),
    );
    let mut m = ThreadMetrics::default();
    let ws = refgate_replay::live::WorkerState::default();
    let t = Instant::now();
    for i in 0..N {
        let rr = RunRef {
            bytenr: (i + 1) << 20,
            num_bytes: 4096,
            key: BackrefKey::data(0, 5, 257, i),
            action: RefAction::Add,
            ref_mod: 1,
            insert_reserved: true,
            extent_op: None,
        };
        tree.run_ref(&rr, &mut m, &ws).unwrap();
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

/// Removing a finished head from the queue's map.
fn delete_head() -> f64 {
    let mut heads: BTreeMap<u64, Arc<DelayedRefHead>> = (0..N)
        .map(|i| {
            (
                i << 20,
                Arc::new(DelayedRefHead::new(i << 20, 4096, true, 64)),
            )
        })
        .collect();
    let t = Instant::now();
    for i in 0..N {
        black_box(heads.remove(&(i << 20)));
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn pin_to(cpu: usize) {
    // SAFETY: a plain sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Two threads pass a byte back and forth through two pipes; each pass wakes the other
/// thread. On one CPU every pass is a context switch; on two it is a cross-CPU wake-up.
/// Returns ns per pass.
fn ping_pong(cpus: [usize; 2]) -> f64 {
    const ROUNDS: usize = 50_000;
    let mut a = [0i32; 2];
    let mut b = [0i32; 2];
    // SAFETY: plain pipe(2) calls on local arrays.
    unsafe {
        assert_eq!(libc::pipe(a.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(b.as_mut_ptr()), 0);
    }
    let (a_r, a_w, b_r, b_w) = (a[0], a[1], b[0], b[1]);
    let echo = std::thread::spawn(move || {
        pin_to(cpus[1]);
        let mut buf = [0u8; 1];
        for _ in 0..ROUNDS {
            // SAFETY: valid fds and a 1-byte buffer.
            unsafe {
                libc::read(a_r, buf.as_mut_ptr().cast(), 1);
                libc::write(b_w, buf.as_ptr().cast(), 1);
            }
        }
    });
    pin_to(cpus[0]);
    let mut buf = [0u8; 1];
    let t = Instant::now();
    for _ in 0..ROUNDS {
        // SAFETY: as above.
        unsafe {
            libc::write(a_w, buf.as_ptr().cast(), 1);
            libc::read(b_r, buf.as_mut_ptr().cast(), 1);
        }
    }
    let ns = t.elapsed().as_nanos() as f64;
    echo.join().unwrap();
    // SAFETY: closing our own fds.
    unsafe {
        for fd in [a_r, a_w, b_r, b_w] {
            libc::close(fd);
        }
    }
    ns / (2 * ROUNDS) as f64
}

fn median(f: impl Fn() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..5).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

fn main() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("cost            ns (median of 5; {cores} cores)");
    for (name, f) in [
        ("add_ref", add_ref as fn() -> f64),
        ("(whole add call)", add_ref_call),
        ("walk_node", walk_node),
        ("select_ref", select_ref),
        ("run_ref", run_ref),
        ("delete_head", delete_head),
    ] {
        println!("{name:<15} {:>8.1}", median(f));
    }
    println!(
        "{:<15} {:>8.1}   (pipe ping-pong, both threads on CPU 0)",
        "context_switch",
        median(|| ping_pong([0, 0]))
    );
    if cores > 1 {
        println!(
            "{:<15} {:>8.1}   (pipe ping-pong, CPU 0 <-> CPU 1)",
            "wakeup",
            median(|| ping_pong([0, 1]))
        );
    }
}
