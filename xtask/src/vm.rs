//! `cargo xtask vm-test`: the kprobe path on a real distro kernel. This project's machines run
//! a 6.18 kernel without kprobes, so the recorder's kprobe on `btrfs_run_delayed_refs` is
//! tested on Debian's stock 6.1 kernel booted under QEMU (software emulation: `/dev/kvm` here
//! is a PVM host on which stock kernels hang; platform.md).
//!
//! Host: fetch the kernel package with apt (cached in `target/vm/cache`), build a busybox
//! initramfs holding the freshly built `refgate` (and the shared libraries it needs),
//! `mkfs.btrfs` and `btrfs`, boot it, read the guest's serial console, and check the results.
//! Guest (`/init`): load btrfs and its dependencies, run `refgate record --scratch` (which makes
//! its own loop btrfs and workload), print `refgate inspect --json` and the trace in base64
//! between markers, power off.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use refgate_common::{
    event::{EventKind, Record},
    trace::TraceReader,
};

/// Debian's stock kernel series (platform.md: kprobes, BTF, btrfs as a module).
const KERNEL_PATTERN: &str = "linux-image-6.1.0-[0-9]+-amd64-unsigned";
/// insmod order that works for btrfs.ko on that kernel (platform.md).
const MODULES: &[&str] = &[
    "crc32c_generic",
    "crc32c-intel",
    "libcrc32c",
    "xor",
    "raid6_pq",
    "zstd_compress",
    "loop",
    "btrfs",
];
/// The guest must finish within this; QEMU is killed after it.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Where the guest's trace is kept: the second bundled sample.
pub const VM_SAMPLE: &str = "samples/debian-6.1-kprobes.bin";

fn sh(cmd: &mut Command) -> Result<()> {
    crate::sh(cmd)
}

/// Newest `linux-image-6.1.0-N-amd64-unsigned` apt knows, downloaded once into `cache`.
fn kernel_deb(cache: &Path) -> Result<PathBuf> {
    fs::create_dir_all(cache)?;
    if let Some(deb) = fs::read_dir(cache)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
    {
        return Ok(deb);
    }
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", KERNEL_PATTERN])
        .output()?;
    let names: BTreeSet<(u32, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let abi = n
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-amd64-unsigned")?;
            Some((abi.parse().ok()?, n.to_string()))
        })
        .collect();
    let Some((_, name)) = names.last() else {
        bail!("apt knows no {KERNEL_PATTERN} package (run `apt-get update`)");
    };
    sh(Command::new("apt-get")
        .args(["download", "-q", name])
        .current_dir(cache))?;
    kernel_deb(cache)
}

/// Shared libraries (and the loader) a dynamically linked binary needs, from `ldd`.
fn libs_of(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

fn copy_into(root: &Path, src: &Path, dst_rel: &Path) -> Result<()> {
    let dst = root.join(dst_rel);
    fs::create_dir_all(dst.parent().expect("parent"))?;
    fs::copy(src, &dst).with_context(|| format!("copying {} into the initramfs", src.display()))?;
    Ok(())
}

fn which(bin: &str) -> Result<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if p.is_empty() {
        bail!("{bin} is not installed (cargo xtask setup installs it)");
    }
    Ok(PathBuf::from(p))
}

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp && mount -t tmpfs -o size=1500m tmp /tmp
echo "REFGATE-VM kernel $(uname -r)"
for m in MODULES; do insmod /modules/$m.ko 2>/dev/null || echo "REFGATE-VM insmod $m: failed or built in"; done
cd /tmp
refgate record --scratch --scratch-files FILES --no-tui -o /tmp/trace.bin
echo "REFGATE-VM record-exit $?"
echo REFGATE-VM-BEGIN-JSON
refgate inspect --json /tmp/trace.bin
echo REFGATE-VM-END-JSON
echo REFGATE-VM-BEGIN-TRACE
base64 /tmp/trace.bin
echo REFGATE-VM-END-TRACE
poweroff -f
"#;

/// Builds the initramfs; returns (vmlinuz, initrd).
fn build_image(work: &Path, refgate: &Path, files: usize) -> Result<(PathBuf, PathBuf)> {
    let (kdir, vmlinuz) = unpack_kernel(work)?;
    let root = work.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "modules", "etc",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    copy_programs(&root, refgate, &kdir)?;
    let init = INIT
        .replace("MODULES", &MODULES.join(" "))
        .replace("FILES", &files.to_string());
    fs::write(root.join("init"), init)?;
    sh(Command::new("chmod").arg("+x").arg(root.join("init")))?;
    let initrd = work.join("initrd.gz");
    sh(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        initrd.display()
    )))?;
    Ok((vmlinuz, initrd))
}

/// Debian's kernel package, unpacked under `work/kernel` once: that directory and its vmlinuz.
fn unpack_kernel(work: &Path) -> Result<(PathBuf, PathBuf)> {
    let deb = kernel_deb(&work.join("cache"))?;
    let kdir = work.join("kernel");
    if !kdir.join("boot").is_dir() {
        fs::create_dir_all(&kdir)?;
        sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&kdir))?;
    }
    let vmlinuz = fs::read_dir(kdir.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .context("no vmlinuz in the kernel package")?;
    Ok((kdir, vmlinuz))
}

/// Busybox and its applets, refgate, mkfs.btrfs and btrfs with their libraries, and the
/// kernel's modules that the guest loads (btrfs and its dependencies).
fn copy_programs(root: &Path, refgate: &Path, kdir: &Path) -> Result<()> {
    let busybox = which("busybox")?;
    copy_into(root, &busybox, Path::new("bin/busybox"))?;
    let applets = Command::new(&busybox).arg("--list").output()?;
    for a in String::from_utf8_lossy(&applets.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
    }
    for (bin, name) in [
        (refgate.to_path_buf(), "refgate"),
        (which("mkfs.btrfs")?, "mkfs.btrfs"),
        (which("btrfs")?, "btrfs"),
    ] {
        copy_into(root, &bin, &Path::new("usr/bin").join(name))?;
        for lib in libs_of(&bin)? {
            copy_into(root, &lib, lib.strip_prefix("/").expect("absolute"))?;
        }
    }
    for m in MODULES {
        let found = Command::new("find")
            .arg(kdir)
            .args(["-name", &format!("{m}.ko")])
            .output()?;
        let path = String::from_utf8_lossy(&found.stdout)
            .lines()
            .next()
            .map(PathBuf::from);
        match path {
            Some(p) => copy_into(root, &p, &Path::new("modules").join(format!("{m}.ko")))?,
            None => eprintln!("xtask: {m}.ko not in the kernel package (built in?)"),
        }
    }
    Ok(())
}

/// Kills and reaps QEMU when dropped.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots the image; returns the serial console output. Never leaves QEMU behind.
fn boot(vmlinuz: &Path, initrd: &Path) -> Result<String> {
    let mut child = spawn_qemu(vmlinuz, initrd)?;
    let stdout = child.stdout.take().expect("piped");
    let mut guard = Kill(child);
    let rx = console_lines(stdout);
    let start = Instant::now();
    let out = read_console(&rx, start)?;
    if let Ok(Some(st)) = guard.0.try_wait() {
        eprintln!("xtask: qemu exited: {st}");
    }
    drop(guard);
    eprintln!(
        "xtask: guest run took {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// QEMU (TCG: no KVM needed) on the stock kernel and the initramfs, console on stdout.
fn spawn_qemu(vmlinuz: &Path, initrd: &Path) -> Result<std::process::Child> {
    Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "2G",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")
}

/// The guest's console, line by line, from a reader thread.
fn console_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string(),
                )
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Echoes the console (not the base64 trace) until the guest powers off, or fails after
/// [`GUEST_TIMEOUT`]; the whole output.
fn read_console(rx: &mpsc::Receiver<String>, start: Instant) -> Result<String> {
    let mut out = String::new();
    let mut in_trace = false;
    loop {
        let left = GUEST_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            bail!(
                "the guest did not finish within {} s; QEMU was killed. Last output:\n{}",
                GUEST_TIMEOUT.as_secs(),
                out.lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("REFGATE-VM-BEGIN-TRACE") {
                    in_trace = true;
                } else if line.contains("REFGATE-VM-END-TRACE") {
                    in_trace = false;
                }
                if !in_trace && !line.contains("REFGATE-VM-BEGIN-TRACE") {
                    println!("guest| {line}");
                }
                out.push_str(&line);
                out.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(out)
}

fn between<'a>(out: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let b = out.find(begin)? + begin.len();
    let e = out[b..].find(end)? + b;
    Some(out[b..e].trim())
}

/// Runs the whole VM test; `keep` copies the guest's trace to [`VM_SAMPLE`].
pub fn vm_test(root: &Path, refgate: &Path, keep: bool) -> Result<()> {
    let t0 = Instant::now();
    let work = root.join("target/vm");
    let (vmlinuz, initrd) = build_image(&work, refgate, 150)?;
    let out = boot(&vmlinuz, &initrd)?;
    let (v, bytes) = guest_results(&out)?;
    let trace_path = work.join("guest-trace.bin");
    fs::write(&trace_path, &bytes)?;
    let mut failures = header_failures(&v);
    check_heads_inside_calls(&v, &bytes, &mut failures)?;
    println!(
        "vm-test: whole run {:.1} s (image build + boot + guest + checks)",
        t0.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("vm-test failed:\n- {}", failures.join("\n- "));
    }
    if keep {
        fs::create_dir_all(root.join("samples"))?;
        fs::copy(&trace_path, root.join(VM_SAMPLE))?;
        println!("vm-test: kept the guest's trace as {VM_SAMPLE}");
    }
    println!("vm-test: ok");
    Ok(())
}

/// The guest's `inspect --json` of its trace, and the trace itself (sent base64 on the
/// console between markers).
fn guest_results(out: &str) -> Result<(serde_json::Value, Vec<u8>)> {
    let json = between(out, "REFGATE-VM-BEGIN-JSON", "REFGATE-VM-END-JSON")
        .context("the guest printed no inspect JSON (see its output above)")?;
    let v: serde_json::Value =
        serde_json::from_str(json).context("parsing the guest's inspect JSON")?;
    let b64: String = between(out, "REFGATE-VM-BEGIN-TRACE", "REFGATE-VM-END-TRACE")
        .context("the guest sent no trace")?
        .lines()
        .map(str::trim)
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("decoding the guest's trace")?;
    Ok((v, bytes))
}

/// What the trace header and event counts must show on the stock kernel: the kprobes
/// attached, events from each, nothing lost, the 6.1 `run_arg`.
fn header_failures(v: &serde_json::Value) -> Vec<String> {
    let mut failures = Vec::new();
    let probes = v["probes"].as_array().cloned().unwrap_or_default();
    let attached = |name: &str| {
        probes
            .iter()
            .any(|p| p["name"] == name && p["attached"] == true)
    };
    if !attached("kprobe:btrfs_run_delayed_refs") || !attached("kretprobe:btrfs_run_delayed_refs") {
        failures.push(format!("the trace header lacks an attached kprobe+kretprobe on btrfs_run_delayed_refs: {probes:?}"));
    }
    let count = |k: &str| v["events_by_kind"][k].as_u64().unwrap_or(0);
    for name in [
        "kretprobe:start_transaction",
        "kprobe:__btrfs_end_transaction",
        "kprobe:btrfs_commit_transaction",
    ] {
        if !attached(name) {
            failures.push(format!("{name} is not attached"));
        }
    }
    for k in [
        "kprobe:btrfs_run_delayed_refs",
        "kretprobe:start_transaction",
        "kprobe:__btrfs_end_transaction",
        "kprobe:btrfs_commit_transaction",
        "btrfs:add_delayed_ref_head",
        "btrfs:run_delayed_ref_head",
        "btrfs:add_delayed_tree_ref",
    ] {
        if count(k) == 0 {
            failures.push(format!("no {k} events in the guest's trace"));
        }
    }
    if v["lost_events"].as_u64() != Some(0) {
        failures.push(format!("lost events: {}", v["lost_events"]));
    }
    if v["run_arg"] != "count" {
        failures.push(format!(
            "run_arg should be count on 6.1 (unsigned long count), is {}",
            v["run_arg"]
        ));
    }
    failures
}

/// Every run_delayed_ref_head inside a recorded btrfs_run_delayed_refs call of its task,
/// or counted as an exception (the kernel also runs heads from other paths, §2.9).
fn check_heads_inside_calls(
    v: &serde_json::Value,
    bytes: &[u8],
    failures: &mut Vec<String>,
) -> Result<()> {
    let count = |k: &str| v["events_by_kind"][k].as_u64().unwrap_or(0);
    let records: Vec<Record> = TraceReader::open(bytes)?.collect();
    let mut calls: std::collections::HashMap<u32, Vec<(u64, u64)>> = Default::default();
    for r in &records {
        if let Record::Event(e) = r
            && let EventKind::RunDelayedRefsCall { duration_ns, .. } = e.kind
        {
            calls
                .entry(e.tid)
                .or_default()
                .push((e.ts_ns, e.ts_ns + duration_ns));
        }
    }
    let (mut inside, mut outside) = (0u64, 0u64);
    for r in &records {
        if let Record::Event(e) = r
            && let EventKind::RunRefHead(_) = e.kind
        {
            let hit = calls
                .get(&e.tid)
                .is_some_and(|c| c.iter().any(|&(a, b)| a <= e.ts_ns && e.ts_ns <= b));
            if hit { inside += 1 } else { outside += 1 }
        }
    }
    println!(
        "vm-test: {} btrfs_run_delayed_refs calls; {inside} of {} run_delayed_ref_head events fall inside a call of their task, {outside} outside (heads run from other paths, e.g. btrfs_lookup_extent_info/check_ref_cleanup callers or calls begun before the probes attached)",
        count("kprobe:btrfs_run_delayed_refs"),
        inside + outside
    );
    if inside == 0 {
        failures.push(
            "no run_delayed_ref_head event falls inside a recorded btrfs_run_delayed_refs call"
                .into(),
        );
    }
    Ok(())
}
