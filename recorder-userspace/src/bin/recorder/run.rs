//! `recorder run`: a self-contained profiling run. The image's layers are unpacked and
//! mounted as a read-only overlay in a private sandbox, the tracer is armed before the
//! workload's first instruction, and the record is committed when the workload exits or the
//! period ends.
//!
//! With `--containerd`, as `ctr-remote image optimize` does: the image is one in containerd,
//! its container is created there (snapshot, runtime spec from its config, runc task), the
//! filter is armed on the created task before Tasks.Start, and the record goes to
//! containerd's content store as with `recorder record --containerd`. The workload's output is
//! relayed as it comes, through FIFOs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use recorder::errors::Chain;
use recorder::recording::RunPlan;
use recorder::sandbox::{
    BindMount, Confinement, DEFAULT_CACHE_DIR, DEFAULT_PIDS_LIMIT, LayerCache, ProcessOverrides,
    parse_env_file,
};

use crate::conclude::{Output, record_and_conclude};
use crate::record::CommonArgs;

/// `recorder run --image ... --store ... [-- CMD ARGS...]`.
#[derive(clap::Args, Debug)]
#[command(after_help = crate::EXIT_STATUS_HELP)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    confine: ConfineArgs,
    /// Most bytes the image may take unpacked (e.g. 20G); default: half the space free where
    /// the work dir is. Holes in sparse files do not count.
    #[arg(long, value_name = "SIZE", value_parser = crate::parse::parse_size)]
    max_unpacked: Option<u64>,
    #[command(flatten)]
    cache: RunCacheArgs,
    #[command(flatten)]
    process: ProcessArgs,
    /// Command to run instead of the image's Cmd (its Entrypoint is kept, as `docker run`);
    /// with --entrypoint, its arguments.
    #[arg(last = true)]
    cmd: Vec<String>,
}

/// Where unpacked layers are kept for later runs.
#[derive(clap::Args, Debug)]
pub struct CacheDirArg {
    /// The layer cache: each layer unpacked once, keyed by its diff id, and shared read-only
    /// by later runs (made root-owned 0700; an existing one must be).
    #[arg(long, value_name = "DIR", env = "RECORDER_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
}

/// The layer cache options of `run`.
#[derive(clap::Args, Debug)]
pub struct RunCacheArgs {
    #[command(flatten)]
    dir: CacheDirArg,
    /// Unpack the layers into the work dir, as if there were no cache (nothing is read from or
    /// written to it).
    #[arg(long, conflicts_with = "cache_max")]
    no_cache: bool,
    /// Most bytes the cache may hold (e.g. 10G; same syntax as --max-unpacked): after the
    /// layers are unpacked, the least recently used entries no running recorder uses are
    /// removed until it fits. Default: no limit (`recorder gc --cache` empties it).
    #[arg(long, value_name = "SIZE", value_parser = crate::parse::parse_size)]
    cache_max: Option<u64>,
}

impl RunCacheArgs {
    /// Opens the cache (creating it), unless --no-cache: a usage error if it is unfit.
    fn open(&self) -> anyhow::Result<Option<LayerCache>> {
        if self.no_cache {
            return Ok(None);
        }
        LayerCache::open(&self.dir.cache_dir)
            .map(Some)
            .map_err(|e| anyhow::Error::from(crate::Usage(format!("--cache-dir: {e}"))))
    }
}

/// Changes to the image's process, with `ctr-remote image optimize`'s names.
#[derive(clap::Args, Debug)]
pub struct ProcessArgs {
    /// Run PROGRAM instead of the image's Entrypoint; the image's Cmd is dropped and `-- ARGS`
    /// become its arguments (as `docker run --entrypoint`).
    #[arg(long, value_name = "PROGRAM")]
    entrypoint: Option<String>,
    /// Set an environment variable over the image's (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_entry)]
    env: Vec<String>,
    /// Read environment variables from FILE (KEY=VALUE lines, `#` comments; a bare KEY takes
    /// this environment's value); applied before --env (repeatable).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Run as USER (uid[:gid], or a name[:group] of the image's /etc/passwd) instead of the
    /// image's User.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Working directory instead of the image's WorkingDir.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Bind-mount a host path into the container, as ctr-remote optimize:
    /// `type=bind,src=/host/path,dst=/in/container[,options=rbind:ro]` (repeatable). What is
    /// read through it is not image content and is not recorded.
    #[arg(long, value_name = "SPEC", value_parser = parse_mount)]
    mount: Vec<BindMount>,
}

/// A `--mount` value, checked now (the source must exist): a bad one is a usage error.
fn parse_mount(s: &str) -> Result<BindMount, String> {
    BindMount::parse(s).map_err(|e| Chain(&e).to_string())
}

/// `KEY=VALUE` with a non-empty key.
fn parse_env_entry(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// How the workload is contained (see `docs/containment.md`).
#[derive(clap::Args, Debug)]
pub struct ConfineArgs {
    /// Run the workload unconfined: every capability, no seccomp filter, no masked or
    /// read-only paths, writable /sys, privileges may be gained. Only for trusted images.
    #[arg(long)]
    privileged: bool,
    /// Seccomp profile: `default` (the project's, see docs/containment.md) or `unconfined`.
    #[arg(long, value_name = "PROFILE", default_value = "default", value_parser = ["default", "unconfined"])]
    seccomp: String,
    /// Share the host's network namespace (default: a new one with only loopback).
    #[arg(long)]
    net_host: bool,
    /// Memory limit of the workload (e.g. 512M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = crate::parse::parse_size)]
    memory: Option<u64>,
    /// Most processes and threads the workload may have; 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PIDS_LIMIT)]
    pids_limit: i64,
}

impl ConfineArgs {
    fn confinement(&self) -> anyhow::Result<Confinement> {
        if self.privileged {
            eprintln!(
                "WARNING: --privileged: the workload runs with every capability, no seccomp \
                 filter, writable /proc/sys and /sys, and may gain privileges; an untrusted \
                 image can take over this host"
            );
        }
        let memory_bytes = self
            .memory
            .map(|m| i64::try_from(m).context("--memory is too large"))
            .transpose()?;
        Ok(Confinement {
            privileged: self.privileged,
            seccomp: self.seccomp == "default",
            net_host: self.net_host,
            memory_bytes,
            pids_limit: (self.pids_limit > 0).then_some(self.pids_limit),
        })
    }
}

impl Args {
    /// The command given instead of the image's Cmd, for the pushed record's annotations.
    fn command(&self) -> Option<String> {
        let mut words: Vec<&str> = self.process.entrypoint.iter().map(String::as_str).collect();
        words.extend(self.cmd.iter().map(String::as_str));
        (!words.is_empty()).then(|| words.join(" "))
    }

    /// The overrides of the image's process, `--env-file`s read (a usage error if one cannot
    /// be: exit status 2, before anything ran).
    fn overrides(&self) -> anyhow::Result<ProcessOverrides> {
        let p = &self.process;
        let mut env = Vec::new();
        for file in &p.env_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                anyhow::Error::from(crate::Usage(format!("--env-file {}: {e}", file.display())))
            })?;
            env.extend(parse_env_file(&text).map_err(|(line, why)| {
                anyhow::Error::from(crate::Usage(format!(
                    "--env-file {}, line {line}: {why}",
                    file.display()
                )))
            })?);
        }
        env.extend(p.env.iter().cloned());
        Ok(ProcessOverrides {
            entrypoint: p.entrypoint.clone(),
            cmd: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
            env,
            user: p.user.clone(),
            cwd: p.cwd.clone(),
        })
    }
}

/// Runs `recorder run`.
pub fn run(args: Args, rt: &tokio::runtime::Handle) -> anyhow::Result<ExitCode> {
    crate::source::require_privileges("recorder run", true)?;
    args.common.validate()?;
    let overrides = args.overrides()?;
    let confinement = args.confine.confinement()?;
    let options = args.common.options()?;
    // Opened (made, if it is not there) once everything else checks out, and only for a run
    // that unpacks: with --containerd, containerd's snapshots are the layers.
    let cache = match args.common.ctrd.containerd {
        Some(_) => None,
        None => args.cache.open()?,
    };
    let plan = RunPlan {
        overrides,
        confinement,
        max_unpacked: args.max_unpacked,
        binds: args.process.mount.clone(),
        cache,
        cache_max: args.cache.cache_max,
    };
    record_and_conclude(
        &args.common,
        &options,
        None,
        args.command(),
        &Output::default(),
        async |recording, input| recording.run(&options, input, &plan).await,
        rt,
    )
}
