//! `refgate replay TRACE --validate`: what the recorded kernel did against what the model
//! does with the same workload, transaction by transaction — heads run, tree and data refs
//! run, refs merged away (queued but never run), and who ran them (the committer, kernel
//! workers, other tasks). Heads and refs run are largely fixed by the workload; the who-ran
//! split and the merged-away counts are where a model shows itself.

use crate::metrics::CallerKind;
pub use crate::metrics::TxnCounts;
use crate::workload::{Op, Workload};
use refgate_common::event::{EventKind, FsId, Record};
use serde::Serialize;
use std::collections::HashMap;

/// One transaction's figures (recorded or replayed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TxnFigures {
    /// Heads run (`run_delayed_ref_head` events; replayed: heads deleted by a runner).
    pub heads_run: u64,
    /// Tree ref nodes run (`run_delayed_tree_ref`).
    pub tree_refs_run: u64,
    /// Data ref nodes run (`run_delayed_data_ref`).
    pub data_refs_run: u64,
    /// Refs queued by the add API and never run (merged or cancelled).
    pub merged_away: u64,
    /// Refs run by the committer: recorded, the task that fired the transaction's commit
    /// event; replayed, `btrfs_commit_transaction`'s calls.
    pub run_by_committer: u64,
    /// Refs run by kernel workers: recorded, tasks named `kworker*`; replayed, the reclaim
    /// workers (§4.7).
    pub run_by_kernel_workers: u64,
    /// Refs run by any other task (handle ends, explicit runs, …).
    pub run_by_other_tasks: u64,
}

impl TxnFigures {
    fn values(&self) -> [u64; 7] {
        [
            self.heads_run,
            self.tree_refs_run,
            self.data_refs_run,
            self.merged_away,
            self.run_by_committer,
            self.run_by_kernel_workers,
            self.run_by_other_tasks,
        ]
    }
    fn add(&mut self, o: &TxnFigures) {
        self.heads_run += o.heads_run;
        self.tree_refs_run += o.tree_refs_run;
        self.data_refs_run += o.data_refs_run;
        self.merged_away += o.merged_away;
        self.run_by_committer += o.run_by_committer;
        self.run_by_kernel_workers += o.run_by_kernel_workers;
        self.run_by_other_tasks += o.run_by_other_tasks;
    }
    fn refs(&self) -> u64 {
        self.tree_refs_run + self.data_refs_run
    }
}

/// A row of the comparison: one transaction, or several small ones pooled.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// 1-based transactions in the row.
    pub transactions: Vec<usize>,
    /// The recorded kernel's figures, summed over the row's transactions.
    pub recorded: TxnFigures,
    /// The replay's figures, summed over the row's transactions.
    pub replayed: TxnFigures,
}

/// The comparison (`validation` in `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Validation {
    /// One row per transaction with at least [`POOL_BELOW`] recorded refs run, in order, then
    /// one row pooling the others (if any).
    pub rows: Vec<Row>,
    /// Σ |replayed − recorded| ÷ Σ recorded over every quantity of every row.
    pub overall_relative_error: f64,
}

/// Transactions with fewer recorded refs run than this are pooled into one row.
pub const POOL_BELOW: u64 = 100;

/// The recorded kernel's figures per transaction of filesystem `fs` (transactions split by
/// `btrfs_transaction_commit` as the workload conversion splits them). The committer is the
/// task that fired the commit event; kernel workers are tasks whose name starts `kworker`.
pub fn recorded(records: &[Record], fs: FsId) -> Vec<TxnFigures> {
    let mut comm: HashMap<u32, &str> = HashMap::new();
    let mut events: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            Record::Task(t) => {
                comm.entry(t.tid).or_insert(&t.comm);
                None
            }
            _ => None,
        })
        .collect();
    events.sort_by_key(|e| e.ts_ns);
    let commits: Vec<(u64, u32)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TransactionCommit { fs: f, .. } if f == fs => Some((e.ts_ns, e.tid)),
            _ => None,
        })
        .collect();
    let mut out = vec![TxnFigures::default(); commits.len() + 1];
    let mut adds = vec![0u64; commits.len() + 1];
    for e in events {
        let t = commits.partition_point(|&(c, _)| c < e.ts_ns);
        let f = &mut out[t];
        let who = |f: &mut TxnFigures| {
            if commits.get(t).is_some_and(|&(_, tid)| tid == e.tid) {
                f.run_by_committer += 1;
            } else if comm.get(&e.tid).is_some_and(|c| c.starts_with("kworker")) {
                f.run_by_kernel_workers += 1;
            } else {
                f.run_by_other_tasks += 1;
            }
        };
        match &e.kind {
            EventKind::RunTreeRef(r) if r.fs == fs => {
                f.tree_refs_run += 1;
                who(f);
            }
            EventKind::RunDataRef(r) if r.fs == fs => {
                f.data_refs_run += 1;
                who(f);
            }
            EventKind::RunRefHead(h) if h.fs == fs => f.heads_run += 1,
            EventKind::AddTreeRef(r) if r.fs == fs => adds[t] += 1,
            EventKind::AddDataRef(r) if r.fs == fs => adds[t] += 1,
            _ => {}
        }
    }
    for (f, a) in out.iter_mut().zip(adds) {
        f.merged_away = a.saturating_sub(f.refs());
    }
    out
}

/// The replay's figures per transaction, from its counts and its workload's adds.
pub fn replayed(w: &Workload, counts: &[TxnCounts]) -> Vec<TxnFigures> {
    let mut adds = vec![0u64; w.transactions];
    for i in 0..w.task_count() {
        let t = w.task(i).task;
        for (n, tt) in t.transactions.iter().enumerate() {
            adds[n] += tt
                .handles
                .iter()
                .flat_map(|h| &h.ops)
                .filter(|o| matches!(o, Op::AddRef { .. }))
                .count() as u64;
        }
    }
    (0..w.transactions)
        .map(|t| {
            let c = counts.get(t).cloned().unwrap_or_default();
            let by = &c.refs_by_caller;
            let refs = c.tree_refs_run + c.data_refs_run;
            TxnFigures {
                heads_run: c.heads_run,
                tree_refs_run: c.tree_refs_run,
                data_refs_run: c.data_refs_run,
                merged_away: adds[t].saturating_sub(refs),
                run_by_committer: by.of_kind(CallerKind::Commit),
                run_by_kernel_workers: by.of_kind(CallerKind::KernelWorker),
                run_by_other_tasks: by.of_kind(CallerKind::Task),
            }
        })
        .collect()
}

/// Rows of the comparison, pooling transactions with under [`POOL_BELOW`] recorded refs.
pub fn compare(recorded: &[TxnFigures], replayed: &[TxnFigures]) -> Validation {
    let n = recorded.len().max(replayed.len());
    let get = |v: &[TxnFigures], i: usize| v.get(i).copied().unwrap_or_default();
    let mut rows = Vec::new();
    let mut pool = Row {
        transactions: Vec::new(),
        recorded: TxnFigures::default(),
        replayed: TxnFigures::default(),
    };
    for i in 0..n {
        let (rec, rep) = (get(recorded, i), get(replayed, i));
        if rec.refs() < POOL_BELOW {
            pool.transactions.push(i + 1);
            pool.recorded.add(&rec);
            pool.replayed.add(&rep);
        } else {
            rows.push(Row {
                transactions: vec![i + 1],
                recorded: rec,
                replayed: rep,
            });
        }
    }
    if !pool.transactions.is_empty() {
        rows.push(pool);
    }
    let (mut diff, mut total) = (0u64, 0u64);
    for r in &rows {
        for (a, b) in r.recorded.values().into_iter().zip(r.replayed.values()) {
            diff += a.abs_diff(b);
            total += a;
        }
    }
    Validation {
        rows,
        overall_relative_error: diff as f64 / total.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_transactions_pool_and_the_error_sums_every_quantity() {
        let f = |refs: u64, committer: u64| TxnFigures {
            heads_run: refs,
            tree_refs_run: refs,
            run_by_committer: committer,
            run_by_other_tasks: refs - committer,
            ..Default::default()
        };
        let rec = [f(200, 200), f(10, 0), f(20, 20)];
        let rep = [f(200, 100), f(10, 10), f(20, 20)];
        let v = compare(&rec, &rep);
        assert_eq!(v.rows.len(), 2);
        assert_eq!(v.rows[1].transactions, vec![2, 3]);
        // Row 1: |100−200| + |100−0| = 200 of 200+200+200 recorded; row 2 (pooled): committer
        // |30−20| + others |0−10| = 20 of 30+30+20+10 recorded.
        assert!((v.overall_relative_error - 220.0 / 690.0).abs() < 1e-12);
    }
}
