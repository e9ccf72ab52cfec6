//! The policy registry: each policy declares its name, aliases, kernels, one-line description
//! and constructor once, in a [`PolicyInfo`] beside its implementation. Everything that lists or
//! looks up policies — [`by_name`](super::by_name), the CLI's possible values, help and
//! completions, `refgate policies`, `refgate compare --policies all`, the error for an unknown
//! name and the report's "policy" line — reads it from here.

use super::Policy;
use std::sync::LazyLock;

/// What the registry knows of one policy. Declared once, as a `static`, beside the policy.
#[derive(Clone, Copy)]
pub struct PolicyInfo {
    /// The canonical name: `--policy NAME`, the report's and the JSON's `policy`.
    pub name: &'static str,
    /// Other names `--policy` accepts (kernel versions), e.g. `3.9` for `seed`.
    pub aliases: &'static [&'static str],
    /// The kernel releases it stands for, e.g. `3.9–3.10`.
    pub kernels: &'static str,
    /// One line: what its runner does differently.
    pub about: &'static str,
    /// One of the policies `refgate compare` sweeps by default.
    pub headline: bool,
    /// A fresh instance.
    pub make: fn() -> Box<dyn Policy>,
}

impl std::fmt::Debug for PolicyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyInfo")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("kernels", &self.kernels)
            .field("headline", &self.headline)
            .finish_non_exhaustive()
    }
}

/// Why a policy could not be found or registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No policy has this name or alias.
    #[error("unknown policy `{name}`: choose one of {choices}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        choices: String,
    },
    /// A policy being registered reuses a name or alias already taken.
    #[error("policy name `{0}` is already registered")]
    Duplicate(&'static str),
}

/// An ordered set of policies: the built-in ones ([`Registry::builtin`]) plus any registered
/// from outside the crate.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    entries: Vec<&'static PolicyInfo>,
}

impl Registry {
    /// The policies this crate implements, oldest kernel first.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        for info in BUILTIN {
            r.register(info).expect("built-in names are distinct");
        }
        r
    }

    /// Adds a policy; its name and aliases must not be taken.
    pub fn register(&mut self, info: &'static PolicyInfo) -> Result<(), RegistryError> {
        for n in std::iter::once(&info.name).chain(info.aliases) {
            if self.get(n).is_some() {
                return Err(RegistryError::Duplicate(n));
            }
        }
        self.entries.push(info);
        Ok(())
    }

    /// The policy with this name or alias.
    pub fn get(&self, name: &str) -> Option<&'static PolicyInfo> {
        self.entries
            .iter()
            .copied()
            .find(|i| i.name == name || i.aliases.contains(&name))
    }

    /// [`get`](Self::get), or an error that lists the choices.
    pub fn lookup(&self, name: &str) -> Result<&'static PolicyInfo, RegistryError> {
        self.get(name).ok_or_else(|| RegistryError::Unknown {
            name: name.into(),
            choices: self.names().join(", "),
        })
    }

    /// Every policy, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &'static PolicyInfo> + '_ {
        self.entries.iter().copied()
    }

    /// The canonical names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(|i| i.name).collect()
    }

    /// The names `refgate compare` sweeps by default.
    pub fn headline_names(&self) -> Vec<&'static str> {
        self.iter().filter(|i| i.headline).map(|i| i.name).collect()
    }
}

/// The built-in policies, oldest kernel first.
static BUILTIN: [&PolicyInfo; 4] = [
    &super::pre::INFO,
    &super::seed::INFO,
    &super::seed_throttle::INFO,
    &super::modern::INFO,
];

/// The built-in registry, built once.
pub fn builtin() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::builtin);
    &REGISTRY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_found_by_name_and_alias_and_says_so() {
        let r = Registry::builtin();
        assert_eq!(r.names(), ["pre", "seed", "seed-throttle", "modern"]);
        assert_eq!(r.headline_names(), ["pre", "seed", "modern"]);
        for info in r.iter() {
            let p = (info.make)();
            assert_eq!(p.name(), info.name);
            assert_eq!(p.kernels(), info.kernels);
            for a in info.aliases {
                assert_eq!(r.get(a).map(|i| i.name), Some(info.name));
            }
        }
        assert_eq!(r.get("3.9").map(|i| i.name), Some("seed"));
        assert_eq!(r.get("6.18").map(|i| i.name), Some("modern"));
    }

    #[test]
    fn unknown_and_duplicate_names_are_errors() {
        let mut r = Registry::builtin();
        let e = r.lookup("nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown policy `nope`: choose one of pre, seed, seed-throttle, modern"
        );
        static AGAIN: PolicyInfo = PolicyInfo {
            name: "mine",
            aliases: &["3.9"],
            ..super::super::seed::INFO
        };
        assert_eq!(r.register(&AGAIN), Err(RegistryError::Duplicate("3.9")));
        assert!(r.get("mine").is_none());
    }
}
