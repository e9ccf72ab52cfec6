//! Refuse, before any work, a replay the machine cannot hold (issue: limits). The engines
//! allocate per task (a coroutine stack, its metrics) and per queued ref; a replica count or a
//! CPU count typed by mistake would otherwise run for half a minute and then fail to
//! allocate, or be killed by the OOM killer.

use anyhow::{Result, bail};

/// Resident memory per task, and per add-API call, of a virtual replay: a least-squares fit of
/// the maximum RSS of `refgate replay --threads 32 --replicate N` on both bundled samples
/// (release build, 2026-12-04, `/usr/bin/time -f %M`): scratch-6.18 grows 3,966 KB per
/// replica (22 tasks, 17,451 adds), debian-6.1 974 KB (23 tasks, 1,971 adds), which solves to
/// 25.6 KB per task and 200 bytes per add; rounded up by a quarter here.
const BYTES_PER_TASK: u64 = 32 << 10;
const BYTES_PER_ADD: u64 = 256;
/// The process itself, the trace's records and the per-CPU state, generously.
const BYTES_BASE: u64 = 64 << 20;
/// Address space a task reserves (the virtual engine's coroutine stack; a real thread's is
/// larger but there are only `--threads` of them), for `RLIMIT_AS`.
const STACK_RESERVED: u64 = 256 << 10;

/// What a replay of `tasks` tasks making `adds` add-API calls needs (bytes, resident).
pub fn estimate(tasks: u64, adds: u64) -> u64 {
    BYTES_BASE
        .saturating_add(tasks.saturating_mul(BYTES_PER_TASK))
        .saturating_add(adds.saturating_mul(BYTES_PER_ADD))
}

/// What the process may use: the least of `MemAvailable` and the cgroup's `memory.max` less
/// its `memory.current` (bytes); `None` if neither is known.
fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = || -> Option<u64> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
        let dir = std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
        let max: u64 = std::fs::read_to_string(dir.join("memory.max"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cur: u64 = std::fs::read_to_string(dir.join("memory.current"))
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        Some(max.saturating_sub(cur))
    };
    match (meminfo, cgroup()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `RLIMIT_AS` (bytes), if set.
fn address_space_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// `vm.max_map_count`: how many mappings the process may have.
fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Mappings a virtual task's coroutine stack takes: the stack and its guard page.
const MAPS_PER_TASK: u64 = 2;
/// Mappings left for everything else (libraries, heap arenas, the trace).
const MAPS_HEADROOM: u64 = 4096;

/// Refuses a replay of `tasks` tasks and `adds` adds that cannot fit, saying how much it needs,
/// how much there is, and which option to lower (`what` names the run, e.g. "this replay").
/// `coroutines`: the virtual engine, which gives every task a stack of its own.
/// `cpus_option`: the option that sets the CPU count (`--threads`, compare's `--cpus`).
pub fn check(
    what: &str,
    (tasks, adds): (u64, u64),
    copies: usize,
    coroutines: bool,
    cpus_option: &str,
) -> Result<()> {
    let need = estimate(tasks, adds);
    let lower = if copies > 1 {
        format!("lower --replicate (now {copies}) or {cpus_option}")
    } else {
        format!("lower {cpus_option} or replay a shorter trace")
    };
    if let Some(have) = available()
        && need > have
    {
        bail!(
            "{what} would need about {} of memory ({tasks} tasks, {adds} ref adds) and {} is \
             available; {lower}",
            crate::units::bytes(need),
            crate::units::bytes(have)
        );
    }
    let maps = tasks
        .saturating_mul(MAPS_PER_TASK)
        .saturating_add(MAPS_HEADROOM);
    if coroutines
        && let Some(limit) = max_map_count()
        && maps > limit
    {
        bail!(
            "{what} would map a coroutine stack for each of its {tasks} tasks ({maps} \
             mappings with a guard page each) and vm.max_map_count allows {limit}; {lower}, or \
             raise the limit (sysctl vm.max_map_count)"
        );
    }
    let reserved = need.saturating_add(tasks.saturating_mul(STACK_RESERVED));
    if let Some(limit) = address_space_limit()
        && reserved > limit
    {
        bail!(
            "{what} would reserve about {} of address space ({tasks} tasks, a 256 KiB stack \
             each) and RLIMIT_AS (ulimit -v) allows {}; {lower}, or raise the limit",
            crate::units::bytes(reserved),
            crate::units::bytes(limit)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fit reproduces both measured samples within a third, and huge inputs saturate
    /// instead of overflowing.
    #[test]
    fn the_estimate_follows_the_measurements_and_saturates() {
        let per_replica = |tasks, adds| estimate(tasks, adds) - BYTES_BASE;
        let scratch = per_replica(22, 17_451) as f64 / 1024.0;
        let debian = per_replica(23, 1_971) as f64 / 1024.0;
        assert!((3966.0..3966.0 * 1.34).contains(&scratch), "{scratch}");
        assert!((974.0..974.0 * 1.34).contains(&debian), "{debian}");
        assert_eq!(estimate(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_replay_too_big_for_the_machine_is_refused_with_what_to_lower() {
        let e = check(
            "this replay",
            (22_000_000, 17_451_000_000),
            1_000_000,
            true,
            "--threads",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--replicate (now 1000000)"), "{e}");
        assert!(
            ["would need about", "address space", "max_map_count"]
                .iter()
                .any(|w| e.contains(w)),
            "{e}"
        );
        check("this replay", (22, 17_451), 1, true, "--threads").expect("the sample fits");
    }
}
