//! Builds the eBPF object (refgate-ebpf, for bpfel with nightly + bpf-linker) into OUT_DIR,
//! where `src/record/loader.rs` embeds it. `AYA_BUILD_SKIP=1` skips it (an empty object is
//! embedded and `refgate record` then says the binary was built without its eBPF programs).
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../refgate-ebpf");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("refgate");
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        if !obj.exists() {
            fs::write(&obj, [])?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "refgate-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
