//! Unpacks an uncompressed OCI layer tar into a directory usable as an overlayfs lowerdir.
//!
//! Every entry is created relative to directory fds opened with `O_NOFOLLOW`, so a symlink in
//! the layer (or an earlier hostile entry) can never redirect a write outside the target. The
//! directory fds of the current entry's parents are kept from one entry to the next, so a tree
//! N directories deep costs N opens, not N² (11k entries 1000 directories deep took 18.4 s
//! when every entry walked from the root).
//!
//! Bounded ([`UnpackBudget`]): runs of zeros are written as holes (GNU sparse entries, and a
//! zstd or gzip bomb of zeros, take no disk space), the bytes actually written (at the
//! granularity of 64 KiB chunks) plus 512 per entry are counted against a limit, and a cancel
//! flag is checked between chunks of 64 KiB, so a stop request is honoured promptly even inside
//! one huge file.
//!
//! Here the walk over the tar's entries, each made by its type; beside it:
//! - `budget`: [`UnpackBudget`], the bytes and the cancel flag;
//! - `dirs`: the parent directories, opened without following symlinks and kept open;
//! - `entry`: one entry's error context, replacing what is at its name, its owner and times;
//! - `file`: regular files, created with their mode and copied with holes;
//! - `xattr`: the PAX headers' extended attributes, and the opaque marker;
//! - `workers`: small regular files created on worker threads, in parallel across directories.

mod budget;
mod dirs;
mod entry;
mod file;
mod workers;
mod xattr;

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fchmod, makedev, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, linkat, symlinkat};
use tar::EntryType;

use crate::image::path::{self, AUFS_META_PREFIX, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::image::{ImageError, TarIndexer};

pub use budget::UnpackBudget;
use budget::{CHUNK, ENTRY_COST};
use dirs::{DirCache, dir_flags, set_dir_times};
use entry::Ctx;
use file::{FileAttrs, copy_sparse, create_replacing, read_small, set_file_attrs};
use workers::{FileJob, Shared, Workers, join, sibling};
pub(super) use xattr::OPAQUE_XATTR;
use xattr::{pax_xattrs, set_xattr, set_xattrs};

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The target directory could not be opened.
    #[error("opening layer directory {path}")]
    Target {
        /// The target directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tar stream itself is unreadable or corrupt.
    #[error("reading layer tar")]
    Read(#[source] io::Error),
    /// The entry's name (or link target) would escape the target or is otherwise unsafe.
    #[error("layer entry {entry:?}: rejected: {reason}")]
    Hostile {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The entry has a type a layer cannot contain.
    #[error("layer entry {entry:?}: unsupported entry type {kind:?}")]
    Unsupported {
        /// The entry's name.
        entry: String,
        /// The tar entry type byte.
        kind: char,
    },
    /// The layers would take more space than allowed.
    #[error(
        "layer entry {entry:?}: the unpacked image would exceed {limit} bytes (--max-unpacked)"
    )]
    TooLarge {
        /// The entry being written.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// An entry could not be indexed (see [`unpack_layer_indexed`]).
    #[error("indexing the layer")]
    Index(#[source] Box<ImageError>),
    /// Unpacking was cancelled (a stop request).
    #[error("unpacking was cancelled")]
    Cancelled,
    /// Creating the entry on disk failed.
    #[error("layer entry {entry:?}: {op}")]
    Io {
        /// The entry's name.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// What [`unpack_layer`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Bytes counted against the budget for this layer (file data outside holes, plus 512 per
    /// entry).
    pub bytes: u64,
    /// Extended attributes set from the layer's PAX headers.
    pub xattrs: u64,
    /// Entries created (files, dirs, links, nodes).
    pub entries: u64,
    /// Whiteouts turned into overlay whiteout devices.
    pub whiteouts: u64,
    /// Directories marked opaque.
    pub opaque_dirs: u64,
}

/// Unpacks one uncompressed layer tar stream into `target` (which must exist), converting OCI
/// whiteouts to overlayfs ones, without a size limit. Needs root (or CAP_MKNOD, CAP_CHOWN,
/// CAP_SYS_ADMIN for xattrs).
pub fn unpack_layer(layer: impl Read, target: &Path) -> Result<UnpackStats, UnpackError> {
    unpack_layer_within(layer, target, &mut UnpackBudget::unlimited())
}

/// [`unpack_layer`] within `budget`.
pub fn unpack_layer_within(
    layer: impl Read,
    target: &Path,
    budget: &mut UnpackBudget,
) -> Result<UnpackStats, UnpackError> {
    unpack_layer_indexed(layer, target, budget, None)
}

/// [`unpack_layer_within`], each entry also given to `index` (when there is one) as it is met,
/// so that the layer is indexed in the pass that unpacks it: `recorder run` decompresses a
/// layer once, not once to index it and again to unpack it (on an image of 60,000 small files
/// a cold run took 1.97x `tar -xzf` of its layers that way; docs/benchmarks.md, "Layer
/// cache"). Every entry reaches the index, those this unpacker skips (the layer root, AUFS
/// metadata) included, as in an index made by reading the layer alone.
pub fn unpack_layer_indexed(
    layer: impl Read,
    target: &Path,
    budget: &mut UnpackBudget,
    index: Option<&mut TarIndexer>,
) -> Result<UnpackStats, UnpackError> {
    unpack(layer, target, budget, index, workers::default_count())
}

/// [`unpack_layer_within`] with `workers` threads creating small files (fewer than 2: none,
/// every file created on the calling thread). For tests comparing the two; not an option of
/// the recorder's.
#[doc(hidden)]
pub fn unpack_layer_with_workers(
    layer: impl Read,
    target: &Path,
    budget: &mut UnpackBudget,
    workers: usize,
) -> Result<UnpackStats, UnpackError> {
    unpack(layer, target, budget, None, workers)
}

fn unpack(
    layer: impl Read,
    target: &Path,
    budget: &mut UnpackBudget,
    index: Option<&mut TarIndexer>,
    workers: usize,
) -> Result<UnpackStats, UnpackError> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        target,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Target {
        path: target.to_owned(),
        source: e.into(),
    })?;
    let root = Arc::new(root);
    let shared = Shared::new(budget.cancel_arc(), workers);
    let (stats, dir_times) = std::thread::scope(|scope| {
        let mut workers = Workers::new(scope, &shared, workers);
        let walked = walk(layer, &root, budget, index, &mut workers);
        // Joins the workers, even on an error.
        workers.finish(walked)
    })?;
    set_dir_times(&root, dir_times, budget)?;
    Ok(stats)
}

/// Directories and their mtimes, set once every entry is in.
type DirTimes = Vec<(Vec<OsString>, i64)>;

/// Makes every entry of the layer, small regular files through `workers`.
fn walk(
    layer: impl Read,
    root: &Arc<OwnedFd>,
    budget: &mut UnpackBudget,
    mut index: Option<&mut TarIndexer>,
    workers: &mut Workers<'_, '_>,
) -> Result<(UnpackStats, DirTimes), UnpackError> {
    let mut stats = UnpackStats::default();
    // Directory mtimes change as children are added, so they are set last.
    let mut dir_times: DirTimes = Vec::new();
    let mut parents_open = DirCache::default();
    let mut buf = vec![0u8; CHUNK];
    let mut archive = tar::Archive::new(layer);
    for (seq, entry) in (0u64..).zip(archive.entries().map_err(UnpackError::Read)?) {
        let mut entry = entry.map_err(UnpackError::Read)?;
        if let Some(index) = index.as_deref_mut() {
            index
                .add(&entry)
                .map_err(|e| UnpackError::Index(Box::new(e)))?;
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        budget.charge(ENTRY_COST, &name)?;
        stats.bytes += ENTRY_COST;
        let components = split_path(&raw_name).map_err(|reason| UnpackError::Hostile {
            entry: name.clone(),
            reason,
        })?;
        let Some((file_name, parents)) = components.split_last() else {
            // The layer root itself ("./"): the lowerdir's own metadata is not ours to change.
            continue;
        };
        let ctx = Ctx { entry: &name };
        // Before its parents are opened (or made): a file given to a worker may be one.
        let path = join(&components);
        workers.touch(&path)?;
        let (parent, parent_setgid) = parents_open
            .open(root, parents, true)
            .map_err(|e| ctx.walk_error(e))?;
        let file_name = file_name.as_bytes();

        if file_name == OPAQUE_MARKER {
            set_xattr(parent, OPAQUE_XATTR, b"y").map_err(ctx.io("set opaque xattr"))?;
            stats.opaque_dirs += 1;
            continue;
        }
        if file_name.starts_with(AUFS_META_PREFIX) {
            tracing::debug!(entry = %name, "skipping AUFS metadata entry");
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(ctx.hostile("whiteout of an invalid name"));
            }
            workers.touch(&sibling(&path, hidden))?;
            let hidden = OsStr::from_bytes(hidden);
            ctx.clear(parent, hidden, false)?;
            mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(ctx.io("create whiteout"))?;
            stats.whiteouts += 1;
            continue;
        }

        let file_name = OsStr::from_bytes(file_name);
        let xattrs = pax_xattrs(&mut entry, &name);
        let header = entry.header();
        let mode = Mode::from_bits_truncate(header.mode().map_err(ctx.io("read mode"))? & 0o7777);
        let uid = Uid::from_raw(header.uid().map_err(ctx.io("read uid"))? as u32);
        let gid = Gid::from_raw(header.gid().map_err(ctx.io("read gid"))? as u32);
        let mtime = header.mtime().map_err(ctx.io("read mtime"))? as i64;
        let times = [TimeSpec::new(mtime, 0), TimeSpec::new(mtime, 0)];
        let kind = header.entry_type();
        let attrs = FileAttrs {
            mode,
            owner: (uid, gid),
            parent_setgid,
            xattrs,
            mtime,
        };

        match kind {
            EntryType::Directory => {
                ctx.clear(parent, file_name, true)?;
                match mkdirat(parent, file_name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(ctx.io("mkdir")(e)),
                }
                let dir = openat(parent, file_name, dir_flags(), Mode::empty())
                    .map_err(ctx.io("open created directory"))?;
                fchown(&dir, Some(uid), Some(gid)).map_err(ctx.io("chown"))?;
                fchmod(&dir, mode).map_err(ctx.io("chmod"))?;
                stats.xattrs += set_xattrs(&dir, &attrs.xattrs).map_err(ctx.io("set xattr"))?;
                dir_times.push((components.clone(), mtime));
            }
            // Small (one chunk, no sparse map): read here, created by a worker.
            EntryType::Regular | EntryType::Continuous
                if workers.enabled() && entry.size() <= CHUNK as u64 =>
            {
                let size = entry.size();
                let (data, len, charged) = read_small(&mut entry, size, budget, &name)?;
                stats.bytes += charged;
                stats.xattrs += attrs.xattrs.len() as u64;
                let job = FileJob {
                    seq,
                    entry: name.clone(),
                    parent: Arc::clone(parent),
                    name: file_name.to_owned(),
                    attrs,
                    data,
                    len,
                };
                workers.dispatch(job, &path)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let file = create_replacing(parent, file_name, mode, &ctx)?;
                stats.bytes += copy_sparse(&mut entry, &file, &mut buf, budget, &name)?;
                stats.xattrs += set_file_attrs(&file, &attrs, &ctx)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ctx.hostile("symlink without a target"))?;
                if target.contains(&0) {
                    return Err(ctx.hostile("symlink target contains NUL"));
                }
                // The target is stored, never followed here; overlayfs resolves it in the container.
                ctx.clear(parent, file_name, false)?;
                symlinkat(OsStr::from_bytes(&target), parent, file_name)
                    .map_err(ctx.io("create symlink"))?;
                // A symlink has no permission bits of its own.
                ctx.set_owner_mode_mtime(parent, file_name, (uid, gid), None, &times)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ctx.hostile("hardlink without a target"))?;
                let target = split_path(&target).map_err(|reason| ctx.hostile(reason))?;
                let Some((target_name, target_parents)) = target.split_last() else {
                    return Err(ctx.hostile("hardlink to the layer root"));
                };
                workers.touch(&join(&target))?;
                let target_dir = ctx.walk(root, target_parents)?;
                ctx.clear(parent, file_name, false)?;
                // Without AT_SYMLINK_FOLLOW, linkat links a symlink itself, never what it names.
                linkat(
                    &target_dir,
                    target_name.as_os_str(),
                    parent,
                    file_name,
                    AtFlags::empty(),
                )
                .map_err(ctx.io("create hardlink"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().map_err(ctx.io("read device major"))?;
                let minor = header.device_minor().map_err(ctx.io("read device minor"))?;
                let dev = makedev(u64::from(major.unwrap_or(0)), u64::from(minor.unwrap_or(0)));
                ctx.clear(parent, file_name, false)?;
                mknodat(parent, file_name, sflag, Mode::empty(), dev).map_err(ctx.io("mknod"))?;
                // Made with no permission bits (mknod takes the umask's off): chmod gives them.
                ctx.set_owner_mode_mtime(parent, file_name, (uid, gid), Some(mode), &times)?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: char::from(other.as_byte()),
                });
            }
        }
        stats.entries += 1;
    }
    Ok((stats, dir_times))
}

/// Splits a tar name into normal components, rejecting anything that could escape.
fn split_path(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if raw.contains(&0) {
        return Err("name contains NUL");
    }
    // Even a `..` that stays inside is refused: no legitimate layer writer emits one.
    if let Some(why) = path::refused_by_run(raw) {
        return Err(why);
    }
    Ok(path::components(raw)
        .map(|part| OsStr::from_bytes(part).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_accepts_normal_and_rejects_escapes() {
        assert_eq!(split_path(b"./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(split_path(b"a//./b").unwrap(), ["a", "b"]);
        assert!(split_path(b"./").unwrap().is_empty());
        assert!(split_path(b"/etc/passwd").is_err());
        assert!(split_path(b"../x").is_err());
        assert!(split_path(b"a/../../x").is_err());
        assert!(split_path(b"a\0b").is_err());
    }

    #[test]
    fn each_cause_is_printed_once() {
        let cause = || io::Error::other("disk full");
        // (error, its chain on one line)
        let cases = [
            (
                UnpackError::Target {
                    path: "/l".into(),
                    source: cause(),
                },
                "opening layer directory /l: disk full",
            ),
            (UnpackError::Read(cause()), "reading layer tar: disk full"),
            (
                UnpackError::Io {
                    entry: "a/b".into(),
                    op: "chown",
                    source: cause(),
                },
                "layer entry \"a/b\": chown: disk full",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(crate::errors::Chain(&error).to_string(), want);
        }
    }
}
