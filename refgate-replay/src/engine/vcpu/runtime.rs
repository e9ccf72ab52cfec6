//! The virtual engine's side of the runtime seam ([`crate::exec::Runtime`]): what each of
//! the model's scheduling points does to the running task and its virtual CPU.

use super::{Acct, Req, Sched, TaskCtx};
use crate::cost::Cost;
use crate::exec::{Runtime, SLEEP_FROM_NS};
use crate::live::WaitRole;

impl TaskCtx {
    fn with_sched<R>(&self, f: impl FnOnce(&mut Sched) -> R) -> R {
        f(&mut self.sched().borrow_mut())
    }
}

impl Runtime for TaskCtx {
    fn now_ns(&self) -> u64 {
        self.with_sched(|s| s.now)
    }

    fn work(&self, ns: u64) {
        self.busy(ns, Acct::Work);
    }

    /// A context switch's worth of time, so that polling advances virtual time and lets the
    /// tasks it waits for run.
    fn cond_resched(&self) {
        let ns = self.with_sched(|s| s.cost(Cost::ContextSwitch));
        self.busy(ns, Acct::Switch);
    }

    fn think(&self, ns: u64) {
        if ns >= SLEEP_FROM_NS {
            self.suspend(Req::SleepFor(ns));
        } else {
            self.busy(ns, Acct::Work);
        }
    }

    fn yield_cpu(&self) {
        if self.with_sched(|s| s.has_runnable(self.cpu)) {
            self.suspend(Req::Yield);
        }
    }

    fn spin_until_handed(&self, addr: usize, role: WaitRole) -> u64 {
        let t0 = self.with_sched(|s| {
            s.enqueue_waiter(addr, self.task, true);
            s.now
        });
        self.suspend(Req::Spin(role));
        self.with_sched(|s| s.now - t0)
    }

    fn release_spinners(&self, addr: usize) {
        self.with_sched(|s| s.release_all(addr));
    }

    fn handover(&self, addr: usize) -> bool {
        self.with_sched(|s| s.handover(addr))
    }

    fn sleep_for_lock(&self, addr: usize, front: bool) {
        self.with_sched(|s| s.enqueue_waiter_at(addr, self.task, front));
        self.suspend(Req::Sleep);
    }

    fn wake_one(&self, addr: usize) {
        self.with_sched(|s| s.wake_one(addr));
    }

    fn sleep_on(&self, addr: usize) {
        self.with_sched(|s| s.enqueue_waiter(addr, self.task, false));
        self.suspend(Req::Sleep);
    }

    fn wake_all(&self, addr: usize) -> usize {
        self.with_sched(|s| s.wake_all(addr))
    }

    fn run_call_done(&self, start: u64) {
        self.with_sched(|s| {
            let now = s.now;
            if let Some(tl) = &mut s.timeline {
                tl.run_call(self.cpu, start, now);
            }
        });
    }
}
