//! The `restorectl` binary: everything lives in the library; this only hands over to
//! [`restorectl::cli::main`], which parses arguments and decides the exit code.

/// mimalloc instead of glibc's malloc: the daemon's first scan of a large job directory frees
/// most of what it allocates, and glibc kept those pages (fragmented arenas, trimmed only at
/// the top of each heap) as resident memory for the life of the process; mimalloc returns freed
/// pages to the system (docs/daemon.md "Figures", bench/daemon.sh). `.cargo/config.toml` builds
/// it with on-demand arena commit, without which those pages stayed resident too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    restorectl::cli::main()
}
