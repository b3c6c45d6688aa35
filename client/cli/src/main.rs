//! `ensemble`: the command-line client. See `ensemble --help`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

fn main() -> std::process::ExitCode {
    ensemble_cli::main_with_args(std::env::args_os())
}
