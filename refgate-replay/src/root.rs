//! Per-filesystem and per-transaction state: `struct btrfs_delayed_ref_root` (spec §1.1,
//! §4.2), the tree-mod-seq list (§1.6), and the add path (§1.4, §4.3).

use crate::btree::{EXTENT_TREE_OBJECTID, OwnRef};
use crate::cost::Cost;
use crate::error::ModelError;
use crate::exec;
use crate::extent_tree::{ExtentItem, ExtentTree, RunRef, TreeConfig};
use crate::gate::Gate;
use crate::head::{DelayedRefHead, ExtentOp, HeadInner, InsertOutcome, LockedHead};
use crate::live::{Live, ThreadState, WaitRole, WorkerState};
use crate::metrics::{Caller, ThreadMetrics};
use crate::params::Params;
use crate::refkey::{AddAction, Era, NodeKey, RefOwner, RefSpec};
use crate::space::DelayedRefsRsv;
use crate::spinlock::{SpinGuard, SpinLock};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One worker thread's identity and private counters.
pub struct Worker {
    /// The worker's [`Live::workers`] slot: its thread (real) or its CPU (virtual).
    pub id: usize,
    /// The worker's counters, merged into the report after the run.
    pub m: ThreadMetrics,
    live: Arc<Live>,
    /// The add API's preallocated head when the last add found one in the tree (§1.4):
    /// kept for the next add instead of freed.
    spare_head: Option<Arc<DelayedRefHead>>,
    /// Who this task's `btrfs_run_delayed_refs` calls count as, set by the hook it is in.
    pub caller: Caller,
}

impl Worker {
    /// Worker `id`, publishing into `live`'s slot `id`.
    pub fn new(id: usize, live: Arc<Live>) -> Self {
        assert!(id < live.workers.len());
        Self {
            id,
            m: ThreadMetrics::default(),
            live,
            spare_head: None,
            caller: Caller::OTHER,
        }
    }
    /// This worker's live slot.
    pub fn ws(&self) -> &WorkerState {
        &self.live.workers[self.id]
    }
    /// Sets this worker's live state, returning the previous one ([`WorkerState::set`]).
    pub fn set_state(&self, s: ThreadState) -> ThreadState {
        self.ws().set(s)
    }
}

/// `struct btrfs_trans_handle`, the parts the delayed-ref code reads.
#[derive(Debug, Default)]
pub struct TransHandle {
    /// `trans->delayed_ref_updates` (§1.5; kernel `unsigned long`, decremented only if > 0).
    pub delayed_ref_updates: u64,
    /// `trans->delayed_ref_elem.seq` (0 = not registered, §1.6).
    pub seq_elem: u64,
}

impl TransHandle {
    pub(crate) fn dec_updates(&mut self, n: u64) {
        self.delayed_ref_updates = self.delayed_ref_updates.saturating_sub(n);
    }
}

/// `fs_info->tree_mod_seq` and `tree_mod_seq_list` under `tree_mod_seq_lock` (§1.6).
#[derive(Default)]
pub struct TreeModSeq {
    inner: Mutex<(u64, BTreeMap<u64, ()>)>,
    /// The oldest element's seq (0 = list empty), republished under the lock. Readers only
    /// ask about refs queued before now, whose seqs are older than any element that could
    /// register concurrently, so a lockless read decides as the locked one would.
    lowest: AtomicU64,
}

impl TreeModSeq {
    /// `btrfs_get_tree_mod_seq`: register the handle's element on first use, then a fresh
    /// seq for every ref (so v3.x fs-tree refs never merge at insertion).
    pub fn get_seq(&self, elem: &mut u64) -> u64 {
        let mut g = self.inner.lock();
        if *elem == 0 {
            g.0 += 1;
            *elem = g.0;
            let e = *elem;
            g.1.insert(e, ());
            self.lowest
                .store(*g.1.keys().next().unwrap(), Ordering::Release);
        }
        g.0 += 1;
        g.0
    }
    /// `btrfs_put_tree_mod_seq` (via `btrfs_delayed_refs_qgroup_accounting`).
    pub fn put(&self, elem: &mut u64) {
        if *elem == 0 {
            return;
        }
        let mut g = self.inner.lock();
        g.1.remove(elem);
        *elem = 0;
        self.lowest
            .store(g.1.keys().next().copied().unwrap_or(0), Ordering::Release);
    }
    pub fn lowest(&self) -> u64 {
        self.lowest.load(Ordering::Acquire)
    }
    /// `btrfs_check_delayed_seq`: hold back iff an element exists and `seq >= oldest`.
    pub fn hold_back(&self, seq: u64) -> bool {
        let l = self.lowest();
        l != 0 && seq >= l
    }
    fn reset(&self) {
        let mut g = self.inner.lock();
        g.0 = 0;
        g.1.clear();
        self.lowest.store(0, Ordering::Release);
    }
}

/// The counters `delayed_refs->lock` protects (§1.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Incremented per new head; the v3.x run path never decrements it (§1.1 item 4).
    pub num_heads: u64,
    /// Heads in the tree not claimed by a cluster / not `processing`.
    pub num_heads_ready: u64,
    /// Shared cursor (§2.2, §4.4).
    pub run_delayed_start: u64,
}

pub struct RootInner {
    /// One head per bytenr; ascending order is both the rbtree's and the xarray's (§7.1).
    pub heads: BTreeMap<u64, Arc<DelayedRefHead>>,
    pub c: Counters,
}

/// `struct btrfs_delayed_ref_root` (§1.1, §4.2).
pub struct DelayedRefRoot {
    pub(crate) lock: SpinLock<RootInner>,
    /// The seed's `procs_running_refs`, `ref_seq`, `wait` (§2.3).
    pub gate: Gate,
    /// v3.x: nodes in the rbtree, heads and refs (§1.1), changed only under `lock`; an
    /// atomic (as it is from 3.14 to 6.12, §4.1) so the modern runner can count refs it runs
    /// under the head's own lock without taking this one. Same meaning in both eras.
    pub num_entries: AtomicU64,
    /// 3.x `flushing` / modern `BTRFS_DELAYED_REFS_FLUSHING` (§2.8, §4.7).
    pub flushing: AtomicBool,
}

/// `fs_info`: the era, the current transaction's delayed refs, the extent tree, the seq list.
pub struct FsModel {
    /// The kernel generation followed: key orders, counters, runner.
    pub era: Era,
    /// The model's parameters.
    pub params: Params,
    /// The current transaction's `delayed_refs` (§1.1, §4.2).
    pub root: DelayedRefRoot,
    /// The extent-tree oracle (§7.1) behind its lock (§2.7).
    pub extent_tree: ExtentTree,
    /// `fs_info->tree_mod_seq` and its list (§1.6).
    pub tree_mod: TreeModSeq,
    /// Modern: `delayed_refs_rsv` and its reclaim workers (§4.7).
    pub space: DelayedRefsRsv,
    /// The live view the model publishes into.
    pub live: Arc<Live>,
    /// `params.costs` as a table indexed by [`Cost`] (the virtual engine's charges).
    costs: [u64; 7],
}

/// Result of a head-mutex acquisition dance (§2.4 step 1, §4.4).
pub(crate) enum HeadLock<'a> {
    /// The head's mutex is ours; `delayed_refs->lock` retaken.
    Locked(SpinGuard<'a, RootInner>, LockedHead),
    /// The head left the tree while we slept on its mutex (`-EAGAIN`); lock retaken.
    Gone(SpinGuard<'a, RootInner>),
}

impl FsModel {
    /// A filesystem following `era`: an empty queue, `initial` as the extent tree, publishing
    /// into `live`.
    pub fn new(
        era: Era,
        params: Params,
        initial: impl IntoIterator<Item = (u64, ExtentItem)>,
        live: Arc<Live>,
    ) -> Self {
        Self {
            era,
            root: DelayedRefRoot {
                lock: SpinLock::new(
                    RootInner {
                        heads: BTreeMap::new(),
                        c: Counters::default(),
                    },
                    params.spin_limit,
                    WaitRole::DelayedRefsLock,
                ),
                gate: Gate::new(),
                num_entries: AtomicU64::new(0),
                flushing: AtomicBool::new(false),
            },
            extent_tree: ExtentTree::new(
                initial,
                &TreeConfig {
                    model: params.extent_tree,
                    ext_cost_ns: params.ext_cost_ns,
                    virtual_cost_ns: params.costs.get(Cost::RunRef),
                    lock_kind: params
                        .extent_lock
                        .unwrap_or(crate::params::ExtentLock::for_era(era)),
                    nodesize: params.nodesize,
                    extent_items: params.extent_items,
                    key_end: params.extent_key_end,
                    v3: era == Era::V3,
                },
                live.clone(),
            ),
            tree_mod: TreeModSeq::default(),
            space: DelayedRefsRsv::new(params.metadata_pool_bytes),
            costs: params.costs.table(),
            params,
            live,
        }
    }

    /// The DR lock, for tests and tools that inspect or poke the tree directly.
    #[doc(hidden)]
    pub fn root_lock_for_tests(&self, w: &mut Worker) -> SpinGuard<'_, RootInner> {
        self.lock_root(w)
    }

    /// A head's spinlock, for tests that build a queue state the add path cannot (e.g. a
    /// modern head holding a tree-mod-log user's seqs).
    #[doc(hidden)]
    pub fn head_lock_for_tests<'h>(
        &self,
        head: &'h DelayedRefHead,
        w: &mut Worker,
    ) -> SpinGuard<'h, HeadInner> {
        self.lock_head(head, w)
    }

    pub(crate) fn lock_root(&self, w: &mut Worker) -> SpinGuard<'_, RootInner> {
        let Worker { m, live, id, .. } = w;
        self.root.lock.lock(&mut m.dr_lock, &live.workers[*id])
    }

    pub(crate) fn lock_head<'h>(
        &self,
        head: &'h DelayedRefHead,
        w: &mut Worker,
    ) -> SpinGuard<'h, HeadInner> {
        let Worker { m, live, id, .. } = w;
        head.lock.lock(&mut m.head_lock, &live.workers[*id])
    }

    /// The live slot of worker `id` (borrows `self`, not the worker, so it can be passed
    /// alongside `&mut worker.m`).
    #[inline]
    pub fn ws(&self, id: usize) -> &WorkerState {
        &self.live.workers[id]
    }

    /// Mirror the queue depth for lockless readers (§2.3, §2.8) and the dashboard.
    #[inline]
    pub fn publish(&self, c: &Counters) {
        let q = &self.live.queue;
        q.num_entries.store(
            self.root.num_entries.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        q.num_heads_ready
            .store(c.num_heads_ready, Ordering::Relaxed);
        q.num_heads.store(c.num_heads, Ordering::Relaxed);
    }

    /// The current transaction's index (0-based), for per-transaction counts.
    #[inline]
    pub fn txn(&self) -> usize {
        self.live.transaction.load(Ordering::Relaxed) as usize
    }

    /// Lockless `num_entries` read (the kernel reads it without the spinlock).
    pub fn num_entries_racy(&self) -> u64 {
        self.root.num_entries.load(Ordering::Relaxed)
    }
    /// Lockless `num_heads_ready` read (the kernel reads it without the spinlock, §2.8): the
    /// value last published under `delayed_refs->lock`.
    pub fn num_heads_ready_racy(&self) -> u64 {
        self.live.queue.num_heads_ready.load(Ordering::Relaxed)
    }

    /// `btrfs_delayed_ref_lock` (§2.4 step 1, §4.4): trylock the head mutex; else pin the
    /// head, drop the spinlock, block, retake it and re-check the head is still in the tree.
    pub(crate) fn delayed_ref_lock<'a>(
        &'a self,
        w: &mut Worker,
        g: SpinGuard<'a, RootInner>,
        head: &Arc<DelayedRefHead>,
    ) -> HeadLock<'a> {
        if head.mutex_trylock() {
            return HeadLock::Locked(g, LockedHead::new(head.clone()));
        }
        drop(g);
        {
            let Worker { m, live, id, .. } = w;
            head.mutex_lock(&mut m.head_mutex, &live.workers[*id]);
        }
        let g = self.lock_root(w);
        if !head.in_tree() {
            head.mutex_unlock();
            w.m.head_eagain += 1;
            return HeadLock::Gone(g);
        }
        HeadLock::Locked(g, LockedHead::new(head.clone()))
    }

    /// A head allocated before `delayed_refs->lock` is taken, as the add API does
    /// (`kmem_cache_alloc` of head and ref, then `spin_lock`, §1.4): only the tree work is
    /// done under the lock.
    fn alloc_head(
        &self,
        w: &mut Worker,
        bytenr: u64,
        num_bytes: u64,
        is_data: bool,
    ) -> Arc<DelayedRefHead> {
        if let Some(mut spare) = w.spare_head.take()
            && let Some(h) = Arc::get_mut(&mut spare)
        {
            h.reset(bytenr, num_bytes, is_data);
            return spare;
        }
        Arc::new(DelayedRefHead::new(
            bytenr,
            num_bytes,
            is_data,
            self.params.spin_limit,
        ))
    }

    /// `add_delayed_ref_head` (§1.4, §4.3) with the DR lock held; returns the head. The
    /// preallocated head is taken if no head exists for the extent; otherwise the caller
    /// frees it after unlocking.
    fn add_delayed_ref_head(
        &self,
        g: &mut RootInner,
        h: &mut TransHandle,
        bytenr: u64,
        prealloc: &mut Option<Arc<DelayedRefHead>>,
    ) -> Arc<DelayedRefHead> {
        if let Some(head) = g.heads.get(&bytenr) {
            return head.clone();
        }
        let head = prealloc.take().expect("one head allocated per add call");
        g.heads.insert(bytenr, head.clone());
        g.c.num_heads += 1;
        g.c.num_heads_ready += 1;
        self.root.num_entries.fetch_add(1, Ordering::Relaxed);
        // 3.x counts new heads as updates (§1.4); modern counts refs only (§4.3).
        if self.era == Era::V3 {
            h.delayed_ref_updates += 1;
        }
        head
    }

    /// `update_existing_head_ref` / new-head init, the per-head part (§1.4).
    fn update_head(
        hi: &mut HeadInner,
        bytenr: u64,
        num_bytes: u64,
        is_data: bool,
        count_mod: i64,
        must_insert_reserved: bool,
        op: Option<ExtentOp>,
    ) -> Result<(), ModelError> {
        if hi.is_data != is_data {
            return Err(ModelError::IsDataMismatch { bytenr });
        }
        if must_insert_reserved {
            // Freed and re-allocated within the transaction: the new allocation's size wins.
            hi.must_insert_reserved = true;
            hi.num_bytes = num_bytes;
        }
        if let Some(op) = op {
            match &mut hi.extent_op {
                Some(ex) => ex.merge_from(&op),
                None => hi.extent_op = Some(op),
            }
        }
        hi.ref_mod += count_mod;
        hi.total_ref_mod += count_mod;
        Ok(())
    }

    /// `btrfs_add_delayed_tree_ref` / `btrfs_add_delayed_data_ref` (§1.4, §4.3).
    pub fn add_ref(
        &self,
        w: &mut Worker,
        h: &mut TransHandle,
        r: &RefSpec,
        op: Option<ExtentOp>,
    ) -> Result<(), ModelError> {
        w.m.adds += 1;
        self.add_ref_inner(w, h, r, op, true)
    }

    /// [`Self::add_ref`]; `reserve`: the modern era's delayed-refs reservation is made
    /// (the model's own refs make none, see `queue_own_refs`).
    fn add_ref_inner(
        &self,
        w: &mut Worker,
        h: &mut TransHandle,
        r: &RefSpec,
        op: Option<ExtentOp>,
        reserve: bool,
    ) -> Result<(), ModelError> {
        let reserve = reserve && self.era == Era::Modern;
        // Modern: the reservation is made before anything is queued, and may wait (§4.7).
        if reserve && self.space.reserve(self.params.delayed_ref_bytes) {
            w.m.space_waits += 1;
        }
        let mut spare = Some(self.alloc_head(w, r.bytenr, r.num_bytes, r.is_data()));
        let mut g = self.lock_root(w);
        self.charge(Cost::AddRef, 1);
        // §1.6: v3.x hands every fs-tree ref a fresh seq; modern reads a seq that only
        // moves with tree-mod-log users, which the model has none of (so 0: refs merge).
        let seq = match self.era {
            Era::V3 if r.need_ref_seq() => self.tree_mod.get_seq(&mut h.seq_elem),
            _ => 0,
        };
        let head = self.add_delayed_ref_head(&mut g, h, r.bytenr, &mut spare);
        let mut hi = self.lock_head(&head, w);
        Self::update_head(
            &mut hi,
            r.bytenr,
            r.num_bytes,
            r.is_data(),
            r.action.count_mod(),
            r.action == crate::refkey::AddAction::AddExtent,
            op,
        )?;
        if reserve {
            hi.rsv_refs += 1;
        }
        let key = NodeKey::new(self.era, &r.key(), seq);
        match hi.insert_ref(self.era, key, r.action.node_action(), r.level()) {
            InsertOutcome::New => {
                self.root.num_entries.fetch_add(1, Ordering::Relaxed);
                h.delayed_ref_updates += 1;
            }
            InsertOutcome::Merged | InsertOutcome::Reduced => {}
            InsertOutcome::Cancelled => {
                // `drop_delayed_ref` (§1.4).
                self.root.num_entries.fetch_sub(1, Ordering::Relaxed);
                h.dec_updates(1);
                w.m.insert_cancels += 1;
            }
        }
        drop(hi);
        self.publish(&g.c);
        drop(g);
        w.spare_head = spare;
        Ok(())
    }

    /// `btrfs_add_delayed_extent_op`: a head with action UPDATE_DELAYED_HEAD, no ref (§1.4).
    pub fn add_extent_op(
        &self,
        w: &mut Worker,
        h: &mut TransHandle,
        bytenr: u64,
        num_bytes: u64,
        is_data: bool,
        op: ExtentOp,
    ) -> Result<(), ModelError> {
        w.m.adds += 1;
        let mut spare = Some(self.alloc_head(w, bytenr, num_bytes, is_data));
        let mut g = self.lock_root(w);
        self.charge(Cost::AddRef, 1);
        let head = self.add_delayed_ref_head(&mut g, h, bytenr, &mut spare);
        let mut hi = self.lock_head(&head, w);
        Self::update_head(&mut hi, bytenr, num_bytes, is_data, 0, false, Some(op))?;
        drop(hi);
        self.publish(&g.c);
        drop(g);
        w.spare_head = spare;
        Ok(())
    }

    /// `btrfs_lookup_extent_info` (§2.9): a head-mutex reader that contends with runners.
    /// Returns the head's pending `ref_mod` (0 without a head).
    pub fn lookup_extent_info(&self, w: &mut Worker, bytenr: u64) -> i64 {
        loop {
            let g = self.lock_root(w);
            self.charge(Cost::WalkNode, 1);
            let Some(head) = g.heads.get(&bytenr).cloned() else {
                return 0;
            };
            match self.delayed_ref_lock(w, g, &head) {
                HeadLock::Locked(g, locked) => {
                    let v = self.lock_head(&locked, w).ref_mod;
                    drop(g);
                    drop(locked);
                    return v;
                }
                HeadLock::Gone(g) => drop(g),
            }
        }
    }

    /// `run_one_delayed_ref` (§2.7): one ref node applied to the extent tree and counted —
    /// the step both eras' runners share.
    pub(crate) fn run_one_delayed_ref(
        &self,
        w: &mut Worker,
        rr: &RunRef,
    ) -> Result<(), ModelError> {
        let fed = self.extent_tree.run_ref(rr, &mut w.m, self.ws(w.id))?;
        w.m.ref_run(self.txn(), rr.key.is_data(), w.caller);
        w.ws().add_refs_run(1);
        self.queue_own_refs(w, &fed)
    }

    /// `run_delayed_extent_op` (§2.4 step 6, §4.4) on the extent tree, queueing what its
    /// walk fed back.
    pub(crate) fn run_extent_op(
        &self,
        w: &mut Worker,
        bytenr: u64,
        op: ExtentOp,
    ) -> Result<(), ModelError> {
        let fed = self
            .extent_tree
            .run_extent_op(bytenr, op, &mut w.m, self.ws(w.id))?;
        w.m.extent_ops_run += 1;
        self.queue_own_refs(w, &fed)
    }

    /// The delayed refs a walk of the extent tree queued on the tree's own blocks
    /// (`btrfs_alloc_tree_block` / `btrfs_free_tree_block` from `btrfs_cow_block` and the
    /// splits), through the add path. They reserve no delayed-refs space: the kernel charges
    /// them to the running transaction's `delayed_refs_rsv`, refilled from the global
    /// reserve, never waiting in a runner (§4.7).
    fn queue_own_refs(&self, w: &mut Worker, fed: &[OwnRef]) -> Result<(), ModelError> {
        if fed.is_empty() {
            return Ok(());
        }
        let mut h = TransHandle::default();
        for f in fed {
            let action = if f.alloc {
                AddAction::AddExtent
            } else {
                AddAction::Drop
            };
            let mut r = RefSpec::tree(
                f.bytenr,
                self.params.nodesize.into(),
                action,
                0,
                EXTENT_TREE_OBJECTID,
            );
            r.owner = RefOwner::Tree { level: f.level };
            r.for_cow = true;
            // The new block's key and flags (`btrfs_alloc_tree_block`'s extent op).
            let op = f.alloc.then_some(ExtentOp {
                flags: None,
                key: Some(f.first_key),
            });
            self.add_ref_inner(w, &mut h, &r, op, false)?;
            w.m.self_fed_refs += 1;
        }
        Ok(())
    }

    /// `n` steps of kind `c` done now by the calling task, under whatever locks it holds:
    /// virtual time on a virtual CPU ([`crate::cost`]); on a real thread the work takes its
    /// own time, plus `Params::walk_cost_ns` of busy-work per node walked (§7.2 `c_walk`).
    #[inline]
    pub(crate) fn charge(&self, c: Cost, n: u64) {
        if exec::in_virtual() {
            exec::work(self.costs[c as usize] * n);
        } else if c == Cost::WalkNode && self.params.walk_cost_ns != 0 {
            exec::burn(self.params.walk_cost_ns * n);
        }
    }

    /// A new transaction (§1.1 initialisation): empty tree, counters and cursor 0,
    /// `flushing` 0, gate at 0, `tree_mod_seq` reset. Callers guarantee quiescence.
    pub fn start_transaction(&self, w: &mut Worker) -> Result<(), ModelError> {
        let mut g = self.lock_root(w);
        if !g.heads.is_empty() {
            return Err(ModelError::Bug(format!(
                "new transaction with {} heads queued",
                g.heads.len()
            )));
        }
        g.c = Counters::default();
        self.root.num_entries.store(0, Ordering::Relaxed);
        self.publish(&g.c);
        drop(g);
        self.root.flushing.store(false, Ordering::SeqCst);
        self.root.gate.reset();
        self.tree_mod.reset();
        Ok(())
    }

    /// §1.5 / §7.4 counter checks against values recomputed from the tree. Only meaningful
    /// when no runner is mid-flight (the engine calls it at commit, with everyone parked).
    pub fn check_counters(&self, w: &mut Worker) -> Result<(), ModelError> {
        let g = self.lock_root(w);
        let mut entries = 0u64;
        let mut ready = 0u64;
        let mut errs = Vec::new();
        for (b, head) in &g.heads {
            let hi = self.lock_head(head, w);
            entries += 1 + hi.refs.len() as u64;
            if !head.claimed() {
                ready += 1;
            }
            if hi.ref_mod != hi.queued_net() {
                errs.push(format!(
                    "head {b}: ref_mod {} != queued net {} (§1.5)",
                    hi.ref_mod,
                    hi.queued_net()
                ));
            }
            if !head.in_tree() {
                errs.push(format!("head {b}: in the tree but in_tree = 0"));
            }
        }
        let num_entries = self.root.num_entries.load(Ordering::Relaxed);
        if entries != num_entries {
            errs.push(format!(
                "num_entries {num_entries} != recomputed {entries} (§1.5)"
            ));
        }
        if ready != g.c.num_heads_ready {
            errs.push(format!(
                "num_heads_ready {} != recomputed {ready} (§1.5)",
                g.c.num_heads_ready
            ));
        }
        // Modern `btrfs_delete_ref_head` decrements `num_heads` (§4.2); 3.x never does
        // (§1.1 item 4), so only modern's can be recounted.
        if self.era == Era::Modern && g.c.num_heads != g.heads.len() as u64 {
            errs.push(format!(
                "num_heads {} != heads in the tree {} (§4.2)",
                g.c.num_heads,
                g.heads.len()
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Bug(errs.join("; ")))
        }
    }

    /// Queue depth under the lock (tests, assertions).
    pub fn counters(&self, w: &mut Worker) -> (Counters, usize) {
        let g = self.lock_root(w);
        (g.c, g.heads.len())
    }
}
