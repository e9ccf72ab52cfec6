//! The policy registry the CLI was started with ([`crate::main_with`]): the built-in
//! policies, plus any a crate using this library registered. Everything in the CLI that
//! lists, parses or makes a policy reads it from here.

use refgate_replay::Policy;
use refgate_replay::policy::Registry;
use std::sync::OnceLock;

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Sets the registry (first call wins: `main_with` makes it before parsing arguments).
pub fn install(r: Registry) {
    let _ = REGISTRY.set(r);
}

/// The registry; the built-in one if none was installed (unit tests).
pub fn get() -> &'static Registry {
    REGISTRY.get_or_init(Registry::builtin)
}

/// A fresh instance of the policy with this name or alias (the CLI parser checked it).
pub fn make(name: &str) -> Box<dyn Policy> {
    let info = get()
        .get(name)
        .unwrap_or_else(|| panic!("the CLI parser accepts only registered policies: {name}"));
    (info.make)()
}
