//! `refgate policies`: the runner policies of the registry (`crate::registry`: the built-in
//! ones, one per kernel era, and any the crate using this library added), with the kernel
//! versions `--policy` accepts as their aliases.

use anyhow::Result;
use refgate_replay::policy::PolicyInfo;
use serde_json::json;

pub fn run(as_json: bool) -> Result<()> {
    let reg = crate::registry::get();
    if as_json {
        let v: Vec<_> = reg.iter().map(info_json).collect();
        let out = json!({"schema": "refgate.policies/1", "policies": v});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(reg.iter()));
    }
    Ok(())
}

fn info_json(i: &PolicyInfo) -> serde_json::Value {
    json!({
        "name": i.name,
        "kernels": i.kernels,
        "aliases": i.aliases,
        "about": i.about,
        "headline": i.headline,
    })
}

/// One line per policy: name, kernels, what it does; then its aliases indented under it.
fn table<'a>(infos: impl Iterator<Item = &'a PolicyInfo>) -> String {
    use std::fmt::Write;
    let infos: Vec<_> = infos.collect();
    // Columns as wide as their longest entry (policies from outside the crate included).
    let wn = infos
        .iter()
        .map(|i| i.name.chars().count())
        .fold(14, usize::max);
    let wk = infos
        .iter()
        .map(|i| i.kernels.chars().count())
        .fold(12, usize::max);
    let mut o = String::new();
    for i in infos {
        let _ = writeln!(o, "{:<wn$} {:<wk$} {}", i.name, i.kernels, i.about);
        if !i.aliases.is_empty() {
            let _ = writeln!(o, "{:<wn$} aliases: {}", "", i.aliases.join(", "));
        }
    }
    let _ = writeln!(
        o,
        "\n`refgate replay --policy NAME` takes a name or an alias; `refgate compare` runs {} \
         unless given `--policies`.",
        crate::registry::get().headline_names().join(", ")
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_policy_is_listed_with_its_aliases() {
        let t = table(crate::registry::get().iter());
        for i in crate::registry::get().iter() {
            assert!(t.contains(i.name) && t.contains(i.kernels), "{t}");
            for a in i.aliases {
                assert!(t.contains(a), "{a} missing: {t}");
            }
        }
    }
}
