//! One name per thing. Every output — the text reports, the JSON, the exports, the dashboards,
//! the plots — names lock roles, probe kinds, callers, task and CPU states and counters from
//! this table, so a lock is `delayed_refs_lock` in every JSON key, value and Parquet column
//! and `delayed_refs->lock` in every text, dashboard and plot, and nothing else anywhere.
//!
//! Each [`Name`] has an `id` (snake_case: JSON keys and enum values, Parquet and CSV columns and
//! values) and a `label` (for people: the kernel's own spelling where it has one).

/// A thing's two spellings (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    /// snake_case, for machines: JSON, Parquet, CSV.
    pub id: &'static str,
    /// For people: text, dashboards, plots.
    pub label: &'static str,
}

const fn n(id: &'static str, label: &'static str) -> Name {
    Name { id, label }
}

/// Locks, by the role they play in delayed-ref code (the recorder classifies a contended lock
/// by its kernel stack; the replay models each).
pub mod lock {
    use super::{Name, n};
    /// `delayed_refs->lock`, the spinlock of the delayed-ref root.
    pub const DELAYED_REFS_LOCK: Name = n("delayed_refs_lock", "delayed_refs->lock");
    /// A head's spinlock (`head->lock`).
    pub const HEAD_LOCK: Name = n("head_lock", "head->lock");
    /// A head's mutex (`head->mutex`).
    pub const HEAD_MUTEX: Name = n("head_mutex", "head->mutex");
    /// The extent tree's locks (extent-buffer locks taken while running delayed refs).
    pub const EXTENT_TREE: Name = n("extent_tree", "extent tree");
    /// Any other lock contended with btrfs code on the stack.
    pub const OTHER_BTRFS: Name = n("other_btrfs", "other btrfs");
    /// Every lock name, in the order outputs list them.
    pub const ALL: [Name; 5] = [
        DELAYED_REFS_LOCK,
        HEAD_LOCK,
        HEAD_MUTEX,
        EXTENT_TREE,
        OTHER_BTRFS,
    ];
}

/// How a probe is attached.
pub mod probe_kind {
    use super::{Name, n};
    pub const TRACEPOINT: Name = n("tracepoint", "tracepoint");
    pub const KPROBE: Name = n("kprobe", "kprobe");
    pub const KRETPROBE: Name = n("kretprobe", "kretprobe");
    pub const FENTRY: Name = n("fentry", "fentry");
    pub const FEXIT: Name = n("fexit", "fexit");
    pub const RAW_TRACEPOINT: Name = n("raw_tracepoint", "raw tracepoint");
    pub const ALL: [Name; 6] = [TRACEPOINT, KPROBE, KRETPROBE, FENTRY, FEXIT, RAW_TRACEPOINT];
}

/// Who called `btrfs_run_delayed_refs` (the replay's built-in callers; a policy may name more).
pub mod caller {
    use super::{Name, n};
    /// `btrfs_commit_transaction`.
    pub const COMMIT: Name = n("commit", "commit");
    /// The 6.x async metadata reclaim worker.
    pub const ASYNC_RECLAIM: Name = n("async_reclaim", "async reclaim");
    /// The 6.x preemptive metadata reclaim worker.
    pub const PREEMPTIVE_RECLAIM: Name = n("preemptive_reclaim", "preemptive reclaim");
    /// `__btrfs_end_transaction`.
    pub const HANDLE_END: Name = n("handle_end", "handle end");
    /// Anything else (`btrfs_should_end_transaction`, explicit runs).
    pub const OTHER: Name = n("other", "other");
    /// In the order the JSON lists them.
    pub const ALL: [Name; 5] = [COMMIT, ASYNC_RECLAIM, PREEMPTIVE_RECLAIM, HANDLE_END, OTHER];
}

/// What a replayed task is doing (the dashboards' task tables, the timeline's sleep reasons).
pub mod task_state {
    use super::{Name, n};
    pub const IDLE: Name = n("idle", "idle");
    pub const ADDING: Name = n("adding", "adding refs");
    pub const RUNNING_REFS: Name = n("running_refs", "running refs");
    pub const SPINNING: Name = n("spinning", "spinning");
    pub const SLEEPING_ON_GATE: Name = n("sleeping_on_gate", "sleeping on gate");
    pub const WAITING_ON_HEAD: Name = n("waiting_on_head", "waiting on head");
    pub const WAITING_EXTENT_TREE: Name = n("waiting_extent_tree", "waiting extent tree");
    pub const AT_BARRIER: Name = n("at_barrier", "at barrier");
    pub const COMMITTING: Name = n("committing", "committing");
    pub const DONE: Name = n("done", "done");
    pub const PAUSED: Name = n("paused", "paused");
    pub const ALL: [Name; 11] = [
        IDLE,
        ADDING,
        RUNNING_REFS,
        SPINNING,
        SLEEPING_ON_GATE,
        WAITING_ON_HEAD,
        WAITING_EXTENT_TREE,
        AT_BARRIER,
        COMMITTING,
        DONE,
        PAUSED,
    ];
}

/// Where a virtual CPU's time goes (the report's per-CPU split, the dashboard's CPU bars, the
/// timeline's slices).
pub mod cpu_state {
    use super::{Name, n};
    pub const WORK: Name = n("work", "work");
    pub const SPINNING: Name = n("spinning", "spinning");
    pub const SWITCHING: Name = n("switching", "switching");
    pub const SLEEPING: Name = n("sleeping", "sleeping");
    pub const IDLE: Name = n("idle", "idle");
    pub const ALL: [Name; 5] = [WORK, SPINNING, SWITCHING, SLEEPING, IDLE];
}

/// Counters over time (Chrome trace `C` events of the export and of the replay's timeline).
pub mod counter {
    use super::{Name, n};
    /// The delayed-ref queue's depth: the counter's name.
    pub const QUEUE_DEPTH: Name = n("queue_depth", "queue depth");
    /// Heads queued (the kernel's `delayed_refs->num_heads`): what a recording can count.
    pub const NUM_HEADS: Name = n("num_heads", "heads queued");
    /// Ref entries queued (the kernel's `delayed_refs->num_entries`): what the model counts.
    pub const NUM_ENTRIES: Name = n("num_entries", "entries queued");
    pub const ALL: [Name; 3] = [QUEUE_DEPTH, NUM_HEADS, NUM_ENTRIES];
}

/// Delayed-ref actions (`BTRFS_ADD_DELAYED_REF` … `BTRFS_UPDATE_DELAYED_HEAD`), by the kernel's
/// code; 0 is what `run_delayed_ref_head` reports. The exports give the code and this id.
pub mod action {
    use super::{Name, n};
    pub const NONE: Name = n("none", "none (a head's run)");
    pub const ADD_DELAYED_REF: Name = n("add_delayed_ref", "BTRFS_ADD_DELAYED_REF");
    pub const DROP_DELAYED_REF: Name = n("drop_delayed_ref", "BTRFS_DROP_DELAYED_REF");
    pub const ADD_DELAYED_EXTENT: Name = n("add_delayed_extent", "BTRFS_ADD_DELAYED_EXTENT");
    pub const UPDATE_DELAYED_HEAD: Name = n("update_delayed_head", "BTRFS_UPDATE_DELAYED_HEAD");
    /// By code: 0–4 (the kernel's values), in order.
    pub const ALL: [Name; 5] = [
        NONE,
        ADD_DELAYED_REF,
        DROP_DELAYED_REF,
        ADD_DELAYED_EXTENT,
        UPDATE_DELAYED_HEAD,
    ];
    /// The name of the kernel's code `c`; `None` for a code this refgate does not know.
    pub fn of(c: u8) -> Option<Name> {
        ALL.get(usize::from(c)).copied()
    }
}

/// Backref key types, by the kernel's code (`BTRFS_TREE_BLOCK_REF_KEY` 176, …).
pub mod ref_type {
    use super::{Name, n};
    pub const TREE_BLOCK_REF: Name = n("tree_block_ref", "BTRFS_TREE_BLOCK_REF_KEY");
    pub const EXTENT_DATA_REF: Name = n("extent_data_ref", "BTRFS_EXTENT_DATA_REF_KEY");
    pub const SHARED_BLOCK_REF: Name = n("shared_block_ref", "BTRFS_SHARED_BLOCK_REF_KEY");
    pub const SHARED_DATA_REF: Name = n("shared_data_ref", "BTRFS_SHARED_DATA_REF_KEY");
    pub const ALL: [Name; 4] = [
        TREE_BLOCK_REF,
        EXTENT_DATA_REF,
        SHARED_BLOCK_REF,
        SHARED_DATA_REF,
    ];
    /// The name of the kernel's code `c`; `None` for a code this refgate does not know.
    pub fn of(c: u8) -> Option<Name> {
        match c {
            176 => Some(TREE_BLOCK_REF),
            178 => Some(EXTENT_DATA_REF),
            182 => Some(SHARED_BLOCK_REF),
            184 => Some(SHARED_DATA_REF),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are snake_case (they are JSON keys and SQL columns) and no id or label names two
    /// things within a group.
    #[test]
    fn ids_are_snake_case_and_distinct() {
        let groups: [&[Name]; 8] = [
            &action::ALL,
            &ref_type::ALL,
            &lock::ALL,
            &probe_kind::ALL,
            &caller::ALL,
            &task_state::ALL,
            &cpu_state::ALL,
            &counter::ALL,
        ];
        for g in groups {
            for (i, a) in g.iter().enumerate() {
                assert!(
                    a.id.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{a:?}"
                );
                for b in &g[i + 1..] {
                    assert!(a.id != b.id && a.label != b.label, "{a:?} {b:?}");
                }
            }
        }
    }
}
