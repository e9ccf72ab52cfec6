//! Kernel symbols from /proc/kallsyms: the btrfs text range the eBPF stack filter needs, and
//! the function names that let user space name a contended lock's role.
use std::fs;

use anyhow::{Context, Result, bail};

/// Text symbols, sorted by address.
#[derive(Clone)]
pub struct Kallsyms {
    syms: Vec<(u64, String, bool)>, // (address, name, in the btrfs module)
}

impl Kallsyms {
    pub fn load() -> Result<Kallsyms> {
        let text = fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        let k = Kallsyms::parse(&text);
        if k.syms.iter().all(|(a, _, _)| *a == 0) {
            bail!(
                "/proc/kallsyms shows no addresses (kernel.kptr_restrict hides them from this \
                 user). Run refgate as root, or set `sysctl kernel.kptr_restrict=0`."
            );
        }
        Ok(k)
    }

    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: Vec<(u64, String, bool)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?;
                if !matches!(ty, "t" | "T") {
                    return None;
                }
                let name = it.next()?;
                let module = it.next() == Some("[btrfs]");
                Some((addr, name.to_string(), module))
            })
            .collect();
        syms.sort_unstable_by_key(|s| s.0);
        Kallsyms { syms }
    }

    /// The `[lo, hi)` text range of btrfs. As a module it is btrfs.ko's symbols; built in, it is
    /// the run of fs/btrfs functions around `btrfs_run_delayed_refs` (the objects of one
    /// directory are linked together; static helpers without "btrfs" in their name sit between
    /// them, so a run ends only after a long stretch of foreign names).
    pub fn btrfs_text(&self) -> Option<(u64, u64)> {
        let module: Vec<usize> = (0..self.syms.len()).filter(|&i| self.syms[i].2).collect();
        if let (Some(&first), Some(&last)) = (module.first(), module.last()) {
            let hi = self
                .syms
                .get(last + 1)
                .map_or(self.syms[last].0 + 4096, |s| s.0);
            return Some((self.syms[first].0, hi));
        }
        const GAP: usize = 400;
        let anchor = self
            .syms
            .iter()
            .position(|s| s.1 == "btrfs_run_delayed_refs")?;
        let is_btrfs = |i: usize| self.syms[i].1.contains("btrfs");
        // Extend in one direction until GAP foreign names in a row; returns the last btrfs index.
        let extend = |step: fn(usize) -> Option<usize>| {
            let (mut last, mut i, mut foreign) = (anchor, anchor, 0);
            while let Some(j) = step(i).filter(|&j| j < self.syms.len()) {
                i = j;
                if is_btrfs(i) {
                    last = i;
                    foreign = 0;
                } else {
                    foreign += 1;
                    if foreign > GAP {
                        break;
                    }
                }
            }
            last
        };
        let lo = extend(|i| i.checked_sub(1));
        let hi = extend(|i| i.checked_add(1));
        let end = self
            .syms
            .get(hi + 1)
            .map_or(self.syms[hi].0 + 4096, |s| s.0);
        Some((self.syms[lo].0, end))
    }

    /// Whether btrfs is loaded as a module (its symbols carry `[btrfs]`).
    pub fn btrfs_is_module(&self) -> bool {
        self.syms.iter().any(|s| s.2)
    }

    /// Whether a function with exactly this name exists (not inlined away).
    pub fn has(&self, name: &str) -> bool {
        self.syms.iter().any(|s| s.1 == name)
    }

    /// The function containing `addr` (the nearest symbol at or below it).
    pub fn name_of(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        (i > 0).then(|| self.syms[i - 1].1.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_range_spans_static_helpers() {
        let mut text = String::from("ffffffff81000000 T _stext\n");
        let mut a = 0xffffffff81100000u64;
        let mut push = |name: &str, text: &mut String| {
            text.push_str(&format!("{a:x} t {name}\n"));
            a += 0x100;
        };
        for i in 0..600 {
            push(&format!("ext4_fn{i}"), &mut text);
        }
        push("btrfs_first", &mut text);
        push("balance_level", &mut text);
        push("btrfs_run_delayed_refs", &mut text);
        for i in 0..50 {
            push(&format!("static_helper{i}"), &mut text);
        }
        push("btrfs_last", &mut text);
        for i in 0..600 {
            push(&format!("xfs_fn{i}"), &mut text);
        }
        let k = Kallsyms::parse(&text);
        let (lo, hi) = k.btrfs_text().unwrap();
        assert_eq!(k.name_of(lo), Some("btrfs_first"));
        assert_eq!(k.name_of(hi - 1), Some("btrfs_last"));
        assert_eq!(k.name_of(hi), Some("xfs_fn0"));
    }

    #[test]
    fn module_range_is_the_module() {
        let text = "ffffffffc0000000 t foo\nffffffffc0001000 t btrfs_x\t[btrfs]\n\
                    ffffffffc0002000 t other\t[btrfs]\nffffffffc0003000 t zz\t[xfs]\n";
        let k = Kallsyms::parse(text);
        assert_eq!(
            k.btrfs_text(),
            Some((0xffffffffc0001000, 0xffffffffc0003000))
        );
    }
}
