//! `refgate` with two patches' runners beside the built-in policies: the whole CLI, from
//! `refgate_user::main_with`, with a registry that has them (docs/writing-a-policy.md).

fn main() -> std::process::ExitCode {
    refgate_user::main_with(refgate_custom_policy::registry())
}
