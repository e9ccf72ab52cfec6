//! refgate-replay: a userspace reimplementation of the btrfs delayed-ref machinery as
//! specified in `docs/kernel-delayed-refs.md` (cited as §N below), its runner policies, a
//! synthetic/recorded workload model and a multi-threaded replay engine.
//!
//! Entry points: [`replay`] (either engine, by [`Config`]), [`run`] / [`run_live`] (real
//! threads) with a [`workload::Workload`], a
//! [`policy::Policy`] from [`policy::by_name`] and [`params::Params`].
//!
//! ```
//! use refgate_replay::workload::{SynthParams, synthetic};
//! use refgate_replay::{Config, Engine, Params, by_name, live::Live, replay};
//! use std::sync::Arc;
//!
//! // A small synthetic workload (a trace gives one through `trace_workload`).
//! let w = synthetic(&SynthParams { tasks: 4, transactions: 2, ..SynthParams::default() });
//! let cfg = Config {
//!     engine: Engine::Virtual,
//!     cpus: 8,
//!     params: Params::default(),
//!     sim_seed: 0,
//!     pace: false,
//!     timeline: false,
//! };
//! let seed = by_name("3.9").expect("a kernel version names its policy");
//! let r = replay(&w, seed.as_ref(), &cfg, Arc::new(Live::new(cfg.cpus)))?;
//! assert_eq!(r.policy, "seed");
//! assert!(r.invariant.extents_checked > 0, "§7.4 checked on the final extent tree");
//! println!("{} refs run; delayed_refs->lock spun {:.6} s", r.refs_run, r.dr_lock.spin_cpu_seconds);
//! # Ok::<(), refgate_replay::ReplayError>(())
//! ```
//!
//! A policy written outside the crate: see [`policy`].
//!
//! # Layers
//!
//! Each module imports only from its own layer and the layers below it (`cargo xtask layers`
//! checks every `crate::` path against this list, which is its only copy), bottom first:
//!
//! 1. **seam**: `exec`, `sync`, `vecmap`, `cost`, `params`, `error`, `refkey`, `metrics`, `live`
//!    — the runtime seam through which the model takes time, waits, wakes and reads the clock
//!    (an engine installs its runtime behind it), and the vocabulary every layer shares.
//! 2. **model**: `spinlock`, `tree_lock`, `waitqueue`, `head`, `gate`, `space`, `btree`,
//!    `extent_tree`, `root`,
//!    `run_v3`, `run_modern` — the kernel's delayed-ref machinery, calling only the seam.
//! 3. **policies**: `policy`, `workload` — the runner policies over the model, and the
//!    workload (tasks, transactions, handles) an engine runs under one.
//! 4. **engines**: `engine` — `engine::threads` (real threads) and `engine::vcpu` (virtual
//!    CPUs in virtual time); the virtual CPUs implement the seam (`exec::Runtime`, installed
//!    around each task), real threads take host time and real waits through it.
//! 5. **on top**: `report`, `invariant`, `validate`, `trace_workload`, `workload_file` — a
//!    replay's report and §7.4 verdict, validation against a recording, and the conversions
//!    of traces and workload files into workloads.

// The public API is documented; the internals feature's white-box view is not an API.
#![cfg_attr(not(feature = "internals"), warn(missing_docs))]

// The library's API: replay a workload under a policy on an engine and read the report
// (`report`, `engine`, `workload`, `trace_workload`, `workload_file`, `params`, `cost`,
// `live`, `metrics`, `validate`, `error`, `refkey`), and write a policy (`policy`, which
// re-exports the model types its hooks receive). `tests/public_api.rs` keeps the list.
pub mod cost;
pub mod engine;
pub mod error;
pub mod live;
pub mod metrics;
pub mod params;
pub mod policy;
pub mod refkey;
pub mod report;
pub mod trace_workload;
pub mod validate;
pub mod workload;
pub mod workload_file;

// The model's own modules: private (a policy reaches what it needs through `policy`'s
// re-exports).
mod btree;
mod exec;
mod extent_tree;
mod gate;
mod head;
mod invariant;
mod root;
mod run_modern;
mod run_v3;
mod space;
mod spinlock;
mod sync;
mod tree_lock;
mod vecmap;
mod waitqueue;

/// White-box access to the model's modules for this crate's own tests, loom model and
/// benchmarks (the `internals` feature, which only the crate's self dev-dependency enables;
/// not an API). Each module here re-exports its namesake's public items.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub mod exec {
        pub use crate::exec::*;
    }
    pub mod btree {
        pub use crate::btree::*;
    }
    pub mod extent_tree {
        pub use crate::extent_tree::*;
    }
    pub mod gate {
        pub use crate::gate::*;
    }
    pub mod head {
        pub use crate::head::*;
    }
    pub mod invariant {
        pub use crate::invariant::*;
    }
    pub mod root {
        pub use crate::root::*;
    }
    pub mod run_modern {
        pub use crate::run_modern::*;
    }
    pub mod run_v3 {
        pub use crate::run_v3::*;
    }
    pub mod space {
        pub use crate::space::*;
    }
    pub mod spinlock {
        pub use crate::spinlock::*;
    }
    pub mod vecmap {
        pub use crate::vecmap::*;
    }
}

pub use engine::{Config, Engine};
pub use error::{InvariantViolation, ModelError, ReplayError};
pub use params::Params;
pub use policy::{Policy, by_name};
pub use report::{Report, replay, run, run_live};
pub use workload::{SynthParams, Workload};
