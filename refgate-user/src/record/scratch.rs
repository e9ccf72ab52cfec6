//! `refgate record --scratch`: a throw-away loopback btrfs and a built-in workload, so that a
//! user without a btrfs host can try refgate, and so that the bundled sample trace can be
//! regenerated (`cargo xtask sample`).
use std::{
    fs,
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, Result, bail};

pub const DESCRIPTION: &str = "on a fresh 2 GiB loopback btrfs, 4 \
    writer threads create small files (inline extents) and 256 KiB files of random data (data \
    extents), fsync some, reflink-copy the large ones (FICLONE), a snapshot of the subvolume is \
    taken mid-way and the writers then overwrite and delete files under it, the snapshot is \
    deleted and cleaned, and everything is synced";

/// A scratch btrfs on a loop device; unmounted, detached and deleted on drop.
///
/// A run killed with SIGKILL cannot clean up, so every scratch run marks what it creates: its
/// directory `$TMPDIR/refgate-scratch-PID` holds a [`MARKER`] file naming the process (pid and
/// start time), and `/run/refgate/` holds a copy (found even if a later run has another
/// `TMPDIR`). The next `--scratch` run, or `refgate record --scratch --cleanup`, removes what a
/// run whose process is gone left behind ([`cleanup_leftovers`]).
pub struct ScratchFs {
    dir: PathBuf,
    img: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    /// Set on drop so the workload stops before the unmount.
    pub stop: Arc<AtomicBool>,
}

/// The marker file in a scratch directory.
pub const MARKER: &str = "refgate-scratch.marker";
const MARKER_MAGIC: &str = "refgate scratch v1";
/// Where copies of the markers live (root-only, cleared at boot).
const REGISTRY: &str = "/run/refgate";
const DIR_PREFIX: &str = "refgate-scratch-";

/// A scratch run's marker: who made the directory, and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    pid: u32,
    /// Start time of the process (field 22 of /proc/PID/stat), against pid reuse.
    starttime: u64,
    dir: PathBuf,
}

impl Marker {
    fn render(&self) -> String {
        format!(
            "{MARKER_MAGIC}\npid={}\nstarttime={}\ndir={}\nimage={}\nmount={}\n",
            self.pid,
            self.starttime,
            self.dir.display(),
            self.dir.join(IMAGE).display(),
            self.dir.join(MOUNT).display(),
        )
    }

    fn parse(text: &str) -> Option<Marker> {
        let mut lines = text.lines();
        if lines.next()? != MARKER_MAGIC {
            return None;
        }
        let (mut pid, mut starttime, mut dir) = (None, None, None);
        for l in lines {
            match l.split_once('=')? {
                ("pid", v) => pid = v.parse().ok(),
                ("starttime", v) => starttime = v.parse().ok(),
                ("dir", v) => dir = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        Some(Marker {
            pid: pid?,
            starttime: starttime?,
            dir: dir?,
        })
    }

    /// Whether the process that wrote the marker still runs.
    fn alive(&self) -> bool {
        process_starttime(self.pid) == Some(self.starttime)
    }
}

const IMAGE: &str = "btrfs.img";
const MOUNT: &str = "mnt";

/// Field 22 of /proc/PID/stat (after the parenthesised comm, which may hold spaces); `None`
/// if there is no such process, or only its corpse (a zombie not yet reaped after SIGKILL).
fn process_starttime(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(rest.next()?, "Z" | "X") {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({cmd:?}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl ScratchFs {
    pub fn create() -> Result<ScratchFs> {
        if Command::new("mkfs.btrfs")
            .arg("--version")
            .output()
            .is_err()
        {
            bail!(
                "--scratch needs mkfs.btrfs, which is not installed. Install btrfs-progs \
                 (`apt-get install btrfs-progs`) or record an existing btrfs with --mount."
            );
        }
        for line in cleanup_leftovers() {
            eprintln!("refgate: {line}");
        }
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}"));
        fs::create_dir_all(&dir)?;
        let mut s = ScratchFs {
            img: dir.join(IMAGE),
            mnt: dir.join(MOUNT),
            dir,
            mounted: false,
            stop: Arc::new(AtomicBool::new(false)),
        };
        // Marked before anything else is made in it, so a kill at any point leaves a marker.
        let marker = Marker {
            pid,
            starttime: process_starttime(pid).context("reading /proc/self/stat")?,
            dir: s.dir.clone(),
        }
        .render();
        fs::write(s.dir.join(MARKER), &marker)?;
        if fs::create_dir_all(REGISTRY).is_ok() {
            let _ = fs::write(Path::new(REGISTRY).join(format!("scratch-{pid}")), &marker);
        }
        fs::create_dir_all(&s.mnt)?;
        fs::File::create(&s.img)?.set_len(2 << 30)?;
        run(
            Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&s.img),
            "mkfs.btrfs",
        )?;
        // commit=300: no periodic transaction kthread commits in the middle of the workload;
        // the workload's own syncs decide when transactions commit.
        run(
            Command::new("mount")
                .args(["-o", "loop,commit=300"])
                .arg(&s.img)
                .arg(&s.mnt),
            "mounting the scratch btrfs (loop devices are needed)",
        )?;
        s.mounted = true;
        Ok(s)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        // `mount -o loop` sets autoclear, but detach explicitly in case it did not.
        if let Ok(out) = Command::new("losetup").arg("-j").arg(&self.img).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(dev) = line.split(':').next() {
                    let _ = Command::new("losetup").args(["-d", dev]).status();
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
        let _ =
            fs::remove_file(Path::new(REGISTRY).join(format!("scratch-{}", std::process::id())));
    }
}

/// Finds what scratch runs whose process is gone left behind (a mount, loop devices, the
/// image, the directory) and removes it; returns one line per run for the user. Only a
/// directory named `refgate-scratch-*` with a valid marker is touched, and in it only the
/// mount at `mnt` if it is a btrfs on a loop device backed by its own `btrfs.img`, those loop
/// devices, and the directory itself: never anything a scratch run did not create.
pub fn cleanup_leftovers() -> Vec<String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
                dirs.push(e.path());
            }
        }
    }
    let mut registry = Vec::new();
    if let Ok(rd) = fs::read_dir(REGISTRY) {
        for e in rd.flatten() {
            if let Some(m) = fs::read_to_string(e.path())
                .ok()
                .and_then(|t| Marker::parse(&t))
            {
                registry.push((e.path(), m.clone()));
                dirs.push(m.dir);
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut report = Vec::new();
    for dir in dirs {
        // The marker inside the directory is the authority; a registry entry alone is not.
        let Some(m) = fs::read_to_string(dir.join(MARKER))
            .ok()
            .and_then(|t| Marker::parse(&t))
        else {
            continue;
        };
        let named_for_pid = dir.file_name().map(|n| n.to_string_lossy().into_owned())
            == Some(format!("{DIR_PREFIX}{}", m.pid));
        if m.dir != dir || !named_for_pid {
            continue;
        }
        if m.alive() {
            report.push(format!(
                "scratch run {} is still running (or still dying); its {} is left alone",
                m.pid,
                dir.display()
            ));
            continue;
        }
        report.push(remove_leftover(&dir, m.pid));
    }
    // Registry entries whose directory is gone (cleaned above, or by hand).
    for (entry, m) in registry {
        if !m.alive() && !m.dir.join(MARKER).exists() {
            let _ = fs::remove_file(entry);
        }
    }
    report
}

/// Loop devices backed by `img` (`/sys/block/loop*/loop/backing_file`).
fn loops_backed_by(img: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let backing = fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
        let backing = backing.trim_end_matches('\n');
        // The kernel appends " (deleted)" when the image was unlinked.
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing) == img {
            out.push(format!("/dev/{name}"));
        }
    }
    out
}

/// Mount points and sources of the btrfs mounts at `mnt` (/proc/self/mountinfo).
fn btrfs_mounts_at(mnt: &Path) -> Vec<String> {
    let unescape = |s: &str| {
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
    };
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let point = unescape(pre.split(' ').nth(4)?);
            let mut post = post.split(' ');
            let (fstype, source) = (post.next()?, post.next()?);
            (Path::new(&point) == mnt && fstype == "btrfs").then(|| unescape(source))
        })
        .collect()
}

/// Every mount point at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect()
}

/// Unmounts the btrfs on `mnt` if it is one of `img`'s loop devices (else leaves it, and
/// says so); lazily when a plain umount fails.
fn unmount_ours(img: &Path, mnt: &Path, did: &mut Vec<String>, left: &mut Vec<String>) {
    let ours = loops_backed_by(img);
    for source in btrfs_mounts_at(mnt) {
        if !ours.contains(&source) {
            left.push(format!(
                "{} (a btrfs on {source}, not its image)",
                mnt.display()
            ));
            continue;
        }
        let ok = Command::new("umount")
            .arg(mnt)
            .status()
            .is_ok_and(|s| s.success())
            || Command::new("umount")
                .arg("-l")
                .arg(mnt)
                .status()
                .is_ok_and(|s| s.success());
        if ok {
            did.push(format!("unmounted {}", mnt.display()));
        } else {
            left.push(format!("the mount {}", mnt.display()));
        }
    }
}

/// Detaches every loop device backed by `img`.
fn detach_loops(img: &Path, did: &mut Vec<String>, left: &mut Vec<String>) {
    for dev in loops_backed_by(img) {
        if Command::new("losetup")
            .args(["-d", &dev])
            .status()
            .is_ok_and(|s| s.success())
        {
            did.push(format!("detached {dev}"));
        } else {
            left.push(dev);
        }
    }
}

/// Removes what a dead scratch run `pid` left in `dir` (mount, loop devices, the directory):
/// one line saying what was done and what, if anything, is left to remove by hand.
fn remove_leftover(dir: &Path, pid: u32) -> String {
    let (img, mnt) = (dir.join(IMAGE), dir.join(MOUNT));
    let mut did = Vec::new();
    let mut left = Vec::new();
    unmount_ours(&img, &mnt, &mut did, &mut left);
    detach_loops(&img, &mut did, &mut left);
    // Never delete through a mount (whatever it is, it is not ours to delete).
    let still = mounts_under(dir);
    if !still.is_empty() {
        left.push(format!(
            "mounts under {}: {}",
            dir.display(),
            still.join(", ")
        ));
    }
    if left.is_empty() {
        match fs::remove_dir_all(dir) {
            Ok(()) => did.push(format!("deleted {} and its image", dir.display())),
            Err(e) => left.push(format!("{} ({e})", dir.display())),
        }
    }
    let _ = fs::remove_file(Path::new(REGISTRY).join(format!("scratch-{pid}")));
    if left.is_empty() {
        format!(
            "cleaned up after scratch run {pid}, whose process is gone (killed?): {}",
            did.join(", ")
        )
    } else {
        format!(
            "scratch run {pid}'s process is gone, but its leftovers could not all be removed \
             ({} done); still there: {}; remove them by hand (umount, losetup -d, rm -r)",
            if did.is_empty() {
                "nothing".to_string()
            } else {
                did.join(", ")
            },
            left.join(", ")
        )
    }
}

#[cfg(test)]
mod leftover_tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_reject_garbage() {
        let m = Marker {
            pid: 42,
            starttime: 777,
            dir: PathBuf::from("/tmp/refgate-scratch-42"),
        };
        assert_eq!(Marker::parse(&m.render()), Some(m));
        assert_eq!(Marker::parse("pid=42\nstarttime=1\ndir=/x\n"), None);
        assert_eq!(Marker::parse(&format!("{MARKER_MAGIC}\npid=42\n")), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let pid = std::process::id();
        let starttime = process_starttime(pid).unwrap();
        let dir = PathBuf::new();
        assert!(
            Marker {
                pid,
                starttime,
                dir: dir.clone()
            }
            .alive()
        );
        assert!(
            !Marker {
                pid,
                starttime: starttime + 1,
                dir
            }
            .alive()
        );
    }
}

/// What refgate needs to know about a mounted btrfs.
#[derive(Clone, Copy, Debug)]
pub struct FsInfo {
    pub fsid: [u8; 16],
    pub nodesize: u32,
}

/// `BTRFS_IOC_FS_INFO` on `path`, after checking that it is a btrfs at all.
pub fn fs_info(path: &Path) -> Result<FsInfo> {
    const BTRFS_SUPER_MAGIC: i64 = 0x9123683e;
    const BTRFS_IOC_FS_INFO: libc::c_ulong = 0x8400941f; // _IOR(0x94, 31, 1024 bytes)
    let dir = fs::File::open(path).with_context(|| {
        format!(
            "--mount {}: no such file or directory; give the mount point of a btrfs",
            path.display()
        )
    })?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut st) } != 0 {
        bail!(
            "--mount {}: statfs failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    if st.f_type as i64 != BTRFS_SUPER_MAGIC {
        bail!(
            "--mount {}: not a btrfs filesystem (statfs type {:#x}). Give the mount point of a \
             btrfs, or use --scratch to make a temporary one.",
            path.display(),
            st.f_type
        );
    }
    let mut buf = [0u8; 1024];
    if unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_FS_INFO, buf.as_mut_ptr()) } != 0 {
        bail!(
            "--mount {}: BTRFS_IOC_FS_INFO failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(FsInfo {
        fsid: buf[16..32].try_into().expect("16"),
        nodesize: u32::from_ne_bytes(buf[32..36].try_into().expect("4")),
    })
}

/// Deterministic pseudo-random bytes (xorshift), so data extents are not all zeroes.
fn fill(buf: &mut [u8], mut seed: u64) {
    for chunk in buf.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_ne_bytes()[..chunk.len()]);
    }
}

const FICLONE: libc::c_ulong = 0x40049409;
const WRITERS: usize = 4;

fn btrfs(args: &[&str], mnt: &Path, what: &str) -> Result<()> {
    let mut cmd = Command::new("btrfs");
    for a in args {
        if let Some(rel) = a.strip_prefix('@') {
            cmd.arg(mnt.join(rel));
        } else {
            cmd.arg(a);
        }
    }
    run(cmd.stdout(std::process::Stdio::null()), what)
}

fn syncfs(mnt: &Path) -> Result<()> {
    let d = fs::File::open(mnt)?;
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        bail!("syncfs: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One writer's phase: create `files` files, some large, fsync and reflink some.
fn write_phase(dir: &Path, w: usize, files: usize, stop: &AtomicBool) -> Result<()> {
    let mut big = vec![0u8; 256 << 10];
    let mut small = vec![0u8; 3000];
    for j in 0..files {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let seed = (w as u64 + 1) * 1_000_003 + j as u64;
        let p = dir.join(format!("f{j}"));
        let mut f = fs::File::create(&p)?;
        if j % 8 == 7 {
            fill(&mut big, seed);
            f.write_all(&big)?;
            if j % 16 == 15 {
                f.sync_all()?;
            }
            drop(f);
            let src = fs::File::open(&p)?;
            let clone = fs::File::create(dir.join(format!("f{j}.clone")))?;
            if unsafe { libc::ioctl(clone.as_raw_fd(), FICLONE, src.as_raw_fd()) } != 0 {
                bail!(
                    "reflink (FICLONE) failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        } else {
            let n = 100 + (seed % 2900) as usize;
            fill(&mut small[..n], seed);
            f.write_all(&small[..n])?;
        }
    }
    Ok(())
}

/// Second phase, under a snapshot: overwrite every 4th file, delete every 3rd.
fn churn_phase(dir: &Path, files: usize, stop: &AtomicBool) -> Result<()> {
    for j in 0..files {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let p = dir.join(format!("f{j}"));
        if j % 3 == 0 {
            let _ = fs::remove_file(&p);
            let _ = fs::remove_file(dir.join(format!("f{j}.clone")));
        } else if j % 4 == 1 {
            fs::OpenOptions::new()
                .write(true)
                .open(&p)?
                .write_all(b"overwritten")?;
        }
    }
    Ok(())
}

fn parallel(
    mnt: &Path,
    stop: &Arc<AtomicBool>,
    f: impl Fn(&Path, usize, &AtomicBool) -> Result<()> + Sync,
) -> Result<()> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let dir = mnt.join("vol").join(format!("w{w}"));
                let f = &f;
                s.spawn(move || f(&dir, w, stop))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("writer panicked"))?)
    })
}

/// Waits until the cleaner has dropped deleted subvolumes (a burst of delayed refs).
/// `btrfs filesystem sync` commits and pokes the transaction kthread, which wakes the cleaner;
/// without it the cleaner would wait for the next periodic commit (commit=300 here).
fn wait_for_cleaner(mnt: &Path, stop: &AtomicBool) -> Result<()> {
    let mut child = Command::new("btrfs")
        .args(["subvolume", "sync"])
        .arg(mnt)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("running btrfs subvolume sync")?;
    for _ in 0..120 {
        btrfs(
            &["filesystem", "sync", "@"],
            mnt,
            "syncing the scratch filesystem",
        )?;
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("btrfs subvolume sync failed: {st}");
            }
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    bail!("the deleted snapshot was not cleaned up within 60 s")
}

/// Runs the workload (see [`DESCRIPTION`]) on `mnt`; returns early, cleanly, when `stop` is set.
pub fn run_workload(mnt: &Path, files: usize, stop: Arc<AtomicBool>) -> Result<()> {
    btrfs(
        &["subvolume", "create", "@vol"],
        mnt,
        "creating a subvolume",
    )?;
    for w in 0..WRITERS {
        fs::create_dir_all(mnt.join("vol").join(format!("w{w}")))?;
    }
    parallel(mnt, &stop, |d, w, s| write_phase(d, w, files, s))?;
    syncfs(mnt)?;
    btrfs(
        &["subvolume", "snapshot", "@vol", "@snap"],
        mnt,
        "snapshotting",
    )?;
    parallel(mnt, &stop, |d, _, s| churn_phase(d, files, s))?;
    syncfs(mnt)?;
    btrfs(
        &["subvolume", "delete", "@snap"],
        mnt,
        "deleting the snapshot",
    )?;
    wait_for_cleaner(mnt, &stop)?;
    syncfs(mnt)?;
    Ok(())
}
