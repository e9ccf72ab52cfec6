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
pub struct ScratchFs {
    dir: PathBuf,
    img: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    /// Set on drop so the workload stops before the unmount.
    pub stop: Arc<AtomicBool>,
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
        let dir = std::env::temp_dir().join(format!("refgate-scratch-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let mut s = ScratchFs {
            img: dir.join("btrfs.img"),
            mnt: dir.join("mnt"),
            dir,
            mounted: false,
            stop: Arc::new(AtomicBool::new(false)),
        };
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
