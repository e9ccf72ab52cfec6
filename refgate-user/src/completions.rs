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
    let mut cmd = crate::Cli::command();
    cmd.build();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            write_pages(&cmd, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))
        }
        None => write_stdout(page(&cmd)?.as_bytes()),
    }
}

/// `cmd`'s page and its subcommands', into `dir`.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    std::fs::write(dir.join(format!("{name}.1")), page(cmd)?)?;
    Ok(())
}

/// One man page: clap_mangen's, with the examples (the command's `after_long_help`,
/// `crate::examples`) as an EXAMPLES section of unfilled lines where clap_mangen would
/// write them as one filled EXTRA paragraph.
fn page(cmd: &clap::Command) -> Result<String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    let roff = String::from_utf8(buf).context("clap_mangen wrote non-UTF-8")?;
    // clap_mangen's synopsis lists every option without its value; clap's usage line is
    // shorter and the OPTIONS section gives each option's value placeholder.
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    let roff = replace_section(&roff, "SYNOPSIS", &roff_line(usage));
    let Some(examples) = cmd.get_after_long_help().map(|h| h.to_string()) else {
        return Ok(roff);
    };
    let lines: Vec<String> = examples
        .lines()
        .filter(|l| *l != "Examples:")
        .map(|l| roff_line(l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let body = format!(".nf\n{}\n.fi", lines.join("\n"));
    Ok(replace_section(&roff, "EXTRA", &body).replacen(".SH EXTRA\n", ".SH EXAMPLES\n", 1))
}

/// `roff` with the body of section `name` (up to the next `.SH`) replaced by `body`.
fn replace_section(roff: &str, name: &str, body: &str) -> String {
    let head = format!(".SH {name}\n");
    let Some(start) = roff.find(&head).map(|s| s + head.len()) else {
        return roff.to_string();
    };
    let end = roff[start..]
        .find("\n.SH ")
        .map_or(roff.len(), |e| start + e + 1);
    format!("{}{body}\n{}", &roff[..start], &roff[end..])
}

/// A line of text as roff prints it literally: backslashes and hyphens escaped, a leading
/// control character neutralised.
fn roff_line(l: &str) -> String {
    let e = l.replace('\\', "\\e").replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand, depth first.
    fn all(cmd: &clap::Command) -> Vec<clap::Command> {
        let mut v = vec![cmd.clone()];
        for s in cmd.get_subcommands() {
            v.extend(all(s));
        }
        v
    }

    /// Every argument is described; every option that takes a value names it (the man page
    /// and `--help` placeholder) and says how to complete it: from its closed set, as a path,
    /// or not at all (`ValueHint::Other`), never by default file names.
    #[test]
    fn every_argument_is_described_named_and_completed_on_purpose() {
        let mut bad = Vec::new();
        for cmd in all(&crate::Cli::command()) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let what = format!("{} {id}", cmd.get_name());
                if a.get_help().is_none() {
                    bad.push(format!("{what}: no description"));
                }
                let takes_value = a.get_action().takes_values();
                if !takes_value {
                    continue;
                }
                if a.get_value_names().is_none() && !a.is_positional() {
                    bad.push(format!("{what}: no value placeholder"));
                }
                let closed = !a.get_possible_values().is_empty();
                if !closed && a.get_value_hint() == clap::ValueHint::Unknown {
                    bad.push(format!("{what}: completes file names by default"));
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    /// Each page: a NAME line of its own, the usage as SYNOPSIS, the README's commands as
    /// EXAMPLES (each subcommand's own), no page for `help`.
    #[test]
    fn man_pages_have_names_synopses_and_examples() {
        let mut cmd = crate::Cli::command();
        cmd.build();
        let pages = all(&cmd);
        assert!(pages.iter().all(|c| c.get_name() != "help"));
        for c in pages {
            let roff = page(&c).unwrap();
            let name = c.get_display_name().unwrap_or(c.get_name()).to_string();
            assert!(!roff.contains("The refgate binary"), "{name}: {roff}");
            assert!(roff.contains(".SH EXAMPLES\n.nf\n"), "{name}: no examples");
            assert!(!roff.contains(".SH EXTRA"), "{name}");
            let sub = name.trim_start_matches("refgate").trim_start_matches('-');
            let invocation = format!("refgate {sub}").trim_end().replace('-', "\\-");
            assert!(
                roff.contains(&invocation),
                "{name}: no example runs {invocation}"
            );
            assert!(roff.contains(".SH SYNOPSIS\nrefgate"), "{name}: {roff}");
        }
    }

    #[test]
    fn roff_lines_print_literally() {
        assert_eq!(roff_line("a-b\\c"), "a\\-b\\ec");
        assert_eq!(roff_line(".x"), "\\&.x");
    }
}
