//! `cargo xtask`: setup, tests, benchmarks, the demo, completions and the man page.

mod bench;
mod cmd;
mod demo;
mod demo_image;
mod docs;
mod fuzz;
mod image;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Xtask,
}

#[derive(Subcommand)]
enum Xtask {
    /// Install what this machine lacks: nightly rust-src, bpf-linker, tracefs, Debian packages.
    Setup(setup::Args),
    /// Set up, then run the whole test suite (as root: the tests load the real eBPF programs).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// Set up, then run the recorder on the bundled demo workload and show what it recorded.
    Demo(demo::Args),
    /// Run a benchmark and print its report.
    Bench(bench::Args),
    /// Build the recorder's container image (OCI layout and archive); print its digest.
    Image(image::Args),
    /// Run the cargo-fuzz targets for a bounded time each (nightly, address sanitizer).
    Fuzz(fuzz::Args),
    /// Write shell completions and the man page, generated from the recorder's clap
    /// definitions, to target/docs.
    Docs(docs::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Xtask::Setup(args) => setup::run_setup(args),
        Xtask::Test { cargo_args } => {
            setup::run_setup(setup::Args {})?;
            test::run(&cargo_args)
        }
        Xtask::Demo(args) => {
            setup::run_setup(setup::Args {})?;
            demo::run(args)
        }
        Xtask::Bench(args) => {
            setup::run_setup(setup::Args {})?;
            bench::run(args)
        }
        Xtask::Image(args) => image::run_image(args),
        Xtask::Fuzz(args) => {
            setup::run_setup(setup::Args {})?;
            fuzz::run_fuzz(args)
        }
        Xtask::Docs(args) => docs::run(args),
    }
}

pub use xtask::cargo;
