//! The `refgate` binary: the CLI of `refgate_user` with the built-in runner policies.

fn main() -> std::process::ExitCode {
    refgate_user::main_with(refgate_replay::policy::Registry::builtin())
}
