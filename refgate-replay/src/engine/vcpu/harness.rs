//! Tests only: model code run as tasks on virtual CPUs without a workload, for timelines
//! computed by hand (the B-tree's lock coupling, `btree::tests`).

use super::sched::{Event, TaskId};
use super::{Req, Sched, TaskCtx};
use crate::cost::CostModel;
use crate::exec;
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::cell::RefCell;

/// Runs body `i` as task `i` on CPU `i mod cpus` (default costs, sim seed 0) until every
/// body returns; panics on a deadlock. Returns each body's result and the final clock.
pub(crate) fn run_bodies<'a, R: 'a>(
    cpus: usize,
    bodies: Vec<Box<dyn FnOnce() -> R + 'a>>,
) -> (Vec<R>, u64) {
    let task_cpus: Vec<u32> = (0..bodies.len()).map(|i| (i % cpus) as u32).collect();
    let sched = RefCell::new(Sched::new(cpus, &task_cpus, &CostModel::defaults(), 0));
    let results: RefCell<Vec<Option<R>>> = RefCell::new((0..bodies.len()).map(|_| None).collect());
    let sched_ptr = &sched as *const RefCell<Sched>;
    let mut tasks: Vec<Coroutine<(), Req, (), DefaultStack>> = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let cpu = task_cpus[i];
        let results = &results;
        let stack = DefaultStack::new(super::STACK_BYTES).expect("a coroutine stack");
        let co = move |y: &Yielder<(), Req>, ()| {
            let r = TaskCtx::run(y, sched_ptr, i as TaskId, cpu, body);
            results.borrow_mut()[i] = Some(r);
        };
        // SAFETY: the bodies borrow `results`, `sched` and what the caller lent for `'a`;
        // every coroutine is dropped before this function returns (below).
        tasks.push(unsafe { Coroutine::with_stack_unchecked(stack, co) });
    }
    loop {
        let ev = sched.borrow_mut().pop();
        match ev {
            Some(Event::Timer(t)) => sched.borrow_mut().wake(t),
            Some(Event::Cpu(cpu)) => {
                let t = sched.borrow().current(cpu).expect("a CPU event has a task");
                let r = tasks[t as usize].resume(());
                // SAFETY: uninstalling (the coroutine is suspended or done).
                unsafe { exec::set_current(None) };
                match r {
                    CoroutineResult::Yield(req) => sched.borrow_mut().suspended(cpu, t, req),
                    CoroutineResult::Return(()) => sched.borrow_mut().finished(cpu),
                }
            }
            None => break,
        }
    }
    let now = sched.borrow().now;
    drop(tasks);
    let out: Vec<R> = results
        .into_inner()
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| panic!("task {i} never finished (deadlock)")))
        .collect();
    (out, now)
}
