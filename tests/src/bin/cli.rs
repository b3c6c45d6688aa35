//! The `ensemble` CLI, built inside the test package so `cargo test` builds it first.

fn main() -> std::process::ExitCode {
    ensemble_cli::main_with_args(std::env::args_os())
}
