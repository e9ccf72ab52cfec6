//! The primitives the seed gate is built on, swapped for loom's under `--cfg loom` so the
//! wait/wake protocol can be model-checked (tests/loom_gate.rs).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI32, AtomicU32, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI32, AtomicU32, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex};
