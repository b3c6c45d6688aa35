//! `ensemble`: the command-line client. See `ensemble --help`.

fn main() -> std::process::ExitCode {
    ensemble_client::cli::main_with_args(std::env::args_os())
}
