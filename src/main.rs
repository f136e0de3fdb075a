//! The `nixlayer` command: clap arguments, printing, progress,
//! diagnostics and exit codes ([`cli`]) over the library `nixlayer`, which
//! never knows the command line.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
