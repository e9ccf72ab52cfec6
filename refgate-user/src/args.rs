//! Options shared by several subcommands, declared once (`#[command(flatten)]`): where a
//! workload comes from ([`TraceInput`]), the model's settings ([`ModelArgs`]) and the value
//! parsers of the open sets (`--policy`, from the policy registry). Closed sets (engine, seq
//! rule, extent lock, export format) are `clap::ValueEnum`s declared on their types, so help,
//! completions and usage errors (exit status 2, clap's wording) all come from one place.

use std::path::PathBuf;

use clap::ValueHint;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use refgate_replay::{
    params::{ExtentLock, ExtentTreeModel},
    trace_workload::SeqRule,
};

/// A trace and how it becomes a workload: `replay`, `compare` and `replay --validate`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TraceInput {
    /// Trace to replay (default: the bundled sample, recorded on btrfs).
    #[arg(value_name = "TRACE", value_hint = ValueHint::FilePath)]
    pub trace: Option<PathBuf>,
    /// Copies of the workload over disjoint extents (`auto`: enough that every CPU has a
    /// writer).
    #[arg(long, default_value = "auto", value_parser = parse_replicate, value_name = "N|auto",
          value_hint = ValueHint::Other)]
    pub replicate: Replicate,
    /// A task's adds further apart than this start a new transaction handle (no kprobes).
    #[arg(long, default_value_t = 1000, value_name = "US", value_hint = ValueHint::Other,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000_000))]
    pub handle_gap_us: u64,
    /// Which recorded refs get 3.x tree-mod seqs under pre/seed (§1.6).
    #[arg(long, value_enum, default_value_t = SeqRule::Data)]
    pub seq_rule: SeqRule,
    /// Refuse a damaged trace (cut, corrupt, or unfinished after a crash) instead of
    /// replaying what precedes the damage.
    #[arg(long)]
    pub strict: bool,
}

/// The virtual engine's model settings: `replay` and `compare`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ModelArgs {
    /// Override a cost of the virtual engine's cost model, NAME=NS (repeatable); the report
    /// lists the names, values and where each came from.
    #[arg(long = "cost", value_name = "NAME=NS", value_hint = ValueHint::Other)]
    pub costs: Vec<String>,
    /// Tie-breaking among virtual CPUs ready at the same virtual instant.
    #[arg(long, default_value_t = 0, value_name = "SEED", value_hint = ValueHint::Other)]
    pub sim_seed: u64,
    /// How tasks wait for the extent tree's lock under virtual CPUs; default: the policy's era.
    #[arg(long, value_enum)]
    pub extent_lock: Option<ExtentLock>,
    /// How the extent tree is locked: `btree`, a B-tree of locked blocks walked with the
    /// kernel's lock coupling; `single`, one lock for the whole tree and update (the model
    /// before the B-tree, docs/extent-tree.md).
    #[arg(long, value_enum, default_value_t = ExtentTreeModel::Btree)]
    pub extent_tree: ExtentTreeModel,
    /// Extent items the B-tree holds before the first transaction; default: the trace's
    /// initial extents (the replay's report says which was used).
    #[arg(long, value_name = "N", value_hint = ValueHint::Other, value_parser = clap::value_parser!(u64).range(1..=MAX_EXTENT_ITEMS))]
    pub extent_items: Option<u64>,
}

/// `--extent-items` at most 10^8: a 100 TB filesystem of 1 MiB extents. The tree's blocks
/// take about 3 bytes per item (10^8 items: 300 MB of RSS, 0.8 s to build, measured on the
/// bundled sample), so the bound keeps it within what the replay's own limits allow.
pub const MAX_EXTENT_ITEMS: u64 = 100_000_000;

impl ModelArgs {
    /// The extent tree's settings in `params`: the model, the size override, and the block
    /// size the trace was recorded with (`nodesize`; mkfs's 16 KiB default if unknown).
    pub fn apply_extent_tree(&self, params: &mut refgate_replay::Params, nodesize: Option<u32>) {
        params.extent_tree = self.extent_tree;
        params.extent_items = self.extent_items;
        if let Some(n) = nodesize {
            params.nodesize = n;
        }
    }
}

/// `--replicate`: `None` is `auto`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replicate(pub Option<usize>);

/// `--speed`: `None` is `max` (as fast as possible), `Some(f)` divides recorded think-times.
#[derive(Clone, Copy, Debug, Default)]
pub struct Speed(pub Option<f64>);

pub fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed(None));
    }
    // 10^-6 to 10^6: slower stretches an hour of think-time past a year of virtual time,
    // faster is `max` in all but name.
    match s.parse::<f64>() {
        Ok(f) if (1e-6..=1e6).contains(&f) => Ok(Speed(Some(f))),
        _ => Err("takes `max` or a factor from 0.000001 to 1000000".into()),
    }
}

fn parse_replicate(s: &str) -> Result<Replicate, String> {
    if s == "auto" {
        return Ok(Replicate(None));
    }
    Ok(Replicate(Some(parse_count(s)?)))
}

/// A comma-separated list of counts (`compare --cpus`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub Vec<usize>);

/// `--cpus 1,2,4`: every item a CPU count ([`parse_cpus`]); an error names every bad item.
pub fn parse_counts(s: &str) -> Result<Counts, String> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in s.split(',') {
        match parse_cpus(item.trim()) {
            Ok(n) => good.push(n),
            Err(_) => bad.push(format!("`{item}`")),
        }
    }
    match bad.len() {
        0 => Ok(Counts(good)),
        1 => Err(format!(
            "{} is not a CPU count from 1 to {MAX_CPUS}",
            bad[0]
        )),
        _ => Err(format!(
            "{} are not CPU counts from 1 to {MAX_CPUS}",
            bad.join(", ")
        )),
    }
}

/// The most CPUs a replay models: `CONFIG_NR_CPUS`' ceiling on x86-64 (8192, `MAXSMP`).
pub const MAX_CPUS: usize = 8192;

/// A CPU count, 1 to [`MAX_CPUS`] (`replay --threads`, `compare --cpus`).
pub fn parse_cpus(s: &str) -> Result<usize, String> {
    match parse_count(s) {
        Ok(n) if n <= MAX_CPUS => Ok(n),
        _ => Err(format!(
            "takes a whole number of CPUs from 1 to {MAX_CPUS} (x86-64's CONFIG_NR_CPUS ceiling)"
        )),
    }
}

/// A count of at least 1 (`--threads`, `--replicate`).
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("takes a whole number of at least 1".into()),
    }
}

/// One possible value per registered policy: its name, its aliases (kernel versions, accepted
/// but not listed) and, as help, its kernels and what it does.
fn policy_values() -> Vec<PossibleValue> {
    crate::registry::get()
        .iter()
        .map(|i| {
            PossibleValue::new(i.name)
                .aliases(i.aliases.iter().copied())
                .help(format!("{}: {}", i.kernels, i.about))
        })
        .collect()
}

/// The canonical name of a name or alias the parser accepted.
fn canonical(s: String) -> String {
    crate::registry::get()
        .get(&s)
        .map_or(s, |i| i.name.to_string())
}

/// `--policy NAME`: a registered policy's name or alias, parsed into its canonical name.
pub fn policy_parser() -> impl TypedValueParser<Value = String> {
    PossibleValuesParser::new(policy_values()).map(canonical)
}

/// `--policies A,B,…`: registered policies, or `all` for every one.
pub fn policies_parser() -> impl TypedValueParser<Value = String> {
    let mut values = policy_values();
    values.push(PossibleValue::new("all").help("every policy above"));
    PossibleValuesParser::new(values).map(canonical)
}

/// `compare`'s default `--policies`: the registry's headline policies.
pub fn default_policies() -> &'static str {
    static DEFAULT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| crate::registry::get().headline_names().join(","));
    DEFAULT.as_str()
}

/// `--policies` with `all` expanded, each policy once, in the order given.
pub fn expand_policies(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let add: Vec<String> = if n == "all" {
            crate::registry::get()
                .names()
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            vec![n.clone()]
        };
        for a in add {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_every_registered_policy_once() {
        let got = expand_policies(&["seed".into(), "all".into()]);
        assert_eq!(got, ["seed", "pre", "seed-throttle", "modern"]);
        assert_eq!(default_policies(), "pre,seed,modern");
    }

    #[test]
    fn a_kernel_version_names_its_policy() {
        let p = policy_parser();
        let cmd = clap::Command::new("t");
        let parse = |s: &str| p.parse_ref(&cmd, None, std::ffi::OsStr::new(s));
        assert_eq!(parse("3.10").unwrap(), "seed");
        assert_eq!(parse("modern").unwrap(), "modern");
        assert!(parse("nope").is_err());
    }
}
