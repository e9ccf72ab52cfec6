//! Loading refgate's eBPF object and attaching what this kernel allows, strongest first
//! (docs/design.md "Recording"): kprobes on `btrfs_run_delayed_refs` where the kernel has them,
//! always the tracepoints. Every choice is reported and goes into the trace header.
use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{KProbe, TracePoint},
};

use super::{kallsyms::Kallsyms, layouts::Layouts};

/// The eBPF object built by build.rs (aya-build).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/refgate"));

/// One probe refgate tried, and what came of it.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    /// As the kernel names it: `btrfs:add_delayed_tree_ref`, `kprobe:btrfs_run_delayed_refs`.
    pub name: String,
    /// `tracepoint`, `kprobe`, `kretprobe`, `fentry`.
    pub kind: &'static str,
    pub attached: bool,
    /// Why not, in plain words (empty when attached).
    pub note: String,
}

/// (eBPF program, tracepoint category, tracepoint name)
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("add_delayed_tree_ref", "btrfs", "add_delayed_tree_ref"),
    ("add_delayed_data_ref", "btrfs", "add_delayed_data_ref"),
    ("add_delayed_ref_head", "btrfs", "add_delayed_ref_head"),
    ("run_delayed_tree_ref", "btrfs", "run_delayed_tree_ref"),
    ("run_delayed_data_ref", "btrfs", "run_delayed_data_ref"),
    ("run_delayed_ref_head", "btrfs", "run_delayed_ref_head"),
    (
        "btrfs_transaction_commit",
        "btrfs",
        "btrfs_transaction_commit",
    ),
    ("btrfs_tree_lock", "btrfs", "btrfs_tree_lock"),
];

/// The lock tracepoints (eBPF program = tracepoint name). Kernels before 5.19 lack them:
/// recording then goes on without lock waits.
/// `contention_end` goes first: a wait begun between the two attaches would otherwise leave
/// an interval whose end was never seen, which a later wait of the same task on the same lock
/// would inherit.
pub const LOCK_TRACEPOINTS: &[&str] = &["contention_end", "contention_begin"];

pub struct Config<'a> {
    pub layouts: &'a Layouts,
    pub filter_fsid: Option<[u8; 16]>,
    pub btrfs_text: (u64, u64),
    pub ksyms: &'a Kallsyms,
    /// Kernel stack frames taken per contended lock (at most `STACK_DEPTH`).
    pub stack_frames: u32,
    /// Also attach the empty `probe_floor` program (`record --probe-cost`).
    pub probe_floor: bool,
}

/// The tracepoint the empty calibration program `probe_floor` shares with a real one.
pub const PROBE_FLOOR_TRACEPOINT: (&str, &str) = ("btrfs", "btrfs_tree_lock");

/// Loads the object with its configuration globals and attaches every probe it can.
pub fn load_and_attach(cfg: &Config) -> Result<(Ebpf, Vec<ProbeStatus>)> {
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this refgate binary was built without its eBPF programs (AYA_BUILD_SKIP was set). \
             Rebuild it with `cargo xtask setup && cargo build --release` to record."
        );
    }
    let mut ebpf = load(cfg)?;
    let probes = attach_all(&mut ebpf, cfg)?;
    Ok((ebpf, probes))
}

/// Loads the object into the kernel with the configuration globals written first (the
/// programs read them as constants: offsets from tracefs, the fsid filter, btrfs's text).
fn load(cfg: &Config) -> Result<Ebpf> {
    let (on, lo, hi) = match cfg.filter_fsid {
        Some(f) => (
            1u8,
            u64::from_ne_bytes(f[..8].try_into().expect("8")),
            u64::from_ne_bytes(f[8..].try_into().expect("8")),
        ),
        None => (0u8, 0, 0),
    };
    let l = cfg.layouts;
    let (fsid_off, owner_off) = (l.fsid_offset() as u32, l.tree_lock_owner_offset() as u32);
    // One global per btrfs program: how much of its record it may load (refgate-ebpf).
    let ends: Vec<(String, u32)> = l
        .record_ends()
        .iter()
        .map(|&(tp, end)| (format!("END_{}", tp.to_uppercase()), end))
        .collect();
    // Without lock tracepoints the lock programs are not attached; the globals keep zeros.
    let lock = l.lock.clone().unwrap_or_default();
    let mut loader = EbpfLoader::new();
    for (global, end) in &ends {
        loader.override_global(global.as_str(), end, true);
    }
    let ebpf = loader
        .override_global("FILTER_FSID_ON", &on, true)
        .override_global("FILTER_FSID_LO", &lo, true)
        .override_global("FILTER_FSID_HI", &hi, true)
        .override_global("FSID_OFF", &fsid_off, true)
        .override_global("TREE_LOCK_OWNER_OFF", &owner_off, true)
        .override_global("STACK_FRAMES", &cfg.stack_frames, true)
        .override_global("LOCK_ADDR_OFF", &lock.addr, true)
        .override_global("LOCK_FLAGS_OFF", &lock.flags, true)
        .override_global("LOCK_RET_OFF", &lock.ret, true)
        .override_global("END_CONTENTION_BEGIN", &lock.end_begin, true)
        .override_global("END_CONTENTION_END", &lock.end_end, true)
        .override_global("BTRFS_TEXT_LO", &cfg.btrfs_text.0, true)
        .override_global("BTRFS_TEXT_HI", &cfg.btrfs_text.1, true)
        .load(EBPF_OBJECT)
        .context(
            "loading refgate's eBPF programs into the kernel failed. refgate record needs root \
             (CAP_BPF, CAP_PERFMON) and a kernel with BPF ring buffers (5.8 or newer)",
        )?;
    Ok(ebpf)
}

/// Attaches every probe it can: the tracepoints (the btrfs ones are required), then the
/// lock tracepoints, kprobes and fentry, each reported as attached or why not.
fn attach_all(ebpf: &mut Ebpf, cfg: &Config) -> Result<Vec<ProbeStatus>> {
    let l = cfg.layouts;
    let mut probes = Vec::new();
    for &(prog, cat, name) in TRACEPOINTS {
        let res = attach_tracepoint(ebpf, prog, cat, name);
        probes.push(status(format!("{cat}:{name}"), "tracepoint", res));
    }
    // Tracepoints are the floor: without the delayed-ref ones there is nothing to record.
    if let Some(p) = probes
        .iter()
        .find(|p| !p.attached && p.name.starts_with("btrfs:"))
    {
        let verifier = if p.note.contains("Permission denied") {
            " The kernel's verifier could not prove that the program stays inside the \
             tracepoint record (refgate bounds its loads by a read-only length, which older \
             verifiers may not track); refgate is tested on Linux 6.1 and 6.18."
        } else {
            ""
        };
        bail!(
            "could not attach {}: {}. Is btrfs loaded (`modprobe btrfs`) and is this kernel 5.8 \
             or newer?{verifier}",
            p.name,
            p.note
        );
    }
    if cfg.probe_floor {
        let (cat, name) = PROBE_FLOOR_TRACEPOINT;
        if let Err(e) = attach_tracepoint(ebpf, "probe_floor", cat, name) {
            // Only the floor line of --probe-cost is missing then: record anyway.
            log::warn!("--probe-cost: no measurement floor ({e:#})");
        }
    }
    for &tp in LOCK_TRACEPOINTS {
        let full = format!("lock:{tp}");
        let res = match &l.lock {
            Err(why) => Err(anyhow::anyhow!(
                "{why}; recording goes on without lock waits"
            )),
            Ok(_) => attach_tracepoint(ebpf, tp, "lock", tp),
        };
        probes.push(status(full, "tracepoint", res));
    }
    let kprobes = attach_kprobes(ebpf, cfg.ksyms);
    let kprobe_run = kprobes
        .iter()
        .any(|p| p.attached && p.name == "kprobe:btrfs_run_delayed_refs");
    probes.extend(kprobes);
    probes.extend(attach_fentry(ebpf, cfg.ksyms, kprobe_run));
    Ok(probes)
}

fn attach_tracepoint(ebpf: &mut Ebpf, prog: &str, cat: &str, name: &str) -> Result<()> {
    let full = format!("{cat}:{name}");
    let p: &mut TracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing from the eBPF object"))?
        .try_into()?;
    p.load()
        .with_context(|| format!("the kernel refused to load the program for {full}"))?;
    p.attach(cat, name)
        .with_context(|| format!("attaching to {full}"))?;
    Ok(())
}

/// fentry/fexit on `btrfs_run_delayed_refs`, tried only where the kprobe pair is missing and
/// btrfs is built in (aya 0.14 looks the function up in vmlinux BTF, not in module BTF).
fn attach_fentry(ebpf: &mut Ebpf, ksyms: &Kallsyms, kprobe_attached: bool) -> Vec<ProbeStatus> {
    const FUNC: &str = "btrfs_run_delayed_refs";
    let why_not = if kprobe_attached {
        Some("not needed: the kprobe pair records the same calls".to_string())
    } else if ksyms.btrfs_is_module() {
        Some("btrfs is a module and aya 0.14 attaches fentry only to vmlinux functions".to_string())
    } else {
        None
    };
    [
        ("fentry_run_delayed_refs", "fentry"),
        ("fexit_run_delayed_refs", "fexit"),
    ]
    .iter()
    .map(|&(prog, kind)| {
        let res = match &why_not {
            Some(w) => Err(anyhow::anyhow!("{w}")),
            None => (|| -> Result<()> {
                let btf = aya::Btf::from_sys_fs().context("reading /sys/kernel/btf/vmlinux")?;
                let p = ebpf.program_mut(prog).context("program missing")?;
                match kind {
                    "fentry" => {
                        let p: &mut aya::programs::FEntry = p.try_into()?;
                        p.load(FUNC, &btf)
                            .context("the kernel refused to load it")?;
                        p.attach()?;
                    }
                    _ => {
                        let p: &mut aya::programs::FExit = p.try_into()?;
                        p.load(FUNC, &btf)
                            .context("the kernel refused to load it")?;
                        p.attach()?;
                    }
                }
                Ok(())
            })(),
        };
        status(format!("{kind}:{FUNC}"), kind, res)
    })
    .collect()
}

fn status(name: String, kind: &'static str, res: Result<()>) -> ProbeStatus {
    ProbeStatus {
        name,
        kind,
        attached: res.is_ok(),
        note: res.err().map(|e| format!("{e:#}")).unwrap_or_default(),
    }
}

/// (eBPF program, probe kind, kernel function): the call records of `btrfs_run_delayed_refs`
/// and the functions that bound a transaction handle (docs/design.md "Recording").
const KPROBES: &[(&str, &str, &str)] = &[
    ("btrfs_run_delayed_refs", "kprobe", "btrfs_run_delayed_refs"),
    (
        "btrfs_run_delayed_refs_ret",
        "kretprobe",
        "btrfs_run_delayed_refs",
    ),
    ("start_transaction_ret", "kretprobe", "start_transaction"),
    (
        "btrfs_end_transaction_entry",
        "kprobe",
        "__btrfs_end_transaction",
    ),
    (
        "btrfs_commit_transaction",
        "kprobe",
        "btrfs_commit_transaction",
    ),
    (
        "btrfs_commit_transaction_ret",
        "kretprobe",
        "btrfs_commit_transaction",
    ),
];

/// The kprobes, where the kernel has kprobes and the function is not inlined away; each
/// missing one is reported and recording carries on.
fn attach_kprobes(ebpf: &mut Ebpf, ksyms: &Kallsyms) -> Vec<ProbeStatus> {
    let no_kprobes = !std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    KPROBES
        .iter()
        .map(|&(prog, kind, func)| {
            let name = format!("{kind}:{func}");
            let res = if no_kprobes {
                Err(anyhow::anyhow!(
                    "this kernel has no kprobes (CONFIG_KPROBES is not set); recording with tracepoints only"
                ))
            } else if !ksyms.has(func) {
                Err(anyhow::anyhow!("{func} is not in /proc/kallsyms on this kernel (inlined or renamed)"))
            } else {
                (|| -> Result<()> {
                    let p: &mut KProbe = ebpf.program_mut(prog).context("program missing")?.try_into()?;
                    p.load()?;
                    p.attach(func, 0)?;
                    Ok(())
                })()
            };
            status(name, kind, res)
        })
        .collect()
}

/// The cause of a missing probe in a few words, from its full note.
fn short_cause(note: &str) -> String {
    if note.contains("CONFIG_KPROBES") {
        "this kernel has no kprobes (CONFIG_KPROBES unset)".into()
    } else if note.contains("Operation not permitted") || note.contains("os error 1)") {
        "refused by the kernel (EPERM)".into()
    } else if note.contains("Permission denied") || note.contains("os error 13)") {
        "refused by the kernel's verifier (EACCES)".into()
    } else {
        // Already short and specific (kallsyms, module, not needed, no lock tracepoints).
        note.split("; recording goes on")
            .next()
            .unwrap_or(note)
            .into()
    }
}

/// The probes of one group, named compactly: "6 kprobes", "fentry/fexit", or their names.
fn group_label(ps: &[&ProbeStatus]) -> String {
    let kinds: std::collections::BTreeSet<&str> = ps.iter().map(|p| p.kind).collect();
    let all = |ks: &[&str]| kinds.iter().all(|k| ks.contains(k));
    if all(&["kprobe", "kretprobe"]) && ps.len() > 1 {
        format!("{} kprobes", ps.len())
    } else if all(&["fentry", "fexit"]) && ps.len() == 2 && kinds.len() == 2 {
        "fentry/fexit".into()
    } else if ps.len() <= 2 {
        ps.iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        format!("{} probes", ps.len())
    }
}

/// The start-up report of the probes not attached: one line per cause (the full list is at
/// `-v` and in `refgate inspect`), the last saying what refgate records with.
pub fn folded_report(probes: &[ProbeStatus]) -> Vec<String> {
    let mut causes: Vec<(String, Vec<&ProbeStatus>)> = Vec::new();
    for p in probes.iter().filter(|p| !p.attached) {
        let c = short_cause(&p.note);
        match causes.iter_mut().find(|(k, _)| *k == c) {
            Some((_, v)) => v.push(p),
            None => causes.push((c, vec![p])),
        }
    }
    let mut lines: Vec<String> = causes
        .iter()
        .map(|(c, ps)| format!("{} not attached: {c}", group_label(ps)))
        .collect();
    let calls = probes
        .iter()
        .filter(|p| p.attached && p.kind != "tracepoint")
        .count();
    if let Some(last) = lines.last_mut() {
        last.push_str(&if calls == 0 {
            " — recording with tracepoints only".to_string()
        } else {
            format!(" — recording with tracepoints and {calls} function probes")
        });
    }
    lines
}

#[cfg(test)]
mod fold_tests {
    use super::*;

    fn p(name: &str, kind: &'static str, note: &str) -> ProbeStatus {
        ProbeStatus {
            name: name.into(),
            kind,
            attached: note.is_empty(),
            note: note.into(),
        }
    }

    #[test]
    fn one_line_per_cause() {
        let no_kp = "this kernel has no kprobes (CONFIG_KPROBES is not set); recording with \
                     tracepoints only";
        let eperm = "the kernel refused to load it: the BPF_PROG_LOAD syscall returned \
                     Operation not permitted (os error 1). Verifier output: : Operation not \
                     permitted (os error 1)";
        let mut probes: Vec<ProbeStatus> = (0..10)
            .map(|i| p(&format!("btrfs:tp{i}"), "tracepoint", ""))
            .collect();
        for (n, k) in KPROBES.iter().map(|&(_, k, f)| (format!("{k}:{f}"), k)) {
            probes.push(p(&n, k, no_kp));
        }
        probes.push(p("fentry:btrfs_run_delayed_refs", "fentry", eperm));
        probes.push(p("fexit:btrfs_run_delayed_refs", "fexit", eperm));
        assert_eq!(
            folded_report(&probes),
            [
                "6 kprobes not attached: this kernel has no kprobes (CONFIG_KPROBES unset)",
                "fentry/fexit not attached: refused by the kernel (EPERM) — recording with \
                 tracepoints only",
            ]
        );
        // Everything attached: nothing to say.
        let all: Vec<_> = probes.iter().filter(|p| p.attached).cloned().collect();
        assert!(folded_report(&all).is_empty());
    }
}
