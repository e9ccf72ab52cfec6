//! `cargo xtask layers` (and the first step of `cargo xtask test`): refgate-replay's modules
//! import only from their own layer or the layers below it.
//!
//! The layers are declared once, in `refgate-replay/src/lib.rs`'s "Layers" section: one line
//! per layer, bottom first, `//! N. **name**: `mod_a`, `mod_b`, …`. Every top-level module
//! (a file `src/x.rs` or a directory `src/x/`) must be placed in exactly one. Then every
//! `crate::` path in the module's code — `use` lines, grouped `use crate::{a, b::c}`, and
//! inline paths such as `crate::validate::TxnCounts`, test code included — must name a
//! module of the same or a lower layer. Comments are not code: a doc link may point up.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// Module name → layer index (0 is the bottom), with the layers' names.
#[derive(Debug, Default)]
pub struct Layers {
    pub names: Vec<String>,
    pub of: BTreeMap<String, usize>,
}

/// Parses the "Layers" list of `lib.rs`'s crate docs.
pub fn parse_layers(lib_rs: &str) -> Result<Layers> {
    let mut l = Layers::default();
    let (mut in_section, mut listing) = (false, false);
    for line in lib_rs.lines() {
        let Some(doc) = line.trim_start().strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with('#') {
            in_section = doc.trim_start_matches('#').trim() == "Layers";
            listing = false;
            continue;
        }
        if !in_section {
            continue;
        }
        // `N. **name**: `a`, `b`, … — prose`: the modules are the backticked names before
        // the dash, which may wrap onto the next lines.
        let list = match doc.split_once(". ") {
            Some((num, rest)) if num.parse::<usize>().is_ok() => {
                let Some((name, mods)) = rest.split_once(':') else {
                    bail!("lib.rs Layers line without `name: modules`: {doc}");
                };
                l.names
                    .push(name.trim_matches(|c| c == '*' || c == ' ').to_string());
                listing = true;
                mods
            }
            _ if listing => doc,
            _ => continue,
        };
        let (mods, prose) = match list.split_once('—') {
            Some((m, _)) => (m, true),
            None => (list, false),
        };
        let idx = l.names.len() - 1;
        for m in mods.split('`').skip(1).step_by(2) {
            if let Some(prev) = l.of.insert(m.to_string(), idx) {
                bail!("module `{m}` is in two layers ({prev} and {idx})");
            }
        }
        listing &= !prose;
    }
    if l.names.is_empty() {
        bail!("refgate-replay/src/lib.rs has no `# Layers` section with numbered layer lines");
    }
    Ok(l)
}

/// `code` without its comments (line comments outside string literals, and `/* */` blocks).
fn strip_comments(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let b = code.as_bytes();
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            in_str = c != b'"';
            i += 1;
        } else if c == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            // A char literal (`'"'`, `'\''`), not a lifetime: copied whole.
            let end = code[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e + 1);
            out.push_str(&code[i..end]);
            i = end;
        } else if c == b'"' {
            in_str = true;
            out.push('"');
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = code[i..].find("*/").map_or(b.len(), |e| i + e + 2);
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

fn ident_end(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// The top-level modules `code` names through `crate::`, with their line numbers.
pub fn crate_refs(code: &str) -> Vec<(usize, String)> {
    let code = strip_comments(code);
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `refgate_replay::…` or `$crate::` are not this crate's paths seen from inside.
        if at > 0 && {
            let p = code.as_bytes()[at - 1];
            p.is_ascii_alphanumeric() || p == b'_' || p == b'$'
        } {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at depth 0 of the group.
            let (mut depth, mut start) = (0usize, true);
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        let s = &group[i..];
                        out.push((line, s[..ident_end(s)].to_string()));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = &rest[..ident_end(rest)];
            if !name.is_empty() {
                out.push((line, name.to_string()));
            }
        }
    }
    out
}

/// The names `lib.rs` re-exports at the crate root (`pub use report::{Report, run};`), each
/// with the module it comes from.
pub fn lib_reexports(lib_rs: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in strip_comments(lib_rs).lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';').trim();
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for n in names.split(',') {
            // `a::B as C` is named `C`; `a::B` is named `B`.
            let n = n.trim();
            let name = n.rsplit(" as ").next().unwrap_or(n);
            let name = name.rsplit("::").next().unwrap_or(name).trim();
            if !name.is_empty() {
                out.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    out
}

/// The top-level module a source file belongs to (`None` for `lib.rs`, the facade).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// Every cross-layer reference of the crate at `src`, as `file:line: message`.
pub fn violations(src: &Path) -> Result<Vec<String>> {
    let lib = std::fs::read_to_string(src.join("lib.rs"))?;
    let layers = parse_layers(&lib)?;
    let reexports = lib_reexports(&lib);
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let Some(m) = module_of(src, f) else { continue };
        let Some(&mine) = layers.of.get(&m) else {
            bad.push(format!(
                "{}: module `{m}` is in no layer of lib.rs's `# Layers`",
                f.display()
            ));
            continue;
        };
        let code = std::fs::read_to_string(f)?;
        for (line, target) in crate_refs(&code) {
            // A name lib.rs re-exports (`crate::Report`) belongs to the module it comes from.
            let module = reexports.get(&target).unwrap_or(&target);
            match layers.of.get(module) {
                // A macro or a prelude name: not a module.
                None => continue,
                Some(&theirs) if theirs > mine => bad.push(format!(
                    "{}:{line}: `{m}` ({}) names `crate::{target}` ({}), a layer above it",
                    f.display(),
                    layers.names[mine],
                    layers.names[theirs]
                )),
                Some(_) => {}
            }
        }
    }
    Ok(bad)
}

/// Fails listing every cross-layer reference of refgate-replay.
pub fn check(root: &Path) -> Result<()> {
    let src = root.join("refgate-replay/src");
    let bad = violations(&src)?;
    if !bad.is_empty() {
        bail!(
            "refgate-replay's layering is broken ({} references; the layers are in \
             refgate-replay/src/lib.rs):\n{}",
            bad.len(),
            bad.join("\n")
        );
    }
    eprintln!("xtask: refgate-replay layering holds ({})", src.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_path_is_seen_and_comments_are_not() {
        let code = "use crate::a::X;\nuse crate::{b, c::{D, E}, f};\n\
                    fn g() { crate::h::i(); refgate_replay::j::k(); }\n\
                    // crate::commented\n/// [`crate::doc`]\nlet s = \"// not a comment\"; crate::l::m;\n\
                    let q = '\"'; crate::n::o; let r: &'static str = \"\";\n";
        let names: Vec<_> = crate_refs(code).into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["a", "b", "c", "f", "h", "l", "n"]);
    }

    #[test]
    fn reexports_are_read_from_lib_rs() {
        let lib = "pub use engine::{Config, Engine};\npub use report::{Report, run as go};\n\
                   // pub use fake::X;\npub use params::Params;\nuse private::Y;\n";
        let r = lib_reexports(lib);
        assert_eq!(r["Config"], "engine");
        assert_eq!(r["go"], "report");
        assert_eq!(r["Params"], "params");
        assert_eq!(r.len(), 5, "{r:?}");
    }

    #[test]
    fn layers_come_from_the_lib_docs() {
        let lib = "//! intro `x`\n//! # Layers\n//! 1. **seam**: `exec`,\n//!    `params` — prose\n\
                   //!    `not_a_module`\n//! 2. **model**: `head` — `nor_this`\n//! # Next\n//! 3. x: `y`\n";
        let l = parse_layers(lib).unwrap();
        assert_eq!(l.names, ["seam", "model"]);
        assert_eq!(l.of.len(), 3);
        assert_eq!(l.of["head"], 1);
    }

    #[test]
    fn an_upward_reference_is_reported_and_a_downward_one_is_not() {
        let d = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("model")).unwrap();
        std::fs::write(
            d.join("lib.rs"),
            "//! # Layers\n//! 1. **seam**: `exec`\n//! 2. **model**: `model`\n",
        )
        .unwrap();
        std::fs::write(d.join("exec.rs"), "fn f() { crate::model::g(); }\n").unwrap();
        std::fs::write(d.join("model/mod.rs"), "use crate::exec;\n").unwrap();
        let bad = violations(&d).unwrap();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("exec.rs:1") && bad[0].contains("crate::model"));
        // A name lib.rs re-exports counts as its module: `crate::G` from the seam is `model`.
        std::fs::write(
            d.join("lib.rs"),
            "//! # Layers\n//! 1. **seam**: `exec`\n//! 2. **model**: `model`\npub use model::G;\n",
        )
        .unwrap();
        std::fs::write(d.join("exec.rs"), "fn f() { crate::G::new(); }\n").unwrap();
        let bad = violations(&d).unwrap();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("crate::G"), "{bad:?}");
        std::fs::write(d.join("stray.rs"), "").unwrap();
        assert_eq!(violations(&d).unwrap().len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
