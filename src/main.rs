//! The `nixlayer` command; everything lives in [`nixlayer::cli`].

fn main() -> std::process::ExitCode {
    nixlayer::cli::main()
}
