//! `struct btrfs_delayed_ref_head` and its refs (spec §1.2, §4.2), with the per-head parts of
//! adding (§1.4, §4.3), selecting (§2.5, §4.4) and merging (§2.6, §4.4).

use crate::exec;
use crate::live::{ThreadState, WaitRole, WorkerState};
use crate::metrics::WaitStats;
use crate::refkey::{BackrefKey, Era, NodeKey, RefAction};
use crate::spinlock::SpinLock;
use crate::vecmap::VecMap;
use parking_lot::lock_api::RawMutex as _;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `struct btrfs_delayed_extent_op` (§1.2): `update_flags` ⇔ `flags.is_some()`, `update_key`
/// ⇔ `key.is_some()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtentOp {
    /// Flags to OR into the extent item (`flags_to_set`), if `update_flags`.
    pub flags: Option<u64>,
    /// The key to set on the extent item, if `update_key`.
    pub key: Option<u64>,
}

impl ExtentOp {
    /// §1.4 `update_existing_head_ref`: copy the key if set, OR the flags if set.
    pub fn merge_from(&mut self, o: &ExtentOp) {
        if o.key.is_some() {
            self.key = o.key;
        }
        if let Some(f) = o.flags {
            self.flags = Some(self.flags.unwrap_or(0) | f);
        }
    }
}

/// A queued ref node (§1.2). Its key lives in the map; `id` tells a stale `ref_add_list`
/// entry from a live one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefNode {
    pub action: RefAction,
    pub ref_mod: u32,
    pub level: u8,
    pub id: u64,
}

/// What an insert did to the head's ref tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new node (`num_entries++`, `delayed_ref_updates++`).
    New,
    /// Same key and action: `ref_mod += 1`.
    Merged,
    /// Opposite action: `ref_mod -= 1`, node still there.
    Reduced,
    /// Opposite action brought the node to zero: removed (`drop_delayed_ref`).
    Cancelled,
}

/// The state the kernel protects with `delayed_refs->lock` (3.x) or `head->lock` (modern).
#[derive(Debug)]
pub struct HeadInner {
    pub num_bytes: u64,
    /// Pending signed net of the queued refs (§1.2); decremented as refs run.
    pub ref_mod: i64,
    /// Net of every mod ever added (§4.2); never decremented by running.
    pub total_ref_mod: i64,
    pub must_insert_reserved: bool,
    pub is_data: bool,
    pub extent_op: Option<ExtentOp>,
    pub refs: VecMap<NodeKey, RefNode>,
    /// Modern `ref_add_list`: ADD nodes in insertion order; stale entries skipped lazily.
    add_list: VecDeque<(NodeKey, u64)>,
    next_id: u64,
    /// Modern: refs' worth of `delayed_refs_rsv` reserved by the add calls on this head and
    /// not yet released (§4.7); released one per ref run and the rest when the head goes.
    pub rsv_refs: u64,
    /// The fence the last merge ran with, cleared by inserts: merging is idempotent until
    /// refs are added or the fence moves, so we skip re-merging (same result, less work).
    merged_with_fence: Option<u64>,
}

impl HeadInner {
    pub fn new(num_bytes: u64, is_data: bool) -> Self {
        Self {
            num_bytes,
            ref_mod: 0,
            total_ref_mod: 0,
            must_insert_reserved: false,
            is_data,
            extent_op: None,
            refs: VecMap::new(),
            add_list: VecDeque::new(),
            next_id: 0,
            rsv_refs: 0,
            merged_with_fence: None,
        }
    }

    /// `add_delayed_tree_ref`/`_data_ref` insertion (§1.4; §4.3 has the same arithmetic).
    pub fn insert_ref(
        &mut self,
        era: Era,
        key: NodeKey,
        action: RefAction,
        level: u8,
    ) -> InsertOutcome {
        self.merged_with_fence = None;
        if let Some(ex) = self.refs.get_mut(&key) {
            if ex.action == action {
                ex.ref_mod += 1;
                return InsertOutcome::Merged;
            }
            // The existing node keeps its action (DROP×2 + ADD ⇒ DROP×1).
            ex.ref_mod -= 1;
            if ex.ref_mod == 0 {
                self.refs.remove(&key);
                return InsertOutcome::Cancelled;
            }
            return InsertOutcome::Reduced;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.refs.insert(
            key,
            RefNode {
                action,
                ref_mod: 1,
                level,
                id,
            },
        );
        // Only the modern era has `ref_add_list` (§4.2).
        if era == Era::Modern && action == RefAction::Add {
            self.add_list.push_back((key, id));
        }
        InsertOutcome::New
    }

    /// `select_delayed_ref` (§2.5 for 3.x, §4.4 for modern): ADDs before DROPs.
    pub fn select_delayed_ref(&mut self, era: Era) -> Option<NodeKey> {
        match era {
            // Walk backwards from the head (descending key order): first ADD, else first DROP.
            Era::V3 => self
                .refs
                .iter()
                .rev()
                .find(|(_, n)| n.action == RefAction::Add)
                .or_else(|| self.refs.iter().next_back())
                .map(|(k, _)| *k),
            // First live entry of `ref_add_list`, else the lowest node (all DROPs then).
            Era::Modern => {
                while let Some(&(k, id)) = self.add_list.front() {
                    match self.refs.get(&k) {
                        Some(n) if n.id == id => return Some(k),
                        _ => {
                            self.add_list.pop_front();
                        }
                    }
                }
                self.refs.keys().next().copied()
            }
        }
    }

    /// Erase a node about to be run and correct `ref_mod` (§2.4 step 7, §4.4).
    pub fn erase_ref(&mut self, key: &NodeKey) -> RefNode {
        let n = self.refs.remove(key).expect("selected ref is in the head");
        match n.action {
            RefAction::Add => self.ref_mod -= n.ref_mod as i64,
            RefAction::Drop => self.ref_mod += n.ref_mod as i64,
        }
        n
    }

    /// Run-time merge (§2.6 for 3.x, §4.4 for modern). `fence` is the lowest active tree-mod
    /// seq (0 = none). Returns the number of nodes dropped; `ref_mod` is unchanged.
    pub fn merge_delayed_refs(&mut self, era: Era, fence: u64) -> u64 {
        if self.refs.len() < 2 || self.merged_with_fence == Some(fence) {
            return 0;
        }
        // Modern: skipped entirely for data heads (since 3.14).
        if era == Era::Modern && self.is_data {
            return 0;
        }
        self.merged_with_fence = Some(fence);
        let fenced = |k: &NodeKey| fence != 0 && k.seq(era) >= fence;
        // Eligible nodes in the era's walk order: 3.x walks descending and stops at the
        // first fenced node; modern walks ascending and skips fenced nodes.
        let order: Vec<NodeKey> = match era {
            Era::V3 => self
                .refs
                .keys()
                .rev()
                .copied()
                .take_while(|k| !fenced(k))
                .collect(),
            Era::Modern => self.refs.keys().copied().filter(|k| !fenced(k)).collect(),
        };
        // Group by key ignoring seq, keeping walk order within a group.
        let mut groups: BTreeMap<BackrefKey, Vec<NodeKey>> = BTreeMap::new();
        for k in order {
            groups.entry(k.backref(era)).or_default().push(k);
        }
        let mut dropped = 0;
        for (_, g) in groups.into_iter().filter(|(_, g)| g.len() > 1) {
            let mut it = g.into_iter();
            let mut surv = it.next();
            for next in it {
                let Some(r) = surv else {
                    // The previous survivor cancelled out: the walk restarts at the next node.
                    surv = Some(next);
                    continue;
                };
                let (rn, nn) = (self.refs[&r], self.refs[&next]);
                let (keep, gone, mut keep_node, gone_node) =
                    if rn.action != nn.action && rn.ref_mod < nn.ref_mod {
                        (next, r, nn, rn)
                    } else {
                        (r, next, rn, nn)
                    };
                self.refs.remove(&gone);
                dropped += 1;
                if keep_node.action == gone_node.action {
                    keep_node.ref_mod += gone_node.ref_mod;
                } else {
                    keep_node.ref_mod -= gone_node.ref_mod;
                }
                if keep_node.ref_mod == 0 {
                    self.refs.remove(&keep);
                    dropped += 1;
                    surv = None;
                } else {
                    self.refs.insert(keep, keep_node);
                    surv = Some(keep);
                }
            }
        }
        dropped
    }

    /// Σ signed ref_mod of the queued refs (§1.4: must equal `ref_mod` under the lock).
    pub fn queued_net(&self) -> i64 {
        self.refs
            .values()
            .map(|n| match n.action {
                RefAction::Add => n.ref_mod as i64,
                RefAction::Drop => -(n.ref_mod as i64),
            })
            .sum()
    }
}

/// A head: its `mutex` (held while processing, §1.2) and its locked state.
///
/// `claimed` (3.x: on a runner's cluster list; modern: `processing`) and `in_tree` (3.x
/// `in_tree`, modern `tracked`) are protected by `delayed_refs->lock` as in the kernel; they
/// are atomics only so that walks under that lock need not take each head's own lock.
pub struct DelayedRefHead {
    pub bytenr: u64,
    mutex: parking_lot::RawMutex,
    claimed: AtomicBool,
    in_tree: AtomicBool,
    pub(crate) lock: SpinLock<HeadInner>,
}

impl DelayedRefHead {
    pub fn new(bytenr: u64, num_bytes: u64, is_data: bool, spin_limit: u32) -> Self {
        Self {
            bytenr,
            mutex: parking_lot::RawMutex::INIT,
            claimed: AtomicBool::new(false),
            in_tree: AtomicBool::new(true),
            lock: SpinLock::new(
                HeadInner::new(num_bytes, is_data),
                spin_limit,
                WaitRole::HeadLock,
            ),
        }
    }

    /// Makes an unused head (never inserted, so never locked or claimed) stand for another
    /// extent: the add API's preallocated head, reused instead of freed and allocated again.
    pub(crate) fn reset(&mut self, bytenr: u64, num_bytes: u64, is_data: bool) {
        debug_assert!(!self.mutex.is_locked() && !self.claimed() && self.in_tree());
        self.bytenr = bytenr;
        *self.lock.get_mut() = HeadInner::new(num_bytes, is_data);
    }

    /// Caller holds `delayed_refs->lock`.
    pub fn claimed(&self) -> bool {
        self.claimed.load(Ordering::Relaxed)
    }
    /// Caller holds `delayed_refs->lock`.
    pub fn set_claimed(&self, v: bool) {
        self.claimed.store(v, Ordering::Relaxed)
    }
    /// Caller holds `delayed_refs->lock`.
    pub fn in_tree(&self) -> bool {
        self.in_tree.load(Ordering::Relaxed)
    }
    /// Caller holds `delayed_refs->lock`.
    pub fn set_in_tree(&self, v: bool) {
        self.in_tree.store(v, Ordering::Relaxed)
    }

    pub fn mutex_trylock(&self) -> bool {
        self.mutex.try_lock()
    }

    fn mutex_addr(&self) -> usize {
        &self.mutex as *const parking_lot::RawMutex as usize
    }

    /// Blocking `mutex_lock`, counted as a head-mutex wait.
    pub fn mutex_lock(&self, waits: &mut WaitStats, state: &WorkerState) {
        if self.mutex.try_lock() {
            return;
        }
        let prev = state.set(ThreadState::WaitingOnHead);
        if exec::in_virtual() {
            // The task sleeps until the owner releases the mutex, then competes for it.
            let t0 = exec::now_ns();
            let mut front = false;
            while !self.mutex.try_lock() {
                exec::sleep_for_lock(self.mutex_addr(), front);
                front = true;
            }
            waits.record(exec::now_ns() - t0);
            state.set(prev);
            return;
        }
        let t = Instant::now();
        self.mutex.lock();
        waits.record(t.elapsed().as_nanos() as u64);
        state.set(prev);
    }

    /// Callers must hold the mutex (every lock/unlock pair in this crate is local and
    /// balanced; the runners track ownership in `locked_ref`).
    pub fn mutex_unlock(&self) {
        // SAFETY: the caller holds the mutex (see above).
        unsafe { self.mutex.unlock() }
        // Under virtual CPUs: wake the first sleeper (no-op on a real thread).
        exec::wake_one(self.mutex_addr());
    }

    pub fn mutex_is_locked(&self) -> bool {
        self.mutex.is_locked()
    }
}

/// A head whose `mutex` the holder took (`btrfs_delayed_ref_lock`, §2.4 step 1, §4.4): the
/// mutex is released when this is dropped, so no exit path of a runner can keep it.
pub struct LockedHead(std::sync::Arc<DelayedRefHead>);

impl LockedHead {
    /// Wraps a head whose mutex the caller has just acquired.
    pub(crate) fn new(head: std::sync::Arc<DelayedRefHead>) -> Self {
        debug_assert!(head.mutex_is_locked());
        Self(head)
    }
}

impl std::ops::Deref for LockedHead {
    type Target = DelayedRefHead;
    fn deref(&self) -> &DelayedRefHead {
        &self.0
    }
}

impl Drop for LockedHead {
    fn drop(&mut self) {
        self.0.mutex_unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refkey::BackrefKey;

    fn k(era: Era, root: u64, seq: u64) -> NodeKey {
        NodeKey::new(era, &BackrefKey::data(0, root, 257, 0), seq)
    }

    /// §1.4: same action merges, opposite action cancels, the survivor keeps its action.
    #[test]
    fn spec_1_4_insert_merge_and_cancel() {
        let mut h = HeadInner::new(4096, true);
        let key = k(Era::V3, 5, 0);
        assert_eq!(
            h.insert_ref(Era::V3, key, RefAction::Drop, 0),
            InsertOutcome::New
        );
        assert_eq!(
            h.insert_ref(Era::V3, key, RefAction::Drop, 0),
            InsertOutcome::Merged
        );
        assert_eq!(
            h.insert_ref(Era::V3, key, RefAction::Add, 0),
            InsertOutcome::Reduced
        );
        assert_eq!(h.refs[&key].action, RefAction::Drop);
        assert_eq!(h.refs[&key].ref_mod, 1);
        assert_eq!(
            h.insert_ref(Era::V3, key, RefAction::Add, 0),
            InsertOutcome::Cancelled
        );
        assert!(h.refs.is_empty());
    }

    /// §2.5: 3.x selects ADDs first, walking descending; then DROPs.
    #[test]
    fn spec_2_5_add_before_drop_v3() {
        let mut h = HeadInner::new(4096, true);
        h.insert_ref(Era::V3, k(Era::V3, 1, 0), RefAction::Drop, 0);
        h.insert_ref(Era::V3, k(Era::V3, 2, 0), RefAction::Add, 0);
        h.insert_ref(Era::V3, k(Era::V3, 3, 0), RefAction::Add, 0);
        h.insert_ref(Era::V3, k(Era::V3, 4, 0), RefAction::Drop, 0);
        let mut seen = vec![];
        while let Some(s) = h.select_delayed_ref(Era::V3) {
            let n = h.erase_ref(&s);
            seen.push((n.action, s.backref(Era::V3).a));
        }
        use RefAction::*;
        assert_eq!(seen, vec![(Add, 3), (Add, 2), (Drop, 4), (Drop, 1)]);
        assert_eq!(h.ref_mod, 0 - 2 + 2); // ref_mod starts at 0 here; erase corrects by ±mod
    }

    /// §4.4: modern selects ADDs in insertion order, then DROPs in key order.
    #[test]
    fn spec_4_4_add_fifo_then_drops_modern() {
        let mut h = HeadInner::new(4096, false);
        let e = Era::Modern;
        h.insert_ref(e, k(e, 9, 0), RefAction::Add, 0);
        h.insert_ref(e, k(e, 4, 0), RefAction::Drop, 0);
        h.insert_ref(e, k(e, 1, 0), RefAction::Add, 0);
        h.insert_ref(e, k(e, 2, 0), RefAction::Drop, 0);
        // A cancelled ADD leaves a stale list entry that must be skipped.
        h.insert_ref(e, k(e, 7, 0), RefAction::Add, 0);
        h.insert_ref(e, k(e, 7, 0), RefAction::Drop, 0);
        let mut seen = vec![];
        while let Some(s) = h.select_delayed_ref(e) {
            seen.push(s.backref(e).a);
            h.erase_ref(&s);
        }
        assert_eq!(seen, vec![9, 1, 2, 4]);
    }

    /// §2.6: run-time merge ignores seq, preserves the net, stops at the fence.
    #[test]
    fn spec_2_6_merge_ignores_seq_and_respects_fence() {
        let e = Era::V3;
        let mut h = HeadInner::new(4096, true);
        for (seq, a) in [
            (1, RefAction::Add),
            (2, RefAction::Add),
            (3, RefAction::Drop),
        ] {
            h.insert_ref(e, k(e, 5, seq), a, 0);
        }
        assert_eq!(h.refs.len(), 3);
        let net = h.queued_net();
        // Fence at 3: walking descending, seq 3 is fenced first ⇒ nothing merges.
        assert_eq!(h.merge_delayed_refs(e, 3), 0);
        assert_eq!(h.refs.len(), 3);
        // No fence: ADD(1)+ADD(1) merge, DROP(1) cancels one.
        let dropped = h.merge_delayed_refs(e, 0);
        assert_eq!(dropped, 2);
        assert_eq!(h.refs.len(), 1);
        assert_eq!(h.queued_net(), net);
        let (_, n) = h.refs.iter().next().unwrap();
        assert_eq!((n.action, n.ref_mod), (RefAction::Add, 1));
    }

    /// §2.6: the side with the smaller ref_mod is dropped; zero survivors vanish.
    #[test]
    fn spec_2_6_merge_smaller_side_dropped() {
        let e = Era::V3;
        let mut h = HeadInner::new(4096, true);
        h.insert_ref(e, k(e, 5, 2), RefAction::Add, 0);
        h.insert_ref(e, k(e, 5, 1), RefAction::Drop, 0);
        h.insert_ref(e, k(e, 5, 1), RefAction::Drop, 0);
        assert_eq!(h.merge_delayed_refs(e, 0), 1);
        let (key, n) = h.refs.iter().next().unwrap();
        assert_eq!((n.action, n.ref_mod, key.seq(e)), (RefAction::Drop, 1, 1));
        let mut h2 = HeadInner::new(4096, true);
        h2.insert_ref(e, k(e, 5, 2), RefAction::Add, 0);
        h2.insert_ref(e, k(e, 5, 1), RefAction::Drop, 0);
        assert_eq!(h2.merge_delayed_refs(e, 0), 2);
        assert!(h2.refs.is_empty());
    }
}
