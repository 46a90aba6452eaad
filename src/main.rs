//! The `aula` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = aula::cli::Cli::parse();
    aula::run(cli)
}
