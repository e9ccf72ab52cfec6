//! `cargo xtask test`, the README's test command: every test — unit, property, scenario,
//! live-kernel (as root), the loom model, a short fuzz run, a short mutation run, and the
//! QEMU kprobe test (root).
use anyhow::Result;

use crate::{
    build_release, cargo, fuzz, is_root, layers, mutants, public_api, refgate, root, setup::setup,
    sh, vm,
};

pub fn run() -> Result<()> {
    setup()?;
    // Seconds, and a broken layering is a design error the tests below would not catch.
    layers::check(&root())?;
    // The library's surface against the committed list (a change must be a visible diff).
    public_api::check(&root(), false)?;
    sh(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "refgate-ebpf",
        "--locked",
    ]))?;
    // loom model of the seed gate's wait/wake protocol (own target dir: other cfg).
    sh(cargo()
        .args([
            "test",
            "--locked",
            "--release",
            "-p",
            "refgate-replay",
            "--test",
            "loom_gate",
        ])
        .args(["--target-dir", "target/loom"])
        .env("RUSTFLAGS", "--cfg loom"))?;
    // A short replay soak: random policies, engines, CPU counts and seeds, the invariant
    // every time, RSS flat (the long run: `cargo xtask soak --replay --minutes 10`).
    crate::soak_replay::soak(&root(), 0.5, None)?;
    // A short fuzz run of every target (the long runs: `cargo xtask fuzz`).
    fuzz::fuzz(&root(), Some(30), None)?;
    // A short mutation run: mutants the tests must catch (the long runs: `cargo xtask mutants`).
    mutants::mutants(None, true)?;
    // The kprobe path, on Debian's stock kernel under QEMU (root: it builds an initramfs
    // and the guest runs the recorder as root).
    if is_root() {
        build_release()?;
        vm::vm_test(&root(), &refgate(), false)
    } else {
        eprintln!("xtask: vm-test skipped: it needs root");
        Ok(())
    }
}
