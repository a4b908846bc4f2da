//! `recorder k8s`: Kubernetes manifests for profiling runs.

use std::path::PathBuf;

use anyhow::Context;
use recorder::k8s::{JobRequest, render_job};

/// Arguments of `recorder k8s`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Render the profiling-run Job (the workload beside the recorder sidecar) as YAML.
    Job(JobArgs),
}

/// Arguments of `recorder k8s job`.
#[derive(clap::Args, Debug)]
struct JobArgs {
    /// The workload's image reference.
    #[arg(long)]
    image: String,
    /// The Job's name.
    #[arg(long)]
    name: Option<String>,
    /// The Job's namespace (default: none, so kubectl's current one).
    #[arg(long)]
    namespace: Option<String>,
    /// The recorder's image (default: a placeholder, ghcr.io/example/recorder:latest).
    #[arg(long, value_name = "REF")]
    recorder_image: Option<String>,
    /// The sidecar pushes the record to this repository (the workload image's) after the
    /// commit; the termination message then carries the artifact's reference.
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    /// A Secret of type kubernetes.io/dockerconfigjson with the registry credentials (e.g. the
    /// one of imagePullSecrets), mounted read-only into the sidecar.
    #[arg(long, value_name = "NAME", requires = "push")]
    registry_secret: Option<String>,
    /// Write the Job here instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The workload's command (default: the image's entrypoint and command).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.sub {
        Sub::Job(job) => render(job),
    }
}

fn render(args: JobArgs) -> anyhow::Result<()> {
    let yaml = render_job(&JobRequest {
        image: args.image,
        command: args.command,
        name: args.name,
        namespace: args.namespace,
        recorder_image: args.recorder_image,
        push: args.push,
        registry_secret: args.registry_secret,
    })?;
    match args.output {
        Some(path) => {
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}
