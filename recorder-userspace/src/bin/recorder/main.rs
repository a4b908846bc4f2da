//! The `recorder` command line.

mod conclude;
mod gc;
mod image;
mod k8s;
mod parse;
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

use anyhow::Context;

use clap::{CommandFactory, Parser, Subcommand};
use tokio::runtime::Handle;

/// The exit statuses, shown by `--help` (the README has the same table).
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  the record is committed and complete
  1  an error (named; a record that could not be committed is kept, and the message says where);
     nothing recorded is an error unless --allow-empty
  2  usage: a bad option or value, found before anything ran
  3  the record is committed but incomplete: the kernel dropped events, or the filter was armed
     after the workload had started (the summary says which)
  4  the record is committed, but the workload failed (its exit status is in the summary and in
     --json)";

/// Records which files of a container image a workload reads.
#[derive(Parser)]
#[command(name = "recorder", version, about, after_help = EXIT_STATUS_HELP)]
struct Cli {
    /// Print only errors and warnings: no progress logs, no summary (the digest, or --json,
    /// still goes to stdout).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--quiet`, for the commands that print a summary.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether to colour stderr: a terminal, and no `NO_COLOR` (https://no-color.org).
fn color() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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
    /// Remove what dead recorders left (`run`'s work dirs; with --containerd their
    /// containers, snapshots and leases); with --cache, empty the layer cache; --dry-run lists.
    Gc(gc::Args),
    /// Kubernetes manifests: `k8s job` renders a profiling-run Job.
    K8s(k8s::Args),
    /// Print shell completions (`cargo xtask docs` writes them for every shell).
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, roff (`cargo xtask docs` writes it).
    #[command(hide = true)]
    Man,
}

/// A usage error found by the commands themselves (clap reports its own): exit status 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The process's one runtime, built here and handed to every command: multi-threaded, so that
/// a containerd blob may be waited for from any of its threads (a layer reader, a content
/// store call).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Exit statuses: see [`EXIT_STATUS_HELP`].
fn main() -> ExitCode {
    match run_cli() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", report(&error));
            if error.chain().any(|cause| cause.is::<Usage>()) {
                ExitCode::from(recorder::agent::EXIT_USAGE)
            } else {
                ExitCode::from(recorder::agent::EXIT_ERROR)
            }
        }
    }
}

/// The error as anyhow's `{:?}` prints it (the message, then `Caused by:` and each cause),
/// without the backtrace anyhow adds when `RUST_BACKTRACE` is set: a bad flag or a missing
/// image is not a crash, and a user with that variable set for other work saw a stack of
/// frames under every such message.
fn report(error: &anyhow::Error) -> String {
    let mut out = format!("Error: {error}");
    let causes: Vec<String> = error.chain().skip(1).map(ToString::to_string).collect();
    match causes.as_slice() {
        [] => {}
        [one] => out.push_str(&format!("\n\nCaused by:\n    {one}")),
        many => {
            out.push_str("\n\nCaused by:");
            for (i, cause) in many.iter().enumerate() {
                out.push_str(&format!("\n    {i}: {cause}"));
            }
        }
    }
    out
}

fn run_cli() -> anyhow::Result<ExitCode> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(message) = source::containerd_address_with_a_space(&argv) {
        return Err(Usage(message).into());
    }
    let cli = Cli::parse();
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    // Bars only for a person watching: not when stderr is piped or logged, not with --quiet.
    recorder::progress::enable(!cli.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let default_level = if cli.quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RECORDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(recorder::progress::LogWriter)
        .with_ansi(color())
        .init();
    let runtime = runtime()?;
    let result = command(cli.command, runtime.handle());
    // What is left on its blocking threads (an indexing abandoned on a stop, a commit past its
    // deadline) ends with the process, not waited for.
    runtime.shutdown_background();
    result
}

/// Runs `command`; `rt` drives whatever it does asynchronously.
fn command(command: Command, rt: &Handle) -> anyhow::Result<ExitCode> {
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        Command::Trace(args) => done(trace::run(args, rt)),
        Command::Status(args) => done(status::run(args, rt)),
        Command::Image(args) => done(image::run(args, rt)),
        Command::Record(args) => record::run(args, rt),
        Command::Run(args) => run::run(args, rt),
        Command::K8s(args) => done(k8s::run(args)),
        Command::Gc(args) => done(gc::run(args, rt)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "recorder",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn errors_print_as_anyhow_does_without_a_backtrace() {
        let one = anyhow::anyhow!("no image");
        let two = anyhow::Error::from(std::io::Error::other("disk full")).context("committing");
        let three = two_causes();
        let cases = [
            (one, "Error: no image"),
            (two, "Error: committing\n\nCaused by:\n    disk full"),
            (
                three,
                "Error: run\n\nCaused by:\n    0: committing\n    1: disk full",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(report(&error), want);
            // What anyhow prints without a backtrace, whatever RUST_BACKTRACE says here.
            let debug = format!("{error:?}");
            assert!(
                debug.starts_with(want.trim_start_matches("Error: ")),
                "{debug}"
            );
        }
    }

    fn two_causes() -> anyhow::Error {
        anyhow::Error::from(std::io::Error::other("disk full"))
            .context("committing")
            .context("run")
    }
}
