//! The outcome of `recorder record` and `recorder run`, printed once: the summary on stderr,
//! the digest (or `--json`) as the last stdout line, `--digest-file`, the termination message,
//! and the exit status; `--push` after the commit.

use std::path::PathBuf;
use std::process::ExitCode;

use recorder::agent::{AgentError, Outcome};
use recorder::errors::Chain;
use recorder::recording::{Connection, Input, Options, Recording, TargetSpec};

use crate::record::CommonArgs;
use crate::registry::{push_committed, push_failed, workload_annotations};

/// Where the outcome goes besides the summary, and whether to wait for a signal after it.
#[derive(Debug, Default)]
pub struct Output {
    /// Write the digest (or the error) here, e.g. a pod's /dev/termination-log; stdout then
    /// says `record: sha256:<hex>`.
    pub termination_message_path: Option<PathBuf>,
    /// After the outcome, wait for SIGTERM or SIGINT before exiting.
    pub linger_until_signal: bool,
}

/// Makes a recording as the command line says and prints its outcome once: the input opened
/// (a containerd image first, so that a wrong reference fails before anything starts), the
/// status socket and signals, `work`, `--push`, then the outcome. `command` is the workload's,
/// for the pushed record's annotations.
pub fn record_and_conclude(
    common: &CommonArgs,
    options: &Options,
    target: Option<&TargetSpec>,
    command: Option<String>,
    output: &Output,
    work: impl AsyncFnOnce(&Recording, Input) -> Result<Outcome, AgentError>,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<ExitCode> {
    rt.block_on(async {
        let input = Input::open(options, target).await?;
        let containerd = input.containerd.clone();
        let recording = Recording::start(&common.status_options())?;
        let result = work(&recording, input).await;
        let pushed = push_if_asked(&result, common, containerd.as_ref(), command).await;
        conclude(result, pushed, common, recording, output).await
    })
}

/// What `--push` did: nothing asked, the artifact's reference, or why it failed.
pub enum PushOutcome {
    /// No --push, or nothing committed to push.
    NotAsked,
    /// Pushed: `HOST/REPOSITORY@DIGEST` of the artifact.
    Pushed(String),
    /// The push failed; the record is committed (the message says where).
    Failed(anyhow::Error),
}

/// Pushes the committed record when `--push` asks; `command` is the workload's, when known.
async fn push_if_asked(
    result: &Result<Outcome, AgentError>,
    common: &CommonArgs,
    containerd: Option<&Connection>,
    command: Option<String>,
) -> PushOutcome {
    let Ok(Outcome { summary, .. }) = result else {
        return PushOutcome::NotAsked;
    };
    let annotations = workload_annotations(common, command, summary);
    match push_committed(common, containerd, summary, annotations).await {
        Ok(Some(pushed)) => PushOutcome::Pushed(pushed.reference),
        Ok(None) => PushOutcome::NotAsked,
        Err(e) => PushOutcome::Failed(e.context(push_failed(common, summary))),
    }
}

/// Prints the outcome and maps it to the exit status: the termination message first (the
/// kubelet reads it whenever the container exits), then the status socket's outcome, the
/// summary (stderr, unless --quiet), `--digest-file`, and the last stdout line: the digest,
/// `record: <digest>` beside a termination message, or the `--json` summary (nothing when
/// stdout carries the record). A failed push exits 1, the record being committed. Then waits
/// for a signal if asked, and closes the status socket after `--linger`.
async fn conclude(
    result: Result<Outcome, AgentError>,
    pushed: PushOutcome,
    common: &CommonArgs,
    recording: Recording,
    output: &Output,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = &output.termination_message_path {
        let message = match (&result, &pushed) {
            (Ok(_), PushOutcome::Pushed(reference)) => reference.clone(),
            (Ok(_), PushOutcome::Failed(e)) => format!("recorder failed: {e:#}"),
            (Ok(outcome), PushOutcome::NotAsked) => outcome.summary.committed.record.to_string(),
            (Err(error), _) => format!("recorder failed: {}", Chain(error)),
        };
        if let Err(e) = std::fs::write(path, &message) {
            // Not fatal: the record is committed, and the log says where.
            tracing::error!(path = %path.display(), error = %e, "writing the termination message");
        }
    }
    recording.conclude(&result);
    let code = match result {
        Ok(outcome) => {
            print_outcome(&outcome, common, output);
            recording.printed();
            match pushed {
                PushOutcome::Failed(e) => Err(e),
                PushOutcome::NotAsked | PushOutcome::Pushed(_) => {
                    Ok(ExitCode::from(outcome.exit_status()))
                }
            }
        }
        Err(error) => {
            recording.printed();
            Err(error.into())
        }
    };
    if output.linger_until_signal {
        recording.linger_until_signal().await;
    }
    recording.close().await;
    code
}

/// The summary on stderr (unless --quiet), the digest in --digest-file, and the last stdout
/// line.
fn print_outcome(outcome: &Outcome, common: &CommonArgs, output: &Output) {
    if !crate::QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{outcome}");
    }
    let digest = &outcome.summary.committed.record;
    if let Some(path) = &common.digest_file {
        let line = format!("{digest}\n");
        if let Err(error) = recorder::outputs::write(path, line.as_bytes()) {
            // The record is committed; the summary names it.
            tracing::error!(%error, "writing --digest-file");
        }
    }
    // Serialising plain strings, numbers and maps cannot fail.
    let json = || serde_json::to_string(&outcome.report()).unwrap_or_default();
    if output.termination_message_path.is_some() {
        if common.json {
            println!("{}", json());
        } else {
            println!("record: {digest}");
        }
    } else if common.stdout_taken() {
        // stdout carries the record: the digest is in the summary on stderr.
    } else if common.json {
        println!("{}", json());
    } else {
        println!("{digest}");
    }
}
