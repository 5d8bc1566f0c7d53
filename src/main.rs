//! The `restorectl` binary: everything lives in the library; this only hands over to
//! [`restorectl::cli::main`], which parses arguments and decides the exit code.

fn main() -> std::process::ExitCode {
    restorectl::cli::main()
}
