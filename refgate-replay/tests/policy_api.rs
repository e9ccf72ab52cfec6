//! A policy written outside the crate with nothing but the public API (`policy::context`):
//! its own worker and callers reach the report, and a worker's failure names the worker, on
//! both engines.

use refgate_replay::error::{FailedIn, RunFailure};
use refgate_replay::policy::context::*;
use refgate_replay::policy::{Modern, Registry};
use refgate_replay::workload::{SynthParams, synthetic};
use refgate_replay::{Config, Engine, Params, ReplayError, live::Live, replay};
use std::sync::Arc;

/// 6.x plus a worker of its own, which runs what exists now once and, if asked to, then
/// fails.
struct Extra<const FAIL: bool>;

const SWEEPER: WorkerKind = WorkerKind {
    name: "sweeper worker",
    caller: Caller::kernel_worker("sweeper"),
};
const NEVER: Caller = Caller::task("never_called");

static EXTRA: PolicyInfo = PolicyInfo {
    name: "modern-sweeper",
    aliases: &[],
    kernels: "test",
    about: "modern plus a sweeper",
    headline: false,
    make: || Box::new(Extra::<false>),
};

impl<const FAIL: bool> Policy for Extra<FAIL> {
    fn info(&self) -> &'static PolicyInfo {
        &EXTRA
    }
    fn era(&self) -> Era {
        Era::Modern
    }
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        Modern.end_transaction(fs, w, h)
    }
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<bool, ModelError> {
        Modern.should_end_transaction(fs, w, h)
    }
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        Modern.commit_pre(fs, w, h)
    }
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        Modern.commit_exclusive(fs, w, h)
    }
    fn run_explicit(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
        arg: u64,
    ) -> Result<u64, ModelError> {
        Modern.run_explicit(fs, w, h, arg)
    }
    fn callers(&self) -> &'static [Caller] {
        &[NEVER]
    }
    fn workers(&self) -> &'static [WorkerKind] {
        &[Modern::ASYNC_RECLAIM, Modern::PREEMPTIVE_RECLAIM, SWEEPER]
    }
    fn run_worker(&self, fs: &FsModel, w: &mut Worker, kind: WorkerKind) -> Result<(), ModelError> {
        if kind != SWEEPER {
            return Modern.run_worker(fs, w, kind);
        }
        if FAIL {
            return Err(ModelError::Bug("the sweeper gave up".into()));
        }
        // Wait for the first preemptive request, sweep head by head, then stop.
        if let Flush::Bytes(_) = fs.space.next_preemptive_flush()
            && fs.space.join()
        {
            let mut h = TransHandle::default();
            let r = (|| {
                while run_next_head(fs, w, &mut h)?.is_some() {}
                Ok(())
            })();
            fs.space.leave();
            r?;
        }
        Ok(())
    }
}

fn cfg(engine: Engine) -> Config {
    Config {
        engine,
        cpus: 4,
        params: Params {
            // A pool small enough that writers wait and the workers are asked to flush
            // (as tests/vcpu.rs's §4.7 test).
            metadata_pool_bytes: 8 * (256 << 10),
            ..Params::default()
        },
        sim_seed: 0,
        pace: false,
        timeline: false,
    }
}

fn work() -> refgate_replay::Workload {
    synthetic(&SynthParams {
        tasks: 12,
        transactions: 3,
        ops_per_handle: 32,
        ..SynthParams::default()
    })
}

#[test]
fn a_policy_from_outside_names_its_workers_and_callers_in_the_report() {
    let mut reg = Registry::builtin();
    reg.register(&EXTRA).unwrap();
    let p = (reg.lookup("modern-sweeper").unwrap().make)();
    for engine in [Engine::Virtual, Engine::Threads] {
        let c = cfg(engine);
        let r = replay(&work(), p.as_ref(), &c, Arc::new(Live::new(c.cpus))).expect("§7.4 holds");
        assert_eq!(
            r.workers,
            [
                "async reclaim worker",
                "preemptive reclaim worker",
                "sweeper worker"
            ]
        );
        let names: Vec<_> = r.refs_run_by_caller.iter().map(|(c, _)| c.name()).collect();
        assert!(
            names.contains(&"never_called") && names.contains(&"sweeper"),
            "{names:?}"
        );
        assert_eq!(r.run_calls_by_caller.get(NEVER), 0);
        // run_next_head runs refs for the worker's caller but is not a run call of its own.
        assert!(r.refs_run_by_caller.get(SWEEPER.caller) > 0, "{engine:?}");
        assert_eq!(r.run_calls_by_caller.get(SWEEPER.caller), 0, "{engine:?}");
        assert_eq!(
            r.refs_run_by_caller.of_kind(CallerKind::KernelWorker)
                + r.refs_run_by_caller.of_kind(CallerKind::Commit)
                + r.refs_run_by_caller.of_kind(CallerKind::Task),
            r.refs_run,
            "{engine:?}"
        );
    }
}

#[test]
fn a_failing_worker_of_its_own_is_named_in_the_error() {
    for engine in [Engine::Virtual, Engine::Threads] {
        let c = cfg(engine);
        let e = replay(&work(), &Extra::<true>, &c, Arc::new(Live::new(c.cpus))).unwrap_err();
        let ReplayError::Model { errors, .. } = &e else {
            panic!("{e}")
        };
        assert!(
            errors.iter().any(|f| matches!(
                f,
                RunFailure::Model { at: FailedIn::Worker("sweeper worker"), error: ModelError::Bug(m) }
                    if m == "the sweeper gave up"
            )),
            "{engine:?}: {e}"
        );
    }
}
