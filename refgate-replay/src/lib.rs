//! refgate-replay: a userspace reimplementation of the btrfs delayed-ref machinery as
//! specified in `docs/kernel-delayed-refs.md` (cited as §N below), its runner policies, a
//! synthetic/recorded workload model and a multi-threaded replay engine.
//!
//! Entry points: [`engine::run`] / [`engine::run_live`] with a [`workload::Workload`], a
//! [`policy::Policy`] from [`policy::by_name`] and [`params::Params`].

pub mod cost;
pub mod engine;
pub mod error;
pub mod exec;
pub mod extent_tree;
pub mod gate;
pub mod head;
pub mod invariant;
pub mod live;
pub mod metrics;
pub mod params;
pub mod policy;
pub mod refkey;
pub mod root;
pub mod run_modern;
pub mod run_v3;
pub mod space;
pub mod spinlock;
mod sync;
pub mod trace_workload;
pub mod validate;
pub mod vcpu;
pub mod vecmap;
mod waitqueue;
pub mod workload;
pub mod workload_file;

pub use engine::{Config, Engine, Report, replay, run, run_live};
pub use error::{ModelError, ReplayError};
pub use invariant::InvariantViolation;
pub use params::Params;
pub use policy::{Policy, by_name};
pub use workload::{SynthParams, Workload};
