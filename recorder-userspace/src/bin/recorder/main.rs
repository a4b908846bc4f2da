//! The `recorder` command line.

mod image;
mod record_show;
mod status;
mod trace;

use clap::{Parser, Subcommand};

/// Records which files of a container image a workload reads.
#[derive(Parser)]
#[command(name = "recorder", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream decoded file open and exec events of a mount namespace.
    Trace(trace::Args),
    /// Query a running agent's status socket.
    Status(status::Args),
    /// Inspect an image and find which layer provides a path.
    Image(image::Args),
    /// Summarise a record.
    Record(record_show::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RECORDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Status(args) => status::run(args),
        Command::Image(args) => image::run(args),
        Command::Record(args) => record_show::run(args),
    }
}
