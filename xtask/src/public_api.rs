//! `cargo xtask public-api [--bless]`: refgate-replay's public surface as a sorted list of
//! paths, compared with the committed `refgate-replay/public-api.txt`, so that a change to
//! the library's API is a visible diff (issue "Code shape", part 2).
//!
//! The list comes from rustdoc's JSON output (nightly, which `cargo xtask setup` installs;
//! the format is unstable, so only the few fields read below are relied on). It walks from
//! the crate root the way a user names things: modules, re-exports, and each type's public
//! fields, variants, inherent methods and implemented traits; hidden items (the `internals`
//! feature's modules) are not there because the feature is off. Names only: a changed
//! signature under an unchanged name does not show.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Where the committed list lives, relative to the workspace root.
const LIST: &str = "refgate-replay/public-api.txt";

/// The rustdoc JSON of refgate-replay's library (its own target dir: another toolchain).
fn rustdoc_json(root: &Path) -> Result<Value> {
    let target = root.join("target/api");
    crate::sh(
        Command::new("cargo")
            .current_dir(root)
            .args([
                "+nightly",
                "rustdoc",
                "-q",
                "--locked",
                "-p",
                "refgate-replay",
                "--lib",
            ])
            .arg("--target-dir")
            .arg(&target)
            .args(["--", "-Z", "unstable-options", "--output-format", "json"])
            // The stable toolchain's variables (set when xtask runs under cargo) would
            // override `+nightly`.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTDOC"),
    )?;
    let path = target.join("doc/refgate_replay.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read rustdoc's JSON {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// An item's kind (`module`, `struct`, `use`, …): the one key of its `inner`.
fn kind(item: &Value) -> &str {
    item["inner"]
        .as_object()
        .and_then(|o| o.keys().next())
        .map_or("?", String::as_str)
}

fn ids(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_u64().map(|n| n.to_string()))
}

/// Walks rustdoc's index from the crate root.
struct Walk<'a> {
    index: &'a serde_json::Map<String, Value>,
    lines: BTreeSet<String>,
    /// Items whose members are listed already (under the first path that reached them).
    expanded: HashSet<String>,
}

impl Walk<'_> {
    fn module(&mut self, id: &str, path: &str) {
        let Some(m) = self.index.get(id) else { return };
        for child in ids(&m["inner"]["module"]["items"]) {
            self.item(&child, path, None);
        }
    }

    /// `item` named `as_name` (a re-export's name) or its own name, inside `path`.
    fn item(&mut self, id: &str, path: &str, as_name: Option<&str>) {
        let Some(it) = self.index.get(id) else { return };
        let k = kind(it);
        if k == "use" {
            let u = &it["inner"]["use"];
            let target = u["id"].as_u64().map(|n| n.to_string());
            let name = u["name"].as_str().unwrap_or("?");
            match target {
                Some(t) if u["is_glob"] == true => self.module(&t, path),
                Some(t) if self.index.contains_key(&t) => self.item(&t, path, Some(name)),
                // Another crate's item, re-exported.
                _ => {
                    let src = u["source"].as_str().unwrap_or("?");
                    self.lines
                        .insert(format!("{path}::{name} (re-export of {src})"));
                }
            }
            return;
        }
        let name = as_name.or(it["name"].as_str()).unwrap_or("?");
        let here = format!("{path}::{name}");
        self.lines.insert(format!("{k} {here}"));
        if k == "module" {
            self.module(id, &here);
        } else if self.expanded.insert(id.to_string()) {
            self.members(it, k, &here);
        }
    }

    /// A type's or trait's public members.
    fn members(&mut self, it: &Value, k: &str, here: &str) {
        let inner = &it["inner"][k];
        let mut member_ids: Vec<String> = Vec::new();
        match k {
            "struct" => {
                member_ids.extend(ids(&inner["kind"]["plain"]["fields"]));
                member_ids.extend(ids(&inner["kind"]["tuple"]));
            }
            "enum" => member_ids.extend(ids(&inner["variants"])),
            "trait" => member_ids.extend(ids(&inner["items"])),
            _ => {}
        }
        for m in member_ids {
            if let Some(v) = self.index.get(&m) {
                let name = v["name"].as_str().unwrap_or("?");
                self.lines.insert(format!("{} {here}::{name}", kind(v)));
            }
        }
        for imp in ids(&inner["impls"]) {
            self.implementation(&imp, here);
        }
    }

    /// An impl block of the type at `here`: its public methods (inherent) or the trait.
    fn implementation(&mut self, id: &str, here: &str) {
        let Some(imp) = self.index.get(id) else {
            return;
        };
        let i = &imp["inner"]["impl"];
        if i["is_synthetic"] == true || !i["blanket_impl"].is_null() {
            return; // auto traits and blanket impls: not something this crate wrote
        }
        match i["trait"]["path"].as_str() {
            Some(t) => {
                self.lines.insert(format!("impl {here}: {t}"));
            }
            None => {
                for m in ids(&i["items"]) {
                    if let Some(v) = self.index.get(&m)
                        && v["visibility"] == "public"
                    {
                        let name = v["name"].as_str().unwrap_or("?");
                        self.lines.insert(format!("{} {here}::{name}", kind(v)));
                    }
                }
            }
        }
    }
}

/// The public surface from rustdoc JSON, one line per item, sorted.
pub fn surface(doc: &Value) -> Result<Vec<String>> {
    let index = doc["index"]
        .as_object()
        .context("rustdoc JSON without an index")?;
    let root = doc["root"]
        .as_u64()
        .context("rustdoc JSON without a root")?
        .to_string();
    let name = index
        .get(&root)
        .and_then(|r| r["name"].as_str())
        .unwrap_or("crate")
        .to_string();
    let mut w = Walk {
        index,
        lines: BTreeSet::new(),
        expanded: HashSet::new(),
    };
    w.module(&root, &name);
    Ok(w.lines.into_iter().collect())
}

/// Compares the surface with the committed list; `bless` rewrites the list instead.
pub fn check(root: &Path, bless: bool) -> Result<()> {
    let now = surface(&rustdoc_json(root)?)?;
    let list = root.join(LIST);
    if bless {
        std::fs::write(&list, now.join("\n") + "\n")?;
        eprintln!("xtask: wrote {} public items to {LIST}", now.len());
        return Ok(());
    }
    let text = std::fs::read_to_string(&list).unwrap_or_default();
    let was: BTreeSet<&str> = text.lines().collect();
    let is: BTreeSet<&str> = now.iter().map(String::as_str).collect();
    let added: Vec<_> = is.difference(&was).map(|l| format!("+ {l}")).collect();
    let removed: Vec<_> = was.difference(&is).map(|l| format!("- {l}")).collect();
    if !added.is_empty() || !removed.is_empty() {
        bail!(
            "refgate-replay's public API differs from {LIST} ({} added, {} removed):\n{}\n{}\n\
             If the change is intended, run `cargo xtask public-api --bless` and commit the list.",
            added.len(),
            removed.len(),
            added.join("\n"),
            removed.join("\n")
        );
    }
    eprintln!(
        "xtask: refgate-replay's public API matches {LIST} ({} items)",
        now.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A crate `c` with `pub mod m { pub struct S { pub f: u8 } impl S { pub fn new() } }`,
    /// `pub use m::S as T;` and a re-export of another crate's item.
    fn doc() -> Value {
        json!({
            "root": 0,
            "index": {
                "0": {"name": "c", "inner": {"module": {"items": [1, 5, 6]}}},
                "1": {"name": "m", "inner": {"module": {"items": [2]}}},
                "2": {"name": "S", "inner": {"struct": {
                    "kind": {"plain": {"fields": [3]}}, "impls": [4, 7]}}},
                "3": {"name": "f", "inner": {"struct_field": {}}},
                "4": {"inner": {"impl": {"is_synthetic": false, "blanket_impl": null,
                    "trait": null, "items": [8, 9]}}},
                "5": {"inner": {"use": {"source": "m::S", "name": "T", "id": 2, "is_glob": false}}},
                "6": {"inner": {"use": {"source": "std::sync::Arc", "name": "Arc", "id": 99, "is_glob": false}}},
                "7": {"inner": {"impl": {"is_synthetic": false, "blanket_impl": null,
                    "trait": {"path": "Clone"}, "items": []}}},
                "8": {"name": "new", "visibility": "public", "inner": {"function": {}}},
                "9": {"name": "hidden", "visibility": "crate", "inner": {"function": {}}}
            }
        })
    }

    #[test]
    fn paths_members_and_reexports_are_listed_private_methods_are_not() {
        assert_eq!(
            surface(&doc()).unwrap(),
            [
                "c::Arc (re-export of std::sync::Arc)",
                "function c::m::S::new",
                "impl c::m::S: Clone",
                "module c::m",
                "struct c::T",
                "struct c::m::S",
                "struct_field c::m::S::f",
            ]
        );
    }
}
