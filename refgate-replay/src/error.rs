//! Errors: a [`ModelError`] is what the kernel would BUG/abort on; a [`ReplayError`] is why a
//! replay gave no report — a workload it cannot run, a model error (or an engine failure), or
//! an end state that breaks the §7.4 invariant.

use crate::refkey::BackrefKey;

/// What the kernel would BUG or abort the transaction on, met by the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Running a ref or an extent op found no extent item to change (§2.7).
    #[error("extent {bytenr}: no extent item to add a ref to / drop from / update")]
    ExtentMissing {
        /// The extent's `bytenr`.
        bytenr: u64,
    },
    /// A `must_insert_reserved` ADD (`alloc_reserved_*`, §2.7) found the item already there.
    #[error("extent {bytenr}: must_insert_reserved but the extent item already exists")]
    ExtentExists {
        /// The extent's `bytenr`.
        bytenr: u64,
    },
    /// A DROP of more than the backref or the item's `refs` holds (`__btrfs_free_extent`'s
    /// BUG on underflow, §2.7).
    #[error("extent {bytenr}: dropping {drop} of backref {key:?} which has {have}")]
    BackrefUnderflow {
        /// The extent's `bytenr`.
        bytenr: u64,
        /// The backref dropped from.
        key: BackrefKey,
        /// The backref's count before the drop.
        have: u64,
        /// The count to drop (the ref's `ref_mod`).
        drop: u64,
    },
    /// A tree ref run with `ref_mod` ≠ 1 (§2.7 BUG; §4.4 `-EUCLEAN`).
    #[error("extent {bytenr}: tree ref run with ref_mod {ref_mod} (must be 1, §2.7)")]
    TreeRefMod {
        /// The extent's `bytenr`.
        bytenr: u64,
        /// The ref's `ref_mod`.
        ref_mod: u32,
    },
    /// A DROP took the item's `refs` to 0 while backrefs were left.
    #[error("extent {bytenr}: refs reached 0 with backrefs left")]
    OrphanBackrefs {
        /// The extent's `bytenr`.
        bytenr: u64,
    },
    /// An add's `is_data` differs from its existing head's (`update_existing_head_ref`, §1.4).
    #[error("head {bytenr}: is_data differs between adds (§1.4 BUG)")]
    IsDataMismatch {
        /// The head's `bytenr`.
        bytenr: u64,
    },
    /// Any other BUG or broken model invariant (the §1.5 counters, a run_all with nothing
    /// runnable, a queue left after run-all, …), in words.
    #[error("{0}")]
    Bug(String),
}

/// Why a replay did not give a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The workload cannot be replayed as given; nothing ran.
    #[error("invalid workload: {0}")]
    BadWorkload(#[from] WorkloadError),
    /// The model hit what the kernel would BUG or abort on, or the engine failed (a task
    /// panicked, or no task could run again).
    #[error("model error ({policy}, {cpus} CPUs): {}", joined(errors))]
    Model {
        /// The policy replayed.
        policy: String,
        /// CPUs (virtual) or threads (real).
        cpus: usize,
        /// What stopped the run, in the order met.
        errors: Vec<RunFailure>,
    },
    /// The replay ran to the end and its extent tree breaks the §7.4 invariant.
    #[error(transparent)]
    Invariant(#[from] InvariantViolation),
}

fn joined(errors: &[RunFailure]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where in a task's life the model failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedIn {
    /// A handle, or the commit's non-exclusive part, of transaction N (0-based).
    Transaction(usize),
    /// The exclusive commit of transaction N (0-based).
    Commit(usize),
    /// A kernel worker (its [`crate::policy::WorkerKind`]'s name).
    Worker(&'static str),
}

impl std::fmt::Display for FailedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailedIn::Transaction(t) => write!(f, "transaction {t}"),
            FailedIn::Commit(t) => write!(f, "commit of transaction {t}"),
            FailedIn::Worker(name) => f.write_str(name),
        }
    }
}

/// One reason an engine stopped a replay (each entry of [`ReplayError::Model`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunFailure {
    /// The model met what the kernel would BUG or abort on.
    #[error("{at}: {error}")]
    Model {
        /// Where the task was.
        at: FailedIn,
        /// What the model met.
        error: ModelError,
    },
    /// A real-thread engine's worker thread panicked (a bug in refgate).
    #[error("worker panicked: {message}")]
    ThreadPanicked {
        /// The panic's message.
        message: String,
    },
    /// A virtual CPU's task panicked (a bug in refgate).
    #[error("task {task} panicked: {message}")]
    TaskPanicked {
        /// The task's index (workload tasks first, then the kernel's workers).
        task: usize,
        /// The panic's message.
        message: String,
    },
    /// Tasks that can never run again: a deadlock in the model's wait/wake protocol.
    #[error(
        "virtual engine: {tasks} task(s) can never run again (deadlock in the model); waiting: {waiting}"
    )]
    Deadlock {
        /// How many tasks never finished.
        tasks: usize,
        /// What each stuck task waits on, as the scheduler describes it.
        waiting: String,
    },
    /// A virtual task's coroutine stack could not be allocated (out of memory or mappings).
    #[error("cannot allocate a coroutine stack: {0}")]
    Stack(String),
    /// A real thread could not be started (the system's thread or memory limits).
    #[error("cannot start a thread: {0}")]
    Spawn(String),
    /// The live view handed to the engine has the wrong number of worker slots.
    #[error("live view has {slots} slots for {cpus} CPUs")]
    LiveSlots {
        /// Slots in the live view.
        slots: usize,
        /// CPUs (or threads) of the run.
        cpus: usize,
    },
}

impl RunFailure {
    /// The machine ran out of something (memory, mappings, threads): not a model bug, and
    /// lowering the replay's size (or raising the limit) is the remedy.
    pub fn is_resource(&self) -> bool {
        matches!(self, RunFailure::Stack(_) | RunFailure::Spawn(_))
    }
}

/// A workload (or the trace or file it comes from) that cannot be replayed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// A task's list of transactions is not the workload's length.
    #[error("task {task} has {found} transactions, expected {expected}")]
    TaskTransactions {
        /// The task's id.
        task: u32,
        /// Its transactions.
        found: usize,
        /// The workload's.
        expected: usize,
    },
    /// A backref the workload drops more often than it has it (a trace missing events, §7.4).
    #[error("extent {bytenr}: backref {key:?} nets to {net}")]
    NegativeNet {
        /// The extent.
        bytenr: u64,
        /// The backref.
        key: BackrefKey,
        /// Initial count plus adds minus drops.
        net: i64,
    },
    /// A trace without any `add_delayed_*` event.
    #[error("the trace has no add_delayed_* events: nothing was queued, nothing to replay")]
    NoAdds,
    /// A trace whose adds the model cannot replay (none in the chosen filesystem's terms).
    #[error("the trace has no delayed-ref adds the model can replay")]
    NoReplayableAdds,
    /// A workload file without operations.
    #[error("the workload has no operations")]
    NoOperations,
    /// A workload file whose tasks × transactions is past what the replay can hold.
    #[error(
        "{tasks} tasks × {transactions} transactions is more than a workload may have \
         ({max} task-transactions); split the file or give fewer transactions"
    )]
    TooBig {
        /// Tasks.
        tasks: usize,
        /// Transactions.
        transactions: usize,
        /// The largest product allowed.
        max: usize,
    },
    /// A workload file line that cannot be read.
    #[error("line {line}: {error}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: LineError,
    },
}

/// What is wrong with one line of a workload file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object of a known `op` (serde_json's message).
    #[error("{0}")]
    Json(String),
    /// A ref `kind` other than `tree` or `data`.
    #[error("kind `{0}`: expected `tree` or `data`")]
    Kind(String),
    /// An `action` other than add, drop or add_extent.
    #[error("action `{0}`: expected add, drop or add_extent")]
    Action(String),
    /// A `run` argument that is neither a number nor `"all"`.
    #[error("run arg `{0}`: a number or \"all\"")]
    RunArg(String),
    /// A number past what the format allows (`crate::workload_file::MAX_TRANSACTIONS`).
    #[error("`{field}` {value}: at most {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest it may be.
        max: u64,
    },
}

/// A bad option: an unknown cost or parameter name, or a value it cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// `--cost` without `=`.
    #[error("`--cost {given}`: expected NAME=NS")]
    CostSyntax {
        /// The argument as given.
        given: String,
    },
    /// `--cost` naming no cost.
    #[error("`--cost {given}`: unknown cost `{name}`; the costs are {known}")]
    UnknownCost {
        /// The argument as given.
        given: String,
        /// The name in it.
        name: String,
        /// The valid names, comma-separated.
        known: String,
    },
    /// `--cost` with a value that is not a whole number.
    #[error("`--cost {given}`: `{value}` is not a whole number of ns")]
    CostValue {
        /// The argument as given.
        given: String,
        /// The value in it.
        value: String,
    },
    /// `--cost NAME=0`.
    #[error("`--cost {given}`: a cost of 0 ns would hide all contention; give at least 1")]
    ZeroCost {
        /// The argument as given.
        given: String,
    },
    /// `--cost NAME=NS` above [`crate::cost::MAX_COST_NS`].
    #[error(
        "`--cost {given}`: more than 1 s (10^9 ns) for one step of the runner is not a cost \
         but a typo; give at most {max}"
    )]
    CostTooLarge {
        /// The argument as given.
        given: String,
        /// The largest cost.
        max: u64,
    },
    /// A parameter value past its range (`crate::params::Params::set`).
    #[error("parameter `{name}` = {value}: at most {max}")]
    ParameterRange {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Its largest value.
        max: u64,
    },
    /// A `params` line naming no parameter.
    #[error("unknown parameter `{name}`: {known}")]
    UnknownParameter {
        /// The name given.
        name: String,
        /// The valid names, comma-separated.
        known: &'static str,
    },
}

/// A replay whose end state disagrees with the input (or whose model hit a kernel BUG).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("invariant violated (policy {policy}, {threads} threads): {}", errors.join("; "))]
pub struct InvariantViolation {
    /// The policy replayed.
    pub policy: String,
    /// CPUs (virtual) or threads (real).
    pub threads: usize,
    /// Each disagreement found, one message each.
    pub errors: Vec<String>,
}
