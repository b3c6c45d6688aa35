//! `ensemble-server`: runs one node. See `ensemble-server --help`.

fn main() -> std::process::ExitCode {
    ensemble_server::main_with_args(std::env::args_os())
}
