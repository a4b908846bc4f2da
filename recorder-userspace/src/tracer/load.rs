//! Loading the programs: the object linked and patched for the running kernel, then each
//! program verified and attached, the BTF tracepoints on a thread of their own.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, Program, TracePoint},
};
use recorder_common::globals;
use tracing::{debug, info};

use super::{TracerConfig, TracerError, btf::Btf, kfunc, offsets::KernelOffsets};

/// The eBPF object built by build.rs; empty when built with `AYA_BUILD_SKIP=1`.
pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/recorder"));

/// Tracepoints as (category, name), the program having the tracepoint's name. `unshare`'s exit
/// comes before its entry, so no call is parked at entry without a program to take it out.
/// Open-family calls need no entry program: their exit program reads the fd's file and, for
/// `trace`, the arguments from the saved registers (see the eBPF crate's docs).
pub(super) const TRACEPOINTS: [(&str, &str); 9] = [
    ("syscalls", "sys_exit_open"),
    ("syscalls", "sys_exit_creat"),
    ("syscalls", "sys_exit_open_by_handle_at"),
    ("syscalls", "sys_exit_openat"),
    ("syscalls", "sys_exit_openat2"),
    ("syscalls", "sys_exit_execve"),
    ("syscalls", "sys_exit_execveat"),
    ("syscalls", "sys_exit_unshare"),
    ("syscalls", "sys_enter_unshare"),
];

/// BTF tracepoints (5.5+), the program having the tracepoint's name.
pub(super) const BTF_TRACEPOINTS: [&str; 3] = [
    "sched_process_exec",
    "sched_process_fork",
    "io_uring_complete",
];

pub(super) const TRACEFS: &str = "/sys/kernel/tracing";

/// Loads the programs and attaches them: the programs' object and their links.
pub(super) fn programs(config: &TracerConfig) -> Result<(Ebpf, Vec<Box<dyn Send>>), TracerError> {
    if EBPF_OBJECT.is_empty() {
        return Err(TracerError::NotBuilt);
    }
    let page = page_size();
    if !config.ring_bytes.is_power_of_two() || !config.ring_bytes.is_multiple_of(page) {
        return Err(TracerError::RingSize(config.ring_bytes));
    }
    ensure_tracefs()?;
    // What the load costs, measured here (debug build, quiet, demo run; 0.30-0.32 s in
    // all, one thread): the BTF tracepoint `sched_process_exec` takes the verifier 105 ms,
    // aya's parse of the kernel's BTF for it 35 ms, the object (offsets, maps) about 90 ms,
    // the eight tracepoints 55 ms together. So aya's BTF is parsed, and then the BTF
    // tracepoints loaded, on threads of their own while this one loads the object and the
    // tracepoints (the verifier runs in the loading thread): 0.22-0.24 s in 5 runs.
    let kernel_btf = std::thread::Builder::new()
        .name("recorder-btf".into())
        .spawn(aya::Btf::from_sys_fs)
        .map_err(|source| TracerError::Thread { source })?;
    let mut ebpf = load_object(config)?;
    let links = std::thread::scope(|scope| {
        let mut programs: std::collections::HashMap<&str, &mut Program> =
            ebpf.programs_mut().collect();
        let mut btf_programs = Vec::new();
        for name in BTF_TRACEPOINTS {
            let program = programs.remove(name).ok_or(TracerError::Missing(name))?;
            btf_programs.push((name, program));
        }
        let btf_links = scope.spawn(move || {
            let btf = kernel_btf
                .join()
                .map_err(|_| TracerError::LoaderPanicked)?
                .map_err(|source| TracerError::KernelBtf { source })?;
            btf_programs
                .into_iter()
                .map(|(name, program)| attach_btf_tracepoint(name, program, &btf))
                .collect::<Result<Vec<_>, _>>()
        });
        let mut links = Vec::new();
        for (category, name) in TRACEPOINTS {
            let program = programs.remove(name).ok_or(TracerError::Missing(name))?;
            links.push(attach_tracepoint(category, name, program)?);
        }
        links.extend(
            btf_links
                .join()
                .map_err(|_| TracerError::LoaderPanicked)??,
        );
        Ok::<_, TracerError>(links)
    })?;
    Ok((ebpf, links))
}

/// Computes the kernel's offsets and loads the object (maps made, globals set), no program
/// loaded yet.
fn load_object(config: &TracerConfig) -> Result<Ebpf, TracerError> {
    let btf = Btf::from_sys_fs()?;
    let offsets = KernelOffsets::from_btf(&btf)?;
    debug!(?offsets, "kernel offsets from BTF");
    let types = kfunc::type_ids(&btf)?;
    let object = kfunc::link(EBPF_OBJECT, &btf)?;
    let arg_paths = u64::from(config.arg_paths);
    Ok(EbpfLoader::new()
        .override_global(globals::ARG_PATHS, &arg_paths, true)
        .override_global(globals::WALK_OFFSETS, &offsets.walk, true)
        .override_global(globals::BTF_TYPE_IDS, &types, true)
        .override_global(globals::WAKEUP_THRESHOLD, &config.wakeup_threshold, true)
        .map_max_entries("EVENTS", config.ring_bytes)
        .load(object.bytes())?)
}

/// Loads tracepoint program `name` and attaches it to `category:name`; returns its link.
fn attach_tracepoint(
    category: &str,
    name: &'static str,
    program: &mut Program,
) -> Result<Box<dyn Send>, TracerError> {
    let tracepoint: &mut TracePoint = program
        .try_into()
        .map_err(|source| TracerError::Program { name, source })?;
    tracepoint
        .load()
        .map_err(|source| TracerError::Program { name, source })?;
    let link = tracepoint
        .attach(category, name)
        .and_then(|id| tracepoint.take_link(id))
        .map_err(|source| TracerError::Program { name, source })?;
    Ok(Box::new(link))
}

/// Loads BTF tracepoint program `name` against the kernel's `btf` and attaches it; returns
/// its link.
fn attach_btf_tracepoint(
    name: &'static str,
    program: &mut Program,
    btf: &aya::Btf,
) -> Result<Box<dyn Send>, TracerError> {
    let tracepoint: &mut BtfTracePoint = program
        .try_into()
        .map_err(|source| TracerError::Program { name, source })?;
    tracepoint
        .load(name, btf)
        .map_err(|source| TracerError::Program { name, source })?;
    let link = tracepoint
        .attach()
        .and_then(|id| tracepoint.take_link(id))
        .map_err(|source| TracerError::Program { name, source })?;
    Ok(Box::new(link))
}

fn page_size() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u32::try_from(size).ok())
        .unwrap_or(4096)
}

/// Mounts tracefs where aya looks for it, when no tracefs is mounted yet.
fn ensure_tracefs() -> Result<(), TracerError> {
    let mounted = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|p| Path::new(p).is_dir());
    if mounted {
        return Ok(());
    }
    info!("mounting tracefs at {TRACEFS}");
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(TracerError::Tracefs)
}
