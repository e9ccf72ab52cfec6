//! Helpers shared by the integration tests: root check, loop-mounted scratch btrfs.
#![allow(dead_code)]
use std::{
    io::BufRead,
    path::{Path, PathBuf},
    process::Command,
};

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// tracefs is not mounted at boot on this project's machines (platform.md); `perf stat` needs
/// it for tracepoint events before refgate (which mounts it itself) has started.
pub fn ensure_tracefs() {
    if !Path::new("/sys/kernel/tracing/events").is_dir() {
        ok(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]));
    }
}

pub fn refgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_refgate"))
}

/// Runs `refgate ARGS`, requires success, and parses its stdout as JSON.
pub fn json_of(args: &[&str]) -> serde_json::Value {
    let o = refgate().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A loop-mounted btrfs, unmounted and detached on drop (also when the test fails).
pub struct LoopBtrfs {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    img: PathBuf,
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl LoopBtrfs {
    pub fn new() -> LoopBtrfs {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        ok(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&img));
        // commit=300: no periodic commits behind the test's back.
        ok(Command::new("mount")
            .args(["-o", "loop,commit=300"])
            .arg(&img)
            .arg(&mnt));
        LoopBtrfs { dir, mnt, img }
    }

    pub fn syncfs(&self) {
        let f = std::fs::File::open(&self.mnt).unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        if let Ok(o) = Command::new("losetup").arg("-j").arg(&self.img).output() {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some(dev) = l.split(':').next() {
                    let _ = Command::new("losetup").args(["-d", dev]).status();
                }
            }
        }
    }
}

/// Small and large files from several threads: adds and runs of tree and data refs.
pub fn workload(mnt: &Path, threads: usize, files: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let d = mnt.join(format!("t{t}"));
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..files {
                    let len = if i % 10 == 9 { 200_000 } else { 1500 };
                    std::fs::write(d.join(format!("f{i}")), vec![(i % 251) as u8; len]).unwrap();
                }
                for i in (0..files).step_by(3) {
                    std::fs::remove_file(d.join(format!("f{i}"))).unwrap();
                }
            });
        }
    });
}

/// Starts `refgate record --no-tui ARGS` and waits until its probes are attached.
pub fn start_recording(
    args: &[&str],
    trace: &Path,
) -> (std::process::Child, std::thread::JoinHandle<Vec<String>>) {
    let mut child = refgate()
        .args(["record", "--no-tui", "-o"])
        .arg(trace)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("recording with"));
    assert!(ready, "refgate record did not start");
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect());
    (child, drain)
}
