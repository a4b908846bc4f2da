//! `recorder gc`: removes what dead recorders left behind: `recorder run`'s work dirs, and with
//! `--containerd` their labelled containers, tasks, snapshots and leases; with `--cache`, the
//! layer cache's entries (those of running recorders are kept, and named). `--dry-run` lists
//! what would go, the cache entries with their sizes and last use, and removes nothing.

use std::path::PathBuf;

use anyhow::Context;
use recorder::agent::workdir::stale_work_dirs;
use recorder::record::needs::human_bytes;
use recorder::sandbox::LayerCache;
use recorder::sandbox::cache::{EntryInfo, Removal};

use crate::run::CacheDirArg;
use crate::source::{ContainerdArgs, connect_containerd};

/// `recorder gc [--cache] [--containerd] [--dry-run] [--json]`.
#[derive(clap::Args, Debug)]
#[command(after_help = GC_EXIT_STATUS)]
pub struct Args {
    /// Where `recorder run` makes its work dirs (its --work-dir); default: the system temp
    /// dir. Those no running recorder holds, and older than a minute, are removed.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Also empty the layer cache (--cache-dir): every entry but those a running recorder
    /// uses, which are kept and listed.
    #[arg(long)]
    cache: bool,
    #[command(flatten)]
    cache_dir: CacheDirArg,
    #[command(flatten)]
    ctrd: ContainerdArgs,
    /// Remove nothing: list what would be removed (with --cache, every entry of the layer
    /// cache, its size and last use, and whether a running recorder uses it).
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON (camelCase keys).
    #[arg(long)]
    json: bool,
}

const GC_EXIT_STATUS: &str = "\
Exit status:
  0  done (entries in use by running recorders are kept, and listed, without failing)
  1  an error (named)
  2  usage: a bad option or value";

/// What `gc` removed, or would remove.
#[derive(serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Report {
    dry_run: bool,
    work_dirs: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    containerd_runs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<Removal>,
}

/// Runs `recorder gc`.
pub fn run(args: Args, rt: &tokio::runtime::Handle) -> anyhow::Result<()> {
    crate::source::require_privileges("recorder gc", true)?;
    let remove = !args.dry_run;
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut report = Report {
        dry_run: args.dry_run,
        work_dirs: stale_work_dirs(&base, remove)
            .with_context(|| format!("collecting the stale work dirs in {}", base.display()))?,
        ..Report::default()
    };
    if let Some(address) = args.ctrd.address() {
        let connection = connect_containerd(rt, &address, &args.ctrd.namespace, "")?;
        let client = connection.client.clone();
        let runs = rt.block_on(async move {
            if remove {
                client.reclaim_dead_runs().await
            } else {
                client.dead_runs().await
            }
        });
        report.containerd_runs = Some(runs);
    }
    if args.cache {
        let dir = &args.cache_dir.cache_dir;
        let cache = LayerCache::open_existing(dir)
            .with_context(|| format!("opening the layer cache {}", dir.display()))?;
        report.cache = Some(match cache {
            None => Removal::default(),
            Some(cache) if remove => cache.clear()?,
            Some(cache) => cache.clear_dry_run()?,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

fn print_human(report: &Report) {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for dir in &report.work_dirs {
        println!("{verb} work dir {}", dir.display());
    }
    for id in report.containerd_runs.iter().flatten() {
        println!("{verb} containerd run {id} (task, container, snapshot, lease)");
    }
    if let Some(cache) = &report.cache {
        let line = |e: &EntryInfo| {
            let last_use = e
                .last_use
                .map(|s| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                    )
                    .to_string()
                })
                .unwrap_or_else(|| "-".into());
            let what = if e.complete { "" } else { " (incomplete)" };
            format!(
                "{}{what}  {}  last used {last_use}",
                e.diff_id,
                human_bytes(e.bytes)
            )
        };
        for e in &cache.removed {
            println!("{verb} cache entry {}", line(e));
        }
        for e in &cache.busy {
            println!(
                "kept cache entry {} (in use by a running recorder)",
                line(e)
            );
        }
        let freed: u64 = cache.removed.iter().map(|e| e.bytes).sum();
        println!(
            "layer cache: {verb} {} entries ({}), kept {} in use",
            cache.removed.len(),
            human_bytes(freed),
            cache.busy.len()
        );
    }
    let nothing = report.work_dirs.is_empty()
        && report.containerd_runs.as_ref().is_none_or(Vec::is_empty)
        && report.cache.is_none();
    if nothing {
        println!("nothing to remove");
    }
}
