//! `cargo xtask setup`: install what building and testing need — Debian packages, nightly
//! rust-src, bpf-linker — idempotently (quick when everything is there).
use std::process::Command;

use anyhow::{Result, bail};

use crate::{is_root, output, sh};

/// Debian packages: mkfs.btrfs/btrfs (scratch filesystems), perf (live test's independent
/// count), tmux (dashboard test).
const DEB_PACKAGES: &[(&str, &str)] = &[
    ("btrfs-progs", "mkfs.btrfs"),
    ("linux-perf", "perf"),
    ("tmux", "tmux"),
    // cargo xtask vm-test
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("busybox-static", "busybox"),
    ("cpio", "cpio"),
    // cargo xtask bench-vcpu (max RSS)
    ("time", "/usr/bin/time"),
];
/// platform.md: 0.10.x loads rustc's own LLVM 22; 0.11+ needs a system LLVM 23.
const BPF_LINKER: &str = "bpf-linker@0.10.4";

/// Everything: the Debian packages the tests and the recorder need, and the toolchain.
pub fn setup() -> Result<()> {
    setup_packages()?;
    setup_toolchain()
}

/// Debian packages (root installs them; otherwise a clear error naming them).
fn setup_packages() -> Result<()> {
    let missing: Vec<&str> = DEB_PACKAGES
        .iter()
        .filter(|(_, bin)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {missing:?}: run `sudo apt-get install {}`",
                missing.join(" ")
            );
        }
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// What building the binary needs: nightly with rust-src and bpf-linker 0.10.x (the eBPF
/// object is built by refgate-user's build.rs). Replaying needs nothing more.
pub fn setup_toolchain() -> Result<()> {
    if !output(Command::new("rustup").args(["toolchain", "list"])).contains("nightly") {
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        sh(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !output(Command::new("bpf-linker").arg("--version")).contains("0.10.") {
        sh(Command::new("cargo").args(["install", BPF_LINKER, "--locked"]))?;
    }
    Ok(())
}
