//! The workload text format: JSON lines, one operation per line, for hand-written scenarios
//! and what-ifs (`refgate replay --workload FILE`) and for traces turned into workloads
//! (`refgate export TRACE --format workload`).
//!
//! ```text
//! # comments start with `#` or `//`; blank lines are skipped
//! {"op":"workload","transactions":3}                   # transactions, if some are empty
//! {"op":"params","gate_entries_threshold":5}            # scale the kernel's constants
//! {"op":"task","task":3}                                # declare a task (optional)
//! {"op":"extent","bytenr":1048576,"num_bytes":4096,"flags":0,"backrefs":[{"kind":"data","root":5,"owner":257,"offset":0,"count":1}]}
//! {"op":"add","task":0,"txn":0,"action":"add_extent","kind":"data","bytenr":2097152,"num_bytes":4096,"root":5,"owner":257,"offset":0}
//! {"op":"add","task":0,"txn":0,"action":"add","kind":"tree","bytenr":3145728,"num_bytes":16384,"root":5,"level":0,"for_cow":true,"extent_op":{"flags":2,"key":77}}
//! {"op":"extent_op","task":0,"txn":0,"bytenr":3145728,"num_bytes":16384,"is_data":false,"flags":2}
//! {"op":"lookup","task":0,"txn":0,"bytenr":3145728}
//! {"op":"should_end","task":0,"txn":0}
//! {"op":"think","task":0,"txn":0,"ns":100000}
//! {"op":"run","task":0,"txn":0,"arg":"all"}             # btrfs_run_delayed_refs(count | min_bytes)
//! {"op":"end_handle","task":0,"txn":0}                  # the task's next op opens a new handle
//! {"op":"commit","task":0,"txn":0}                      # the task commits transaction 0
//! {"op":"expect", ...}                                  # scenario tests' expectations; ignored here
//! ```
//!
//! A task's operations of one transaction run in file order; `end_handle` closes a handle
//! (an unclosed one ends with the transaction). `kind` is `tree` or `data`; a non-zero
//! `parent` makes the backref SHARED_* (§1.2). `action` is `add`, `drop` or `add_extent`.
//! `for_cow` may be given per ref; where it is not, the `--seq-rule` decides (§1.6) — seqs
//! themselves are never stored: the replay assigns them as the policy's era does. `run`'s
//! `arg` is the era's argument: 3.x `count` (`"all"` = −1, `0` = run_most, N nodes), 6.x
//! `min_bytes` (`"all"` = U64_MAX, `0` = the heads that exist now, N bytes).

use crate::error::{LineError, WorkloadError};
use crate::extent_tree::ExtentItem;
use crate::head::ExtentOp;
use crate::refkey::{AddAction, BackrefKey, RefOwner, RefSpec};
use crate::trace_workload::SeqRule;
use crate::workload::{Handle, Op, Task, TaskTransaction, Workload};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `run`'s argument: a number, or `"all"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RunArg {
    /// A number: 3.x `count` or 6.x `min_bytes`.
    N(u64),
    /// A word: only `"all"` (`u64::MAX`: 3.x −1, 6.x U64_MAX) parses.
    Word(String),
}

/// One backref of an initial extent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackrefLine {
    /// `tree` or `data`.
    pub kind: String,
    /// The root (the key of TREE_BLOCK_REF / EXTENT_DATA_REF backrefs; unused with `parent`).
    #[serde(default)]
    pub root: u64,
    /// Non-zero: a SHARED_* backref keyed by this parent block (§1.2).
    #[serde(default)]
    pub parent: u64,
    /// Data: the inode number (`objectid`).
    #[serde(default)]
    pub owner: u64,
    /// Data: `offset` (file offset − extent offset, §1.2).
    #[serde(default)]
    pub offset: u64,
    /// The backref's count; the item's `refs` is the sum of its backrefs' counts.
    pub count: u64,
}

/// An `add` line's extent op (`btrfs_delayed_extent_op`, §1.2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExtentOpLine {
    /// Flags to OR into the extent item (`flags_to_set`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    /// The key to set on the extent item (`update_key`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
}

/// One line of the format.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Line {
    /// The number of transactions, when some have no operation at all (optional).
    Workload {
        /// At least this many transactions (more if other lines use more).
        transactions: usize,
    },
    /// Parameter overrides by name ([`crate::params::Params::set`]).
    Params(BTreeMap<String, u64>),
    /// Declares a task (in this order), also one that queues nothing: it still takes part
    /// in every transaction's barrier.
    Task {
        /// The task's id.
        task: u32,
    },
    /// An extent item present before the first transaction (the initial extent tree).
    Extent {
        /// The extent's start (bytes).
        bytenr: u64,
        /// The extent's length (bytes).
        num_bytes: u64,
        /// The item's `BTRFS_EXTENT_FLAG_*` flags.
        #[serde(default)]
        flags: u64,
        /// The tree block's key, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<u64>,
        /// The item's backrefs; its `refs` is the sum of their counts.
        backrefs: Vec<BackrefLine>,
    },
    /// `btrfs_add_delayed_tree_ref` / `_data_ref` ([`Op::AddRef`]).
    Add {
        /// The task queueing the ref.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
        /// `add`, `drop` or `add_extent`.
        action: String,
        /// `tree` or `data`.
        kind: String,
        /// The extent's start (bytes).
        bytenr: u64,
        /// The extent's length (bytes).
        num_bytes: u64,
        /// The ref's root (`ref_root`).
        #[serde(default)]
        root: u64,
        /// Non-zero: a SHARED_* backref keyed by this parent block (§1.2).
        #[serde(default)]
        parent: u64,
        /// Data: the inode number (`objectid`).
        #[serde(default)]
        owner: u64,
        /// Data: `offset` (file offset − extent offset, §1.2).
        #[serde(default)]
        offset: u64,
        /// Tree: the block's level (payload, never key).
        #[serde(default)]
        level: u8,
        /// `for_cow` (§1.6); absent: the `--seq-rule` decides.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_cow: Option<bool>,
        /// An extent op queued with the ref, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extent_op: Option<ExtentOpLine>,
    },
    /// `btrfs_add_delayed_extent_op` ([`Op::AddExtentOp`]).
    ExtentOp {
        /// The task queueing the op.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
        /// The extent's start (bytes).
        bytenr: u64,
        /// The extent's length (bytes).
        num_bytes: u64,
        /// Whether the extent is a data extent.
        is_data: bool,
        /// Flags to OR into the extent item (`flags_to_set`), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<u64>,
        /// The key to set on the extent item (`update_key`), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<u64>,
    },
    /// `btrfs_lookup_extent_info` ([`Op::LookupExtentInfo`], §2.9).
    Lookup {
        /// The task looking up.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
        /// The start (`bytenr`, bytes) of the extent looked up.
        bytenr: u64,
    },
    /// A `btrfs_should_end_transaction` poll ([`Op::ShouldEnd`]).
    ShouldEnd {
        /// The task polling.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
    },
    /// Time outside delayed-ref code ([`Op::Think`]).
    Think {
        /// The task thinking.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
        /// How long (ns).
        ns: u64,
    },
    /// An explicit `btrfs_run_delayed_refs` ([`Op::RunDelayedRefs`]).
    Run {
        /// The task running.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
        /// `count` (3.x) or `min_bytes` (6.x); see the module docs.
        arg: RunArg,
    },
    /// Ends the task's current handle: its next op in the transaction opens a new one.
    EndHandle {
        /// The task.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
    },
    /// The task commits the transaction (`btrfs_commit_transaction`) after its handles.
    Commit {
        /// The committing task.
        task: u32,
        /// The transaction (0-based).
        txn: usize,
    },
    /// Scenario expectations (read by the scenario tests, ignored by the replay).
    Expect(Value),
}

/// A parsed file: the workload and the parameter overrides of its `params` lines.
#[derive(Debug, Default)]
pub struct WorkloadFile {
    /// The workload, validated.
    pub workload: Workload,
    /// The `params` lines' overrides, by field name (later lines win).
    pub params: BTreeMap<String, u64>,
    /// The `expect` lines, in file order (for the scenario tests).
    pub expectations: Vec<Value>,
}

fn backref(
    kind: &str,
    parent: u64,
    root: u64,
    owner: u64,
    offset: u64,
) -> Result<BackrefKey, LineError> {
    match kind {
        "tree" => Ok(BackrefKey::tree(parent, root)),
        "data" => Ok(BackrefKey::data(parent, root, owner, offset)),
        k => Err(LineError::Kind(k.to_string())),
    }
}

fn action(a: &str) -> Result<AddAction, LineError> {
    match a {
        "add" => Ok(AddAction::Add),
        "drop" => Ok(AddAction::Drop),
        "add_extent" => Ok(AddAction::AddExtent),
        a => Err(LineError::Action(a.to_string())),
    }
}

/// `run`'s argument as the op's: `"all"` is `u64::MAX` (3.x count −1, 6.x U64_MAX).
fn run_arg(arg: RunArg) -> Result<u64, LineError> {
    match arg {
        RunArg::N(n) => Ok(n),
        RunArg::Word(w) if w == "all" => Ok(u64::MAX),
        RunArg::Word(w) => Err(LineError::RunArg(w)),
    }
}

/// An `extent` line's item: its backrefs' counts summed into `refs`.
fn initial_extent(
    num_bytes: u64,
    flags: u64,
    key: Option<u64>,
    backrefs: Vec<BackrefLine>,
) -> Result<ExtentItem, LineError> {
    let mut it = ExtentItem {
        num_bytes,
        flags,
        key,
        ..Default::default()
    };
    for r in backrefs {
        let k = backref(&r.kind, r.parent, r.root, r.owner, r.offset)?;
        *it.backrefs.entry(k).or_insert(0) += r.count;
        it.refs += r.count;
    }
    Ok(it)
}

/// An op line's (task, txn) and op; `rule` decides `for_cow` where an `add` line does not
/// (§1.6). Only for the lines that queue an op.
fn queued_op(line: Line, rule: SeqRule) -> Result<(u32, usize, Op), LineError> {
    Ok(match line {
        Line::Add {
            task,
            txn,
            action: a,
            kind,
            bytenr,
            num_bytes,
            root,
            parent,
            owner,
            offset,
            level,
            for_cow,
            extent_op,
        } => {
            let owner = match kind.as_str() {
                "tree" => RefOwner::Tree { level },
                "data" => RefOwner::Data {
                    objectid: owner,
                    offset,
                },
                k => return Err(LineError::Kind(k.to_string())),
            };
            let r = RefSpec {
                bytenr,
                num_bytes,
                action: action(&a)?,
                parent,
                ref_root: root,
                owner,
                for_cow: false,
            };
            let r = match for_cow {
                Some(c) => RefSpec { for_cow: c, ..r },
                None => rule.classify(r, 0),
            };
            let extent_op = extent_op.map(|o| ExtentOp {
                flags: o.flags,
                key: o.key,
            });
            (task, txn, Op::AddRef { r, extent_op })
        }
        Line::ExtentOp {
            task,
            txn,
            bytenr,
            num_bytes,
            is_data,
            flags,
            key,
        } => {
            let op = ExtentOp { flags, key };
            let extent_op = Op::AddExtentOp {
                bytenr,
                num_bytes,
                is_data,
                op,
            };
            (task, txn, extent_op)
        }
        Line::Lookup { task, txn, bytenr } => (task, txn, Op::LookupExtentInfo { bytenr }),
        Line::ShouldEnd { task, txn } => (task, txn, Op::ShouldEnd),
        Line::Think { task, txn, ns } => (task, txn, Op::Think { ns }),
        Line::Run { task, txn, arg } => (task, txn, Op::RunDelayedRefs { arg: run_arg(arg)? }),
        _ => unreachable!("not an op line"),
    })
}

/// Builds tasks, transactions and handles from the lines' (task, txn) in file order, and
/// collects the file-level lines (params, extents, expectations).
#[derive(Default)]
struct Builder {
    order: Vec<u32>,
    tasks: BTreeMap<u32, Vec<(TaskTransaction, bool)>>,
    /// The `extent` lines: the initial extent tree.
    initial: Vec<(u64, ExtentItem)>,
    /// The most transactions a `workload` line declared.
    declared: usize,
    params: BTreeMap<String, u64>,
    expectations: Vec<Value>,
}

/// The most transactions a workload file may have (`txn` below it): a day of 30 s commits is
/// 2,880; a number past this is a typo, and the replay would allocate for every one.
pub const MAX_TRANSACTIONS: usize = 1_000_000;
/// The most tasks × transactions (each task is padded to every transaction): about 0.3 GB.
pub const MAX_TASK_TRANSACTIONS: usize = 10_000_000;

/// `txn` or `transactions` within [`MAX_TRANSACTIONS`].
fn check_transactions(field: &'static str, n: usize) -> Result<(), LineError> {
    match n {
        n if n <= MAX_TRANSACTIONS => Ok(()),
        n => Err(LineError::TooLarge {
            field,
            value: n as u64,
            max: MAX_TRANSACTIONS as u64,
        }),
    }
}

/// A line's `txn` (0-based) within [`MAX_TRANSACTIONS`].
fn check_txn(txn: usize) -> Result<(), LineError> {
    match txn {
        t if t < MAX_TRANSACTIONS => Ok(()),
        t => Err(LineError::TooLarge {
            field: "txn",
            value: t as u64,
            max: MAX_TRANSACTIONS as u64 - 1,
        }),
    }
}

impl Builder {
    /// The task's transaction `txn` and whether its last handle is still open.
    fn slot(&mut self, task: u32, txn: usize) -> &mut (TaskTransaction, bool) {
        if !self.tasks.contains_key(&task) {
            self.order.push(task);
        }
        let t = self.tasks.entry(task).or_default();
        if t.len() <= txn {
            t.resize_with(txn + 1, Default::default);
        }
        &mut t[txn]
    }
    fn push(&mut self, task: u32, txn: usize, op: Op) {
        let (tt, open) = self.slot(task, txn);
        if !*open {
            tt.handles.push(Handle::default());
            *open = true;
        }
        tt.handles.last_mut().expect("opened").ops.push(op);
    }
    /// Takes in one parsed line.
    fn line(&mut self, line: Line, rule: SeqRule) -> Result<(), LineError> {
        match line {
            Line::Params(p) => self.params.extend(p),
            Line::Workload { transactions } => {
                check_transactions("transactions", transactions)?;
                self.declared = self.declared.max(transactions);
            }
            Line::Task { task } => {
                self.slot(task, 0);
            }
            Line::Expect(v) => self.expectations.push(v),
            Line::Extent {
                bytenr,
                num_bytes,
                flags,
                key,
                backrefs,
            } => {
                let it = initial_extent(num_bytes, flags, key, backrefs)?;
                self.initial.push((bytenr, it));
            }
            Line::EndHandle { task, txn } => {
                check_txn(txn)?;
                self.slot(task, txn).1 = false;
            }
            Line::Commit { task, txn } => {
                check_txn(txn)?;
                self.slot(task, txn).0.commit = true;
            }
            op @ (Line::Add { .. }
            | Line::ExtentOp { .. }
            | Line::Lookup { .. }
            | Line::ShouldEnd { .. }
            | Line::Think { .. }
            | Line::Run { .. }) => {
                let (task, txn, op) = queued_op(op, rule)?;
                check_txn(txn)?;
                self.push(task, txn, op);
            }
        }
        Ok(())
    }
    /// The workload: every task padded to the most transactions any line used or declared.
    fn workload(self) -> Workload {
        let transactions = self
            .tasks
            .values()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(self.declared);
        let mut tasks = self.tasks;
        Workload {
            tasks: self
                .order
                .iter()
                .map(|id| {
                    let mut tt: Vec<TaskTransaction> = tasks
                        .remove(id)
                        .unwrap()
                        .into_iter()
                        .map(|(t, _)| t)
                        .collect();
                    tt.resize_with(transactions, Default::default);
                    Task {
                        id: *id,
                        transactions: tt,
                    }
                })
                .collect(),
            initial: self.initial,
            transactions,
            ..Workload::default()
        }
    }
    /// The parsed file, its workload validated.
    fn finish(mut self) -> Result<WorkloadFile, WorkloadError> {
        let params = std::mem::take(&mut self.params);
        let expectations = std::mem::take(&mut self.expectations);
        // Each task is padded to every transaction: bound the product before allocating it.
        let transactions = self.tasks.values().map(Vec::len).max().unwrap_or(0);
        let transactions = transactions.max(self.declared);
        if self.tasks.len().saturating_mul(transactions) > MAX_TASK_TRANSACTIONS {
            return Err(WorkloadError::TooBig {
                tasks: self.tasks.len(),
                transactions,
                max: MAX_TASK_TRANSACTIONS,
            });
        }
        let w = self.workload();
        if w.transactions == 0 {
            return Err(WorkloadError::NoOperations);
        }
        w.validate()?;
        Ok(WorkloadFile {
            workload: w,
            params,
            expectations,
        })
    }
}

/// Whether a line is blank or a comment (`#`, `//`).
fn is_blank_or_comment(l: &str) -> bool {
    l.is_empty() || l.starts_with('#') || l.starts_with("//")
}

/// Parses the format; `rule` decides `for_cow` where a line does not (§1.6).
pub fn parse(text: &str, rule: SeqRule) -> Result<WorkloadFile, WorkloadError> {
    let mut b = Builder::default();
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if is_blank_or_comment(l) {
            continue;
        }
        let at = |error| WorkloadError::Line { line: n + 1, error };
        let line: Line = serde_json::from_str(l).map_err(|e| at(LineError::Json(e.to_string())))?;
        b.line(line, rule).map_err(at)?;
    }
    b.finish()
}

/// An initial backref's line fields: (kind, root, parent, owner, offset).
fn kind_fields(k: &BackrefKey) -> (&'static str, u64, u64, u64, u64) {
    use refgate_common::event::{SHARED_BLOCK_REF_KEY, SHARED_DATA_REF_KEY, TREE_BLOCK_REF_KEY};
    match k.ref_type {
        TREE_BLOCK_REF_KEY => ("tree", k.a, 0, 0, 0),
        SHARED_BLOCK_REF_KEY => ("tree", 0, k.a, 0, 0),
        SHARED_DATA_REF_KEY => ("data", 0, k.a, 0, 0),
        _ => ("data", k.a, 0, k.b, k.c),
    }
}

/// The workload as lines of the format (one copy; `replicate` is a replay option).
pub fn lines(w: &Workload) -> Vec<Line> {
    let mut out = vec![Line::Workload {
        transactions: w.transactions,
    }];
    for (bytenr, it) in &w.initial {
        out.push(Line::Extent {
            bytenr: *bytenr,
            num_bytes: it.num_bytes,
            flags: it.flags,
            key: it.key,
            backrefs: it
                .backrefs
                .iter()
                .map(|(k, &count)| {
                    let (kind, root, parent, owner, offset) = kind_fields(k);
                    BackrefLine {
                        kind: kind.into(),
                        root,
                        parent,
                        owner,
                        offset,
                        count,
                    }
                })
                .collect(),
        });
    }
    for t in &w.tasks {
        out.push(Line::Task { task: t.id });
    }
    for t in &w.tasks {
        let task = t.id;
        for (txn, tt) in t.transactions.iter().enumerate() {
            for h in &tt.handles {
                for op in &h.ops {
                    out.push(op_line(task, txn, op));
                }
                out.push(Line::EndHandle { task, txn });
            }
            if tt.commit {
                out.push(Line::Commit { task, txn });
            }
        }
    }
    out
}

/// An `add` line: the ref with its owner's fields spelled out, `for_cow` as decided.
fn add_line(task: u32, txn: usize, r: &RefSpec, extent_op: Option<ExtentOp>) -> Line {
    let (kind, owner, offset, level) = match r.owner {
        RefOwner::Tree { level } => ("tree", 0, 0, level),
        RefOwner::Data { objectid, offset } => ("data", objectid, offset, 0),
    };
    Line::Add {
        task,
        txn,
        action: match r.action {
            AddAction::Add => "add",
            AddAction::Drop => "drop",
            AddAction::AddExtent => "add_extent",
        }
        .into(),
        kind: kind.into(),
        bytenr: r.bytenr,
        num_bytes: r.num_bytes,
        root: r.ref_root,
        parent: r.parent,
        owner,
        offset,
        level,
        for_cow: Some(r.for_cow),
        extent_op: extent_op.map(|o| ExtentOpLine {
            flags: o.flags,
            key: o.key,
        }),
    }
}

fn op_line(task: u32, txn: usize, op: &Op) -> Line {
    match op {
        Op::AddRef { r, extent_op } => add_line(task, txn, r, *extent_op),
        Op::AddExtentOp {
            bytenr,
            num_bytes,
            is_data,
            op,
        } => Line::ExtentOp {
            task,
            txn,
            bytenr: *bytenr,
            num_bytes: *num_bytes,
            is_data: *is_data,
            flags: op.flags,
            key: op.key,
        },
        Op::LookupExtentInfo { bytenr } => Line::Lookup {
            task,
            txn,
            bytenr: *bytenr,
        },
        Op::ShouldEnd => Line::ShouldEnd { task, txn },
        Op::Think { ns } => Line::Think { task, txn, ns: *ns },
        Op::RunDelayedRefs { arg } => Line::Run {
            task,
            txn,
            arg: if *arg == u64::MAX {
                RunArg::Word("all".into())
            } else {
                RunArg::N(*arg)
            },
        },
    }
}

/// The workload as text in the format.
pub fn to_text(w: &Workload) -> String {
    let mut s =
        String::from("# refgate workload (JSON lines; see refgate-replay/src/workload_file.rs)\n");
    for l in lines(w) {
        s.push_str(&serde_json::to_string(&l).expect("serializable"));
        s.push('\n');
    }
    s
}
