//! Naming the role of a contended lock from the kernel stack taken at `contention_begin`.
//!
//! Which lock a `lock_addr` is cannot be read from the lock event itself (spec §5.6: addresses
//! of head mutexes are per allocation), so refgate judges it by who was taking it: the innermost
//! btrfs function on the stack, the lock type flags, and whether a delayed-ref run is below it.
use std::collections::HashMap;

use refgate_common::event::LockRole;

use super::kallsyms::Kallsyms;

/// `LCB_F_*` (spec §5.6).
pub const LCB_F_SPIN: u32 = 1 << 0;
pub const LCB_F_MUTEX: u32 = 1 << 5;

/// Functions that take `delayed_refs->lock` or a head's spinlock (add path §1.4/§4.3,
/// selection §4.4, cleanup). Several are inlined on some kernels; absent names cost nothing.
const DELAYED_REF_LOCKERS: &[&str] = &[
    "btrfs_select_ref_head",
    "add_delayed_ref",
    "add_delayed_ref_head",
    "btrfs_add_delayed_tree_ref",
    "btrfs_add_delayed_data_ref",
    "btrfs_add_delayed_extent_op",
    "__btrfs_run_delayed_refs",
    "btrfs_run_delayed_refs",
    "btrfs_run_delayed_refs_for_head",
    "cleanup_ref_head",
    "btrfs_delete_ref_head",
    "btrfs_merge_delayed_refs",
    "btrfs_unselect_ref_head",
    "check_ref_cleanup",
    "btrfs_lookup_extent_info",
    "btrfs_delayed_ref_lock",
    "btrfs_find_ref_cluster",
    "run_clustered_refs",
];

/// Functions that block on a head's `mutex` (§2.4, §2.9).
const HEAD_MUTEX_TAKERS: &[&str] = &[
    "btrfs_delayed_ref_lock",
    "btrfs_lookup_extent_info",
    "check_delayed_ref",
    "btrfs_select_ref_head",
    "__btrfs_run_delayed_refs",
    "btrfs_run_delayed_refs",
];

/// Extent-buffer lock entry points (§5.5).
const TREE_LOCKERS: &[&str] = &[
    "btrfs_tree_lock_nested",
    "btrfs_tree_read_lock_nested",
    "btrfs_tree_lock",
    "btrfs_tree_read_lock",
    "__btrfs_tree_lock",
    "__btrfs_tree_read_lock",
    "btrfs_lock_root_node",
    "btrfs_read_lock_root_node",
    "btrfs_search_slot",
    "btrfs_try_tree_write_lock",
    "btrfs_try_tree_read_lock",
];

/// The delayed-ref run path that updates the extent tree (§2.7, §4.4).
const REF_RUNNERS: &[&str] = &[
    "__btrfs_run_delayed_refs",
    "btrfs_run_delayed_refs",
    "btrfs_run_delayed_refs_for_head",
    "run_one_delayed_ref",
    "run_delayed_tree_ref",
    "run_delayed_data_ref",
    "run_delayed_extent_op",
    "__btrfs_free_extent",
    "__btrfs_inc_extent_ref",
    "alloc_reserved_tree_block",
    "alloc_reserved_file_extent",
    "cleanup_ref_head",
    "run_clustered_refs",
];

/// Classifies stacks, caching the verdict per (flags, stack).
pub struct RoleNamer {
    ksyms: Kallsyms,
    btrfs: (u64, u64),
    cache: HashMap<(u32, Vec<u64>), LockRole>,
}

impl RoleNamer {
    pub fn new(ksyms: Kallsyms, btrfs: (u64, u64)) -> Self {
        RoleNamer {
            ksyms,
            btrfs,
            cache: HashMap::new(),
        }
    }

    pub fn role(&mut self, flags: u32, stack: &[u64]) -> LockRole {
        if let Some(r) = self.cache.get(&(flags, stack.to_vec())) {
            return *r;
        }
        let names: Vec<&str> = stack
            .iter()
            .filter(|&&ip| ip >= self.btrfs.0 && ip < self.btrfs.1)
            .filter_map(|&ip| self.ksyms.name_of(ip))
            .collect();
        let r = classify(flags, &names);
        // `-vv` shows each new stack's verdict, so a surprising role can be checked by eye.
        log::debug!("lock role {r:?} (flags {flags:#x}) for btrfs frames {names:?}");
        self.cache.insert((flags, stack.to_vec()), r);
        r
    }
}

/// `btrfs_frames`: names of the btrfs functions on the stack, innermost first.
pub fn classify(flags: u32, btrfs_frames: &[&str]) -> LockRole {
    let Some(&inner) = btrfs_frames.first() else {
        return LockRole::OtherBtrfs;
    };
    if flags & LCB_F_MUTEX != 0 && HEAD_MUTEX_TAKERS.contains(&inner) {
        return LockRole::HeadMutex;
    }
    if flags & LCB_F_SPIN != 0 && flags & LCB_F_MUTEX == 0 && DELAYED_REF_LOCKERS.contains(&inner) {
        return LockRole::DelayedRefRoot;
    }
    if TREE_LOCKERS.contains(&inner) && btrfs_frames.iter().any(|f| REF_RUNNERS.contains(f)) {
        return LockRole::ExtentTree;
    }
    LockRole::OtherBtrfs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_stacks() {
        assert_eq!(
            classify(
                LCB_F_SPIN,
                &["btrfs_select_ref_head", "__btrfs_run_delayed_refs"]
            ),
            LockRole::DelayedRefRoot
        );
        assert_eq!(
            classify(
                LCB_F_MUTEX,
                &["btrfs_delayed_ref_lock", "btrfs_select_ref_head"]
            ),
            LockRole::HeadMutex
        );
        assert_eq!(
            classify(
                2,
                &[
                    "btrfs_tree_lock_nested",
                    "btrfs_search_slot",
                    "__btrfs_free_extent",
                    "__btrfs_run_delayed_refs"
                ]
            ),
            LockRole::ExtentTree
        );
        // An fs-tree search outside any delayed-ref run is just btrfs.
        assert_eq!(
            classify(
                2,
                &[
                    "btrfs_tree_lock_nested",
                    "btrfs_search_slot",
                    "btrfs_lookup_inode"
                ]
            ),
            LockRole::OtherBtrfs
        );
        assert_eq!(classify(LCB_F_SPIN, &[]), LockRole::OtherBtrfs);
    }
}
