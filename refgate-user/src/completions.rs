//! `refgate completions SHELL` (clap_complete) and `refgate manpage` (clap_mangen): generated
//! from the CLI definition itself, so they never disagree with `--help`. `cargo xtask install`
//! runs both to put them where shells and `man` look.
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// The completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut crate::Cli::command(), "refgate", &mut buf);
    write_stdout(&buf)
}

/// `refgate.1` on stdout, or, with `dir`, `refgate.1` and one `refgate-SUBCOMMAND.1` per
/// subcommand written into `dir`.
pub fn manpage(dir: Option<&Path>) -> Result<()> {
    let cmd = crate::Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            write_stdout(&buf)
        }
    }
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(buf: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(buf).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}
