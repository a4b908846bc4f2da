//! The `recorder` command line.

mod image;
mod k8s;
mod record;
mod record_show;
mod record_store;
mod record_view;
mod registry;
mod run;
mod source;
mod status;
mod trace;

use std::process::ExitCode;

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
    /// Record which image files a container reads (`record --image ... --target ...`),
    /// summarise a record (`record show`), or list and remove stored records (`record ls|rm`).
    Record(record::Args),
    /// Run an image's workload in a private sandbox and record what it reads.
    Run(run::Args),
    /// Kubernetes manifests: `k8s job` renders a profiling-run Job.
    K8s(k8s::Args),
}

/// Exit status 0: done (for `record` and `run`: the record is committed and complete);
/// 1: error; 3: the record is committed but incomplete (the kernel dropped events).
fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RECORDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Trace(args) => done(trace::run(args)),
        Command::Status(args) => done(status::run(args)),
        Command::Image(args) => done(image::run(args)),
        Command::Record(args) => record::run(args),
        Command::Run(args) => run::run(args),
        Command::K8s(args) => done(k8s::run(args)),
    }
}
