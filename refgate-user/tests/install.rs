//! `cargo xtask install` into a temporary prefix, with the binary this test run built (the xtask
//! itself would first make a release build): binary, completions and man pages land where they
//! should, and the man page renders.
// The install code is std + anyhow only, so that it can be included here and tested as is.
#[allow(dead_code)]
#[path = "../../xtask/src/install.rs"]
mod install;

use std::path::Path;
use std::process::Command;

#[test]
fn install_into_a_prefix() {
    let d = tempfile::tempdir().unwrap();
    let prefix = d.path().join("usr");
    let bin = Path::new(env!("CARGO_BIN_EXE_refgate"));
    let written = install::install_files(bin, &prefix).unwrap();
    for rel in [
        "bin/refgate",
        "share/bash-completion/completions/refgate",
        "share/zsh/site-functions/_refgate",
        "share/fish/vendor_completions.d/refgate.fish",
        "share/man/man1/refgate.1",
        "share/man/man1/refgate-export.1",
        "share/man/man1/refgate-record.1",
    ] {
        let p = prefix.join(rel);
        assert!(p.is_file(), "{rel} missing");
        assert!(written.contains(&p), "{rel} not reported");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(prefix.join("bin/refgate"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // The installed binary runs.
    let o = Command::new(prefix.join("bin/refgate"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("refgate "));

    let page = prefix.join("share/man/man1/refgate.1");
    let roff = std::fs::read_to_string(&page).unwrap();
    assert!(roff.contains("\n.TH refgate 1 "), "no .TH header:\n{roff}");
    // Rendered by man(1) where it is installed (Debian: man-db).
    match Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .output()
    {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "man -l failed: {err}");
            assert!(!err.contains("warning"), "troff warnings: {err}");
            for needle in ["NAME", "SYNOPSIS", "refgate-export(1)", "refgate-record(1)"] {
                assert!(
                    text.contains(needle),
                    "rendered page lacks {needle}:\n{text}"
                );
            }
        }
        Err(e) => eprintln!("man(1) not available ({e}): checked the roff header only"),
    }

    // Installing again over the first install works (the binary is replaced atomically).
    install::install_files(bin, &prefix).unwrap();
    assert!(
        std::fs::read_dir(prefix.join("bin"))
            .unwrap()
            .all(|e| e.unwrap().file_name() == "refgate"),
        "no temporary file left in bin/"
    );
}
