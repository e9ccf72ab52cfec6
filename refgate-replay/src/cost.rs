//! The virtual-CPU engine's cost model (issue "virtual CPUs"; spec §7.2): what each step of
//! the model costs in virtual nanoseconds, and where each value came from.
//!
//! Order of preference for a value: calibrated from the trace being replayed; a
//! microbenchmark of the model's own operation (run on the development machine and
//! recorded here, never measured at replay time, so that a replay gives the same answer on
//! any host); a published or measured kernel figure with its source. No cost is 0: with a
//! zero hold time nothing would ever spin. Every entry can be overridden (`--cost NAME=NS`).

/// The largest cost a step may be given (`--cost`, `--ext-cost-ns`): 1 s. The virtual clock
/// adds costs by the million, so anything near `u64::MAX` would overflow it; a second per
/// step is already far from any kernel's.
pub const MAX_COST_NS: u64 = 1_000_000_000;

use crate::error::OptionError;
use serde::Serialize;

/// One named cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    /// One add-API call (`btrfs_add_delayed_tree_ref`/`_data_ref`/`_extent_op`): head and
    /// ref insertion with `delayed_refs->lock` held (§1.4, §4.3).
    AddRef,
    /// One node walked under `delayed_refs->lock` by `btrfs_find_ref_cluster` (§2.2) or by
    /// the modern head selection (§4.4): the §7.2 `c_walk`.
    WalkNode,
    /// Selecting, merging and erasing one ref node of a locked head, with
    /// `delayed_refs->lock` (3.x) or `head->lock` (modern) held (§2.4 steps 2–7, §4.4).
    SelectRef,
    /// Running one ref node against the extent tree with its lock held (§2.7, §7.2 `c_ext`).
    RunRef,
    /// Deleting a finished head with `delayed_refs->lock` held (§2.4 step 7, §4.4).
    DeleteHead,
    /// A context switch on one CPU (a task sleeps or yields and another is switched in).
    ContextSwitch,
    /// Waking a sleeping task until it runs on its (idle) CPU.
    Wakeup,
}

impl Cost {
    /// Every cost, in declaration order (so `Cost as usize` indexes it).
    pub const ALL: [Cost; 7] = [
        Cost::AddRef,
        Cost::WalkNode,
        Cost::SelectRef,
        Cost::RunRef,
        Cost::DeleteHead,
        Cost::ContextSwitch,
        Cost::Wakeup,
    ];
    /// The name used by `--cost NAME=NS` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Cost::AddRef => "add_ref",
            Cost::WalkNode => "walk_node",
            Cost::SelectRef => "select_ref",
            Cost::RunRef => "run_ref",
            Cost::DeleteHead => "delete_head",
            Cost::ContextSwitch => "context_switch",
            Cost::Wakeup => "wakeup",
        }
    }
    /// The cost named `s` ([`Cost::name`]), if any.
    pub fn from_name(s: &str) -> Option<Cost> {
        Cost::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// A cost's value and its provenance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CostEntry {
    /// The cost's name ([`Cost::name`]).
    pub name: &'static str,
    /// Its value (virtual ns).
    pub ns: u64,
    /// Where the value came from, in words a reader can check.
    pub source: String,
}

/// Default values: microbenchmarks of the model's own operations (single thread, release
/// build) and the host's own switch measurements (two threads passing a byte through a
/// pipe: pinned to one CPU, each pass is a context switch; to two CPUs, a cross-CPU
/// wake-up), from `cargo bench -p refgate-replay --bench costs` on the development machine
/// (x86-64, 2 cores, a PVM guest: its cross-CPU wake-ups are slow), medians of 5,
/// 2026-11-30 06:39 UTC; BENCHMARKS.md keeps the run. See [`CostModel::defaults`].
const BENCH: &str =
    "cargo bench -p refgate-replay --bench costs on the 2-core dev machine, 2026-11-30";

/// The costs a virtual replay charges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CostModel {
    /// One entry per [`Cost`] (the defaults are in [`Cost::ALL`] order).
    pub entries: Vec<CostEntry>,
}

impl Default for CostModel {
    fn default() -> Self {
        Self::defaults()
    }
}

impl CostModel {
    /// Every cost at its default, with its source.
    pub fn defaults() -> Self {
        let e = |c: Cost, ns: u64, what: &str| CostEntry {
            name: c.name(),
            ns,
            source: format!("{what} ({BENCH})"),
        };
        Self {
            entries: vec![
                e(
                    Cost::AddRef,
                    117,
                    "microbenchmark: the model's add-API work under the lock (head + ref insert; allocation is outside it)",
                ),
                e(
                    Cost::WalkNode,
                    30,
                    "microbenchmark: the model's btrfs_find_ref_cluster, per node walked",
                ),
                e(
                    Cost::SelectRef,
                    31,
                    "microbenchmark: the model's select_delayed_ref + erase of one ref",
                ),
                e(
                    Cost::RunRef,
                    114,
                    "microbenchmark: the model's extent-tree update (used when the trace has no run events to calibrate from)",
                ),
                e(
                    Cost::DeleteHead,
                    39,
                    "microbenchmark: removing a head from the model's queue",
                ),
                e(
                    Cost::ContextSwitch,
                    2_533,
                    "host measurement: pipe ping-pong, two threads on one CPU, per switch",
                ),
                e(
                    Cost::Wakeup,
                    24_829,
                    "host measurement: pipe ping-pong across two CPUs, per wake-up",
                ),
            ],
        }
    }

    /// The value of `c` (virtual ns).
    pub fn get(&self, c: Cost) -> u64 {
        self.entries
            .iter()
            .find(|e| e.name == c.name())
            .map(|e| e.ns)
            .expect("every cost has an entry")
    }

    /// Replaces one entry (value at least 1 ns: a zero cost would hide all contention).
    pub fn set(&mut self, c: Cost, ns: u64, source: impl Into<String>) {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.name == c.name())
            .expect("every cost has an entry");
        e.ns = ns.max(1);
        e.source = source.into();
    }

    /// Applies `NAME=NS` overrides (1 to [`MAX_COST_NS`] each); an unknown name or a bad number is an error naming the
    /// valid names.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<(), OptionError> {
        for o in overrides {
            let given = || o.clone();
            let (name, ns) = o
                .split_once('=')
                .ok_or_else(|| OptionError::CostSyntax { given: given() })?;
            let c = Cost::from_name(name.trim()).ok_or_else(|| OptionError::UnknownCost {
                given: given(),
                name: name.to_string(),
                known: Cost::ALL.map(Cost::name).join(", "),
            })?;
            let ns: u64 = ns.trim().parse().map_err(|_| OptionError::CostValue {
                given: given(),
                value: ns.to_string(),
            })?;
            if ns == 0 {
                return Err(OptionError::ZeroCost { given: given() });
            }
            if ns > MAX_COST_NS {
                return Err(OptionError::CostTooLarge {
                    given: given(),
                    max: MAX_COST_NS,
                });
            }
            self.set(c, ns, "--cost on the command line");
        }
        Ok(())
    }

    /// A compact table as a `[(cost, ns)]` array, indexed by `Cost as usize`.
    pub(crate) fn table(&self) -> [u64; 7] {
        Cost::ALL.map(|c| self.get(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cost_has_a_nonzero_default_and_a_source() {
        let m = CostModel::defaults();
        for c in Cost::ALL {
            assert!(m.get(c) > 0, "{}", c.name());
        }
        assert!(m.entries.iter().all(|e| !e.source.is_empty()));
        assert_eq!(m.entries.len(), Cost::ALL.len());
    }

    #[test]
    fn overrides_are_checked() {
        let mut m = CostModel::defaults();
        m.apply_overrides(&["run_ref=500".into()]).unwrap();
        assert_eq!(m.get(Cost::RunRef), 500);
        assert!(m.entries[3].source.contains("--cost"));
        let e = m.apply_overrides(&["nope=1".into()]).unwrap_err();
        assert!(matches!(e, OptionError::UnknownCost { ref name, .. } if name == "nope"));
        assert!(e.to_string().contains("add_ref"), "{e}");
        assert!(matches!(
            m.apply_overrides(&["run_ref=0".into()]),
            Err(OptionError::ZeroCost { .. })
        ));
        assert!(matches!(
            m.apply_overrides(&["run_ref".into()]),
            Err(OptionError::CostSyntax { .. })
        ));
        assert!(matches!(
            m.apply_overrides(&["run_ref=fast".into()]),
            Err(OptionError::CostValue { .. })
        ));
    }
}
