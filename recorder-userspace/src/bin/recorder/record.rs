//! `recorder record`: its flags, checked into the library's options; the recording itself is
//! [`recorder::recording`]'s, and the outcome is printed by [`crate::conclude`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use recorder::agent::ImageSource;
use recorder::recording::{ImageSpec, Options, RecordPlan, StatusOptions, TargetSpec};
use recorder::tracer::TracerConfig;

use crate::conclude::{Output, record_and_conclude};
use crate::parse::PositiveDuration;
use crate::record_show;
use crate::registry::PushOption;
use crate::source::{ContainerdArgs, PickArgs};

/// `recorder record --image ... --target ...`, or `recorder record show ...`.
#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = crate::EXIT_STATUS_HELP
)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<record_show::Sub>,
    /// What to trace: `pid:N` (that process's mount namespace), `mntns:N` (an inode); with
    /// --containerd also `container:ID` (a running container's task) or
    /// `container-name:PATTERN` (the next container created whose id or image name matches
    /// the glob, or whose label matches `KEY=GLOB`; armed before its task starts), or
    /// `k8s:POD_UID/CONTAINER` (the container of that name in that pod, by the CRI's labels;
    /// ready before the image exists: it is indexed once the container is created).
    #[arg(long, required = true)]
    target: Option<TargetSpec>,
    /// Stop once every process of the target's mount namespace has exited.
    #[arg(long)]
    until_exit: bool,
    /// After committing, write `sha256:<hex>` (or the error) to this file, e.g. a pod's
    /// /dev/termination-log; stdout then says `record: sha256:<hex>`, a line to find in logs.
    #[arg(long, value_name = "PATH")]
    termination_message_path: Option<PathBuf>,
    /// After committing (or failing), wait for SIGTERM or SIGINT before exiting, with the same
    /// status: a Kubernetes sidecar that exits on its own is restarted and would record again.
    #[arg(long)]
    linger_until_signal: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options shared by `recorder record` and `recorder run`.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// The image: an OCI image layout directory, or STORE_DIR@sha256:HEX for a manifest in a
    /// containerd-style content store. With --containerd: an image reference in containerd
    /// (e.g. docker.io/library/alpine:3.19), and the record goes to containerd's content
    /// store, labelled with the manifest and the reference and kept from garbage collection.
    #[arg(long, required = true)]
    pub image: Option<String>,
    #[command(flatten)]
    pub pick: PickArgs,
    /// Content store the record is committed to (not with --containerd, which has its own).
    #[arg(
        long,
        required_unless_present = "containerd",
        conflicts_with = "containerd"
    )]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub ctrd: ContainerdArgs,
    /// Also write the record to this file; `-` is stdout (under `run`, the workload's stdout
    /// then goes to stderr). A symlink is written through; a regular file is replaced
    /// atomically; a device or FIFO is written in place.
    #[arg(long, value_name = "FILE")]
    pub record_out: Option<PathBuf>,
    /// Write the companion (time, pid, comm, kind of each entry) to this file, as
    /// --record-out; default: FILE.companion beside --record-out FILE.
    #[arg(long, value_name = "FILE")]
    pub companion_out: Option<PathBuf>,
    /// Serve status, metrics and stop requests on this Unix socket.
    #[arg(long)]
    pub status_socket: Option<PathBuf>,
    /// Stop after this long (e.g. `30s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, value_name = "DURATION")]
    pub period: Option<PositiveDuration>,
    /// After the commit (or a failure), keep the status socket answering for this long (e.g.
    /// `10s`), so a poller sees the final state, the record digest and the outcome
    /// (`recorder status --wait done`).
    #[arg(long, value_name = "DURATION", requires = "status_socket")]
    pub linger: Option<PositiveDuration>,
    /// Scratch space (default: the system temp dir); also where a record that cannot be
    /// committed is kept.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size; e.g. 8M).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = TracerConfig::default().ring_bytes,
        value_parser = crate::parse::parse_ring_bytes
    )]
    pub ring_bytes: u32,
    /// Commit the record even when nothing was recorded (otherwise an error, exit 1: an empty
    /// record usually means the wrong target or image).
    #[arg(long)]
    pub allow_empty: bool,
    /// Print the summary as one JSON object (camelCase keys: verdict, exitStatus, workload,
    /// counters, recordDigest...) as the last stdout line, instead of the digest.
    #[arg(long)]
    pub json: bool,
    /// After committing, write the record's digest (`sha256:...` and a newline) to FILE, for
    /// scripts; `-` is stdout.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    #[command(flatten)]
    pub push: PushOption,
}

impl CommonArgs {
    /// The options of the recording, checked: the image source exists (a containerd image
    /// is opened by the recording), the platform parses.
    pub fn options(&self) -> anyhow::Result<Options> {
        let image_arg = self.image.clone().context("--image is required")?;
        let image = match self.ctrd.address() {
            Some(address) => ImageSpec::Containerd {
                address,
                namespace: self.ctrd.namespace.clone(),
                reference: image_arg.clone(),
            },
            None => ImageSpec::Local(self.source(&image_arg)?),
        };
        Ok(Options {
            image,
            image_arg,
            platform: self.pick.platform()?,
            store: self.store.clone(),
            record_out: self.record_out.clone(),
            companion_out: self.companion_out.clone(),
            stdout_taken: self.stdout_taken(),
            period: self.period.map(|d| d.0),
            work_dir: self.work_dir.clone().unwrap_or_else(std::env::temp_dir),
            tracer: TracerConfig {
                ring_bytes: self.ring_bytes,
                // The recorder exits once the tracer is gone: the kernel's detach need not
                // hold up its exit (see `TracerConfig::detach_in_background`).
                detach_in_background: true,
                ..TracerConfig::default()
            },
            allow_empty: self.allow_empty,
        })
    }

    /// The status socket's options.
    pub fn status_options(&self) -> StatusOptions {
        StatusOptions {
            socket: self.status_socket.clone(),
            linger: self.linger.map(|d| d.0),
        }
    }

    /// The image source of a layout or local store, checked.
    fn source(&self, image: &str) -> anyhow::Result<ImageSource> {
        let source: ImageSource = image.parse().with_context(|| format!("--image {image}"))?;
        let (ImageSource::Layout { dir, .. } | ImageSource::Store { dir, .. }) = &source;
        crate::source::check_exists("--image", image, dir)?;
        Ok(source.with_reference(self.pick.reference.clone()))
    }

    /// Whether the record or its companion goes to stdout (`-`): then nothing else may.
    pub fn stdout_taken(&self) -> bool {
        [&self.record_out, &self.companion_out, &self.digest_file]
            .into_iter()
            .flatten()
            .any(|p| recorder::outputs::is_stdout(p))
    }

    /// Checks every output and store path, and what clap cannot, before any work: what is
    /// wrong is a usage error (exit status 2), found before indexing or starting a workload.
    pub fn validate(&self) -> anyhow::Result<()> {
        let usage = |m: String| anyhow::Error::from(crate::Usage(m));
        for (flag, path) in [
            ("--record-out", &self.record_out),
            ("--companion-out", &self.companion_out),
            ("--digest-file", &self.digest_file),
        ] {
            if let Some(path) = path {
                recorder::outputs::check(path).map_err(|e| usage(format!("{flag}: {e}")))?;
            }
        }
        if let (Some(a), Some(b)) = (&self.record_out, &self.companion_out)
            && a == b
        {
            return Err(usage(format!(
                "--record-out and --companion-out are both {}",
                a.display()
            )));
        }
        if let Some(store) = &self.store
            && store.exists()
            && !store.is_dir()
        {
            return Err(usage(format!(
                "--store {}: not a directory",
                store.display()
            )));
        }
        if let Some(work) = &self.work_dir {
            match std::fs::metadata(work) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(usage(format!(
                        "--work-dir {}: not a directory",
                        work.display()
                    )));
                }
                Err(e) => return Err(usage(format!("--work-dir {}: {e}", work.display()))),
            }
        }
        if let Some(socket) = &self.status_socket {
            let dir = match socket.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(usage(format!(
                    "--status-socket {}: the directory {} does not exist",
                    socket.display(),
                    dir.display()
                )));
            }
        }
        self.pick.platform().map_err(|e| usage(format!("{e:#}")))?;
        Ok(())
    }
}

/// Runs `recorder record`.
pub fn run(args: Args, rt: &tokio::runtime::Handle) -> anyhow::Result<ExitCode> {
    if let Some(sub) = args.sub {
        record_show::run(sub, rt)?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::source::require_privileges("recorder record", false)?;
    args.common.validate()?;
    if let Some(path) = &args.termination_message_path {
        recorder::outputs::check(path).map_err(|e| {
            anyhow::Error::from(crate::Usage(format!("--termination-message-path: {e}")))
        })?;
    }
    let target = args.target.clone().context("--target is required")?;
    if target.needs_containerd() && args.common.ctrd.containerd.is_none() {
        return Err(crate::Usage(format!(
            "--target {target} needs --containerd (and -a ADDRESS for another socket than the \
             default)"
        ))
        .into());
    }
    let options = args.common.options()?;
    let output = Output {
        termination_message_path: args.termination_message_path.clone(),
        linger_until_signal: args.linger_until_signal,
    };
    let plan = RecordPlan {
        target,
        until_exit: args.until_exit,
    };
    let target = plan.target.clone();
    record_and_conclude(
        &args.common,
        &options,
        Some(&target),
        None,
        &output,
        async |recording, input| recording.record(&options, input, plan).await,
        rt,
    )
}
