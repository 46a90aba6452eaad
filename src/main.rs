//! The `aula` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the service allocates many small, short-lived
/// objects on many threads (requests, rows, events), where glibc's arenas spent ~16 %
/// of the process's CPU under the application rush (`perf`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = aula::cli::Cli::parse();
    aula::run(cli)
}
