//! Faults around a recording (root, loop-mounted btrfs): what a crashed recorder, a full disk,
//! a killed `--scratch` run or `sudo` leave behind, and what refgate makes of it.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::Stdio,
    time::Duration,
};

use common::*;

/// The tests here record system-wide: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `kill -9` mid-recording: the trace lacks its end frame (and may end in half a frame), and
/// `replay` still replays everything before that, saying so.
#[test]
fn kill_9_then_replay() {
    let _s = serial();
    if !is_root() {
        eprintln!("skipped: recording needs root");
        return;
    }
    ensure_tracefs();
    let fs = LoopBtrfs::new();
    let trace = fs.dir.path().join("killed.bin");
    let (mut child, drain) = start_recording(&["--mount", fs.mnt.to_str().unwrap()], &trace);
    workload(&fs.mnt, 4, 200);
    fs.syncfs();
    // The recorder flushes once a second: let it flush what the workload made.
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drain.join().unwrap();

    let o = refgate()
        .args(["replay", "--no-tui", "--json", "--threads", "4"])
        .arg(&trace)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "replay of a killed recording: {err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["trace_damage"]["records_kept"].as_u64().unwrap() > 100,
        "{}",
        v["trace_damage"]
    );
    assert_eq!(v["invariant_ok"], true, "{v}");
    assert!(v["refs_run"].as_u64().unwrap() > 0);
    let o = refgate()
        .args(["replay", "--no-tui", "--strict"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!o.status.success(), "--strict refuses a killed recording");
}

/// Under sudo (SUDO_UID/SUDO_GID set, running as root) the trace belongs to the user who asked
/// for it, and a trace is private (0600) like perf.data. Under sudo, refgate does not write
/// through a symlink nor take over a file of a third user.
#[test]
fn sudo_trace_is_the_invoking_users_and_private() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _s = serial();
    if !is_root() {
        eprintln!("skipped: needs root (to act as sudo would)");
        return;
    }
    ensure_tracefs();
    let fs = LoopBtrfs::new();
    let d = fs.dir.path();
    let sudo_record = |out: &Path| {
        refgate()
            .args(["record", "--no-tui", "--duration", "1", "--mount"])
            .arg(&fs.mnt)
            .arg("-o")
            .arg(out)
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .output()
            .unwrap()
    };
    // A new trace, and an old root-owned 0644 trace (from a refgate before this fix).
    let old = d.join("old.bin");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/scratch-6.18.bin"),
        &old,
    )
    .unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    for out in [d.join("new.bin"), old] {
        let o = sudo_record(&out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let md = std::fs::metadata(&out).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534), "{}", out.display());
        assert_eq!(md.mode() & 0o777, 0o600, "{}", out.display());
    }
    // Without sudo, root's trace is root's, still 0600.
    let plain = d.join("plain.bin");
    let o = refgate()
        .args(["record", "--no-tui", "--duration", "1", "--mount"])
        .arg(&fs.mnt)
        .arg("-o")
        .arg(&plain)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::metadata(&plain).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o600));
    // A symlink to a file of root, and a file of a third user: refused, left untouched.
    let precious = d.join("precious");
    std::fs::write(&precious, b"root's data").unwrap();
    let link = d.join("link.bin");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let other = d.join("other.bin");
    std::fs::write(&other, b"someone else's").unwrap();
    std::os::unix::fs::chown(&other, Some(12345), Some(12345)).unwrap();
    for (out, needle) in [(&link, "symbolic link"), (&other, "will not overwrite")] {
        let o = sudo_record(out);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(needle), "{e}");
    }
    assert_eq!(std::fs::read(&precious).unwrap(), b"root's data");
    assert_eq!(std::fs::read(&other).unwrap(), b"someone else's");
    assert_eq!(std::fs::metadata(&precious).unwrap().uid(), 0);
    derived_files_are_private_and_the_invoking_users(d);
}

/// The other files refgate writes under sudo — an export, compare's plots, a state dump, a
/// timeline — belong to the invoking user, and those that name the trace's tasks are 0600.
fn derived_files_are_private_and_the_invoking_users(d: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let export = d.join("t.jsonl");
    let o = refgate()
        .args(["export", "-o"])
        .arg(&export)
        .arg(d.join("new.bin"))
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plots = d.join("plots");
    let o = refgate()
        .args(["compare", "--policies", "seed", "--cpus", "1,2", "-o"])
        .arg(&plots)
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The replay's state dump and timeline name the trace's tasks too (of the bundled
    // sample: the trace recorded here has nothing to replay).
    let (dump, timeline) = (d.join("state.json"), d.join("timeline.json"));
    let o = refgate()
        .args(["replay", "--no-tui", "--threads", "2", "--dump-state"])
        .arg(&dump)
        .arg("--timeline")
        .arg(&timeline)
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Everything derived from the trace is as private as the trace (plots name no task).
    for f in [&export, &dump, &timeline] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let mut files = vec![export, dump, timeline];
    files.extend(
        std::fs::read_dir(&plots)
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    assert!(files.len() > 2);
    for f in files {
        let md = std::fs::metadata(&f).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534), "{}", f.display());
    }
}

/// A tiny tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs(d)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// ENOSPC while recording: the recorder stops with exit 1 (probes detached, workload
/// untouched), and the file is cut back to its last whole frame (with its end frame if there is
/// room), never ending in half a frame; the message says what the file holds.
#[test]
fn enospc_on_a_tiny_tmpfs_leaves_whole_frames() {
    use refgate_common::trace::{DamageReason, TraceReader, summary::summarize};
    let _s = serial();
    if !is_root() {
        eprintln!("skipped: recording needs root");
        return;
    }
    ensure_tracefs();
    let fs = LoopBtrfs::new();
    let small = Tmpfs::new("48k");
    let trace = small.0.path().join("trace.bin");
    let mut child = refgate()
        .args(["record", "--no-tui", "-o"])
        .arg(&trace)
        .arg("--mount")
        .arg(&fs.mnt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("recording with")),
        "refgate record did not start"
    );
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    // Enough events for a few hundred KB of trace; the recorder must stop on its own.
    let t0 = std::time::Instant::now();
    let mut st = None;
    for round in 0..10 {
        workload(&fs.mnt.join(format!("r{round}")), 4, 300);
        fs.syncfs();
        std::thread::sleep(Duration::from_millis(1200));
        st = child.try_wait().unwrap();
        if st.is_some() {
            break;
        }
    }
    if st.is_none() {
        let _ = child.kill();
        child.wait().unwrap();
        panic!(
            "refgate record did not stop on a full disk within {:?}",
            t0.elapsed()
        );
    }
    let _ = drain.join().unwrap();
    let err = errs.join().unwrap();
    assert_eq!(st.unwrap().code(), Some(1), "{err}");
    for needle in [
        "No space left on device",
        "cut back to its last whole frame",
        "every probe was detached",
    ] {
        assert!(err.contains(needle), "missing {needle:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let summary = summarize(TraceReader::open_path(&trace).unwrap());
    match &summary.damage {
        None => assert!(summary.finished),
        Some(d) => assert_eq!(
            d.reason,
            DamageReason::Unfinished,
            "{:?}",
            summary.damage_message
        ),
    }
    assert!(summary.events > 100, "only {} events kept", summary.events);
    // The message's figures are the file's.
    let len = std::fs::metadata(&trace).unwrap().len();
    assert!(
        err.contains(&format!(
            "{len} bytes holding the header and {} records",
            summary.records
        )),
        "{err}"
    );
}

/// Whether `v` looks like an x86-64 kernel address: the canonical upper half, but not the top
/// page (-1 … -4095: negated errnos, and btrfs's negative objectids such as the relocation
/// tree's -8, which are not addresses).
fn looks_like_kernel_address(v: u64) -> bool {
    (0xffff_8000_0000_0000..0xffff_ffff_ffff_f000).contains(&v)
}

/// Every unsigned number in `r`'s decoded fields (through serde, so that a field added later
/// is covered too) that looks like a kernel address.
fn kernel_addresses(r: &refgate_common::event::Record) -> Vec<u64> {
    fn walk(v: &serde_json::Value, out: &mut Vec<u64>) {
        match v {
            serde_json::Value::Number(n) => {
                if let Some(u) = n.as_u64().filter(|&u| looks_like_kernel_address(u)) {
                    out.push(u)
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_json::to_value(r).unwrap(), &mut out);
    out
}

fn trace_kernel_addresses(path: &Path) -> (refgate_common::trace::Pointers, Vec<u64>, u64) {
    use refgate_common::{event::*, trace::TraceReader};
    let mut r = TraceReader::open_path(path).unwrap();
    let pointers = r.header().pointers;
    let (mut found, mut pointer_events) = (Vec::new(), 0);
    for rec in r.by_ref() {
        if let Record::Event(e) = &rec
            && matches!(
                e.kind,
                EventKind::Contention { .. }
                    | EventKind::TransHandleStart { .. }
                    | EventKind::TransHandleEnd { .. }
                    | EventKind::CommitTransactionCall { .. }
            )
        {
            pointer_events += 1;
        }
        found.extend(kernel_addresses(&rec));
    }
    (pointers, found, pointer_events)
}

/// The bundled samples (the kprobe one has handles, both have lock addresses) hold no value
/// that looks like a kernel address, and say so in their headers.
#[test]
fn samples_hold_no_kernel_pointers() {
    for s in ["scratch-6.18.bin", "debian-6.1-kprobes.bin"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../samples")
            .join(s);
        let (pointers, found, n) = trace_kernel_addresses(&p);
        assert_eq!(pointers, refgate_common::trace::Pointers::Ids, "{s}");
        assert!(n > 0, "{s} has events with pointer fields");
        assert!(
            found.is_empty(),
            "{s}: {:#x?}",
            &found[..found.len().min(5)]
        );
    }
}

/// A fresh recording holds identifiers, not kernel addresses, and inspect says so;
/// `--keep-kernel-pointers` keeps raw addresses and the header says that too.
#[test]
fn a_recording_holds_no_kernel_pointers_unless_asked() {
    use refgate_common::trace::Pointers;
    let _s = serial();
    if !is_root() {
        eprintln!("skipped: recording needs root");
        return;
    }
    ensure_tracefs();
    let fs = LoopBtrfs::new();
    for (keep, name) in [(false, "ids.bin"), (true, "raw.bin")] {
        let trace = fs.dir.path().join(name);
        let mut args = vec!["--mount", fs.mnt.to_str().unwrap()];
        if keep {
            args.push("--keep-kernel-pointers");
        }
        let (child, drain) = start_recording(&args, &trace);
        workload(&fs.mnt.join(name), 4, 300);
        fs.syncfs();
        std::thread::sleep(Duration::from_millis(1200));
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut child = child;
        assert!(child.wait().unwrap().success());
        drain.join().unwrap();
        let (pointers, found, n) = trace_kernel_addresses(&trace);
        assert!(n > 0, "no lock contention recorded: nothing was tested");
        if keep {
            assert_eq!(pointers, Pointers::Raw);
            assert!(
                !found.is_empty(),
                "--keep-kernel-pointers kept no kernel address"
            );
        } else {
            assert_eq!(pointers, Pointers::Ids);
            assert!(found.is_empty(), "{:#x?}", &found[..found.len().min(5)]);
            let o = refgate().arg("inspect").arg(&trace).output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(text.contains("per-trace identifiers"), "{text}");
        }
    }
}

/// Removes, whatever the test's outcome, what a killed scratch run of pid `0` left behind.
struct ScratchLeftovers(u32);

impl ScratchLeftovers {
    fn dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("refgate-scratch-{}", self.0))
    }
    fn present(&self) -> bool {
        let d = self.dir();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let loops = std::process::Command::new("losetup")
            .arg("-a")
            .output()
            .unwrap();
        d.exists()
            || mounts.contains(d.to_str().unwrap())
            || String::from_utf8_lossy(&loops.stdout).contains(d.to_str().unwrap())
    }
}

impl Drop for ScratchLeftovers {
    fn drop(&mut self) {
        let d = self.dir();
        let _ = std::process::Command::new("umount")
            .arg(d.join("mnt"))
            .status();
        let img = d.join("btrfs.img");
        if let Ok(o) = std::process::Command::new("losetup")
            .arg("-j")
            .arg(&img)
            .output()
        {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some(dev) = l.split(':').next() {
                    let _ = std::process::Command::new("losetup")
                        .args(["-d", dev])
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_file(format!("/run/refgate/scratch-{}", self.0));
    }
}

/// Starts `record --scratch` and kills it with SIGKILL once it records: its loop btrfs stays.
fn killed_scratch_run(trace: &Path) -> ScratchLeftovers {
    let (mut child, drain) = start_recording(&["--scratch"], trace);
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap(); // reaped: the process is gone
    drain.join().unwrap();
    let left = ScratchLeftovers(child.id());
    assert!(
        left.present(),
        "a killed scratch run left nothing: nothing to test"
    );
    left
}

/// `kill -9` of a `--scratch` run leaves its mount, loop device and image; the next
/// `--scratch` run, and `record --scratch --cleanup` on its own, find and remove them, and
/// leave alone what is not a dead scratch run's (no marker; a live process's marker).
#[test]
fn killed_scratch_runs_are_cleaned_up_by_the_next() {
    let _s = serial();
    if !is_root() {
        eprintln!("skipped: recording needs root");
        return;
    }
    ensure_tracefs();
    let d = tempfile::tempdir().unwrap();
    // Decoys: a directory named like a scratch run without a marker, and one whose marker
    // names a live process (this test).
    let decoy = std::env::temp_dir().join("refgate-scratch-4000000");
    std::fs::create_dir_all(&decoy).unwrap();
    std::fs::write(decoy.join("keep"), b"not refgate's").unwrap();
    let me = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let live = std::env::temp_dir().join(format!("refgate-scratch-{me}"));
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(
        live.join("refgate-scratch.marker"),
        format!(
            "refgate scratch v1\npid={me}\nstarttime={start}\ndir={}\n",
            live.display()
        ),
    )
    .unwrap();

    // 1. `--cleanup` on its own.
    let left = killed_scratch_run(&d.path().join("k1.bin"));
    let o = refgate()
        .args(["record", "--scratch", "--cleanup"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!("cleaned up after scratch run {}", left.0)),
        "{out}"
    );
    assert!(!left.present(), "leftovers of {} remain: {out}", left.0);
    drop(left);

    // 2. The next --scratch run.
    let left = killed_scratch_run(&d.path().join("k2.bin"));
    let o = refgate()
        .args([
            "record",
            "--scratch",
            "--scratch-files",
            "20",
            "--no-tui",
            "-o",
        ])
        .arg(d.path().join("next.bin"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("cleaned up after scratch run {}", left.0)),
        "{err}"
    );
    assert!(!left.present(), "leftovers of {} remain: {err}", left.0);
    drop(left);

    // The decoys are untouched.
    assert!(decoy.join("keep").exists() && live.join("refgate-scratch.marker").exists());
    let _ = std::fs::remove_dir_all(&decoy);
    let _ = std::fs::remove_dir_all(&live);
}

/// First contact: without --mount on a host with no btrfs mounted, refgate says so (and
/// suggests --scratch) instead of counting zeros in silence, keeps recording, and picks up a
/// btrfs mounted later. Its start-up probe report is one line per cause; `-v` has them all.
#[test]
fn first_contact_without_btrfs_then_a_later_mount() {
    let _s = serial();
    if !is_root() {
        eprintln!("skipped: recording needs root");
        return;
    }
    if std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(2) == Some("btrfs"))
    {
        eprintln!("skipped: this host has a btrfs mounted");
        return;
    }
    ensure_tracefs();
    let d = tempfile::tempdir().unwrap();
    let trace = d.path().join("later.bin");
    let (child, drain) = start_recording(&[], &trace);
    std::thread::sleep(Duration::from_millis(1500));
    let fs = LoopBtrfs::new();
    workload(&fs.mnt, 2, 100);
    fs.syncfs();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut child = child;
    assert!(child.wait().unwrap().success());
    let out = drain.join().unwrap();
    let text = out.join("\n");
    assert!(text.contains("no btrfs filesystem is mounted"), "{text}");
    assert!(text.contains("record --scratch"), "{text}");
    assert!(
        text.contains(&format!("btrfs mounted at {}", fs.mnt.display())),
        "{text}"
    );
    // One line per cause: at most kprobes, fentry/fexit and lock tracepoints.
    let missing: Vec<&String> = out.iter().filter(|l| l.contains("not attached")).collect();
    assert!(missing.len() <= 3, "{missing:#?}");
    let adds = refgate_common::trace::summary::summarize(
        refgate_common::trace::TraceReader::open_path(&trace).unwrap(),
    )
    .events_by_kind
    .get("btrfs:add_delayed_data_ref")
    .copied()
    .unwrap_or(0);
    assert!(adds > 0, "the btrfs mounted later was not recorded");

    // -v lists every probe.
    let o = refgate()
        .args(["record", "-v", "--no-tui", "--duration", "1", "--mount"])
        .arg(&fs.mnt)
        .arg("-o")
        .arg(d.path().join("v.bin"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for probe in [
        "btrfs:add_delayed_tree_ref (tracepoint) attached",
        "kprobe:btrfs_run_delayed_refs (kprobe)",
        "fexit:btrfs_run_delayed_refs (fexit)",
    ] {
        assert!(err.contains(probe), "-v lacks {probe:?}: {err}");
    }
}

/// A full disk while writing an output (issue 26 item 2): every kind of output refgate writes
/// from a trace fails with its own message — what was being written, that the filesystem is
/// full, what to do — never a panic or a "please report it", and leaves no partial file or
/// temporary file behind (a plot already written whole may stay).
#[test]
fn a_full_disk_is_named_and_leaves_no_partial_output() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/scratch-6.18.bin");
    let small = Tmpfs::new("64k");
    let dir = small.0.path();
    let out = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "export".into(),
                "-f".into(),
                "jsonl".into(),
                sample.into(),
                "-o".into(),
                out("x.jsonl"),
            ],
            "JSON lines",
        ),
        (
            vec![
                "export".into(),
                "-f".into(),
                "chrome".into(),
                sample.into(),
                "-o".into(),
                out("x.json"),
            ],
            "Chrome trace",
        ),
        (
            vec![
                "export".into(),
                "-f".into(),
                "parquet".into(),
                sample.into(),
                "-o".into(),
                out("x.parquet"),
            ],
            "Parquet file",
        ),
        (
            vec![
                "replay".into(),
                "--no-tui".into(),
                "--json".into(),
                "--dump-state".into(),
                out("state.json"),
            ],
            "state dump",
        ),
        (
            vec![
                "replay".into(),
                "--no-tui".into(),
                "--json".into(),
                "--timeline".into(),
                out("tl.json"),
            ],
            "timeline",
        ),
        (
            vec!["compare".into(), "-o".into(), out("plots")],
            "the plot",
        ),
    ];
    for (args, what) in cases {
        let o = refgate().args(&args).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains(what) && e.contains("No space left on device"),
            "{args:?}: {e}"
        );
        assert!(
            e.contains("The filesystem written to is full"),
            "{args:?}: {e}"
        );
        assert!(
            !e.contains("panicked") && !e.contains("report it"),
            "{args:?}: {e}"
        );
        // Nothing partial: no temporary file, no output but whole plots.
        let mut left = Vec::new();
        for entry in walk(dir) {
            let name = entry.file_name().unwrap().to_string_lossy().to_string();
            let whole_plot = entry.parent().is_some_and(|p| p.ends_with("plots"))
                && !name.starts_with('.')
                && std::fs::metadata(&entry).unwrap().len() > 0;
            if !whole_plot {
                left.push(name);
            }
        }
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

/// Every file under `dir`, hidden ones too.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}
