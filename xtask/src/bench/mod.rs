//! `cargo xtask bench NAME`: benchmarks that report ratios against a baseline of the same run.

mod index;

/// Which benchmark to run.
#[derive(clap::Subcommand)]
pub enum Which {
    /// Layer indexing against `gzip -dc | tar -t`.
    Index(index::Args),
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        Which::Index(args) => index::run(args),
    }
}
