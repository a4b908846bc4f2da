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
//! granularity of 64 KiB chunks) plus 512 per entry are counted against a limit, and a cancel flag is checked between chunks of 64 KiB,
//! so a stop request is honoured promptly even inside one huge file.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

use crate::image::path::{self, AUFS_META_PREFIX, OPAQUE_MARKER, WHITEOUT_PREFIX};

const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

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

/// What unpacking may take: bytes on disk (shared by all layers of an image, and by the
/// clones of a budget, so layers unpacked in parallel draw on one), and a flag that cancels it.
#[derive(Clone, Debug, Default)]
pub struct UnpackBudget {
    limit: Option<u64>,
    used: Arc<AtomicU64>,
    cancel: Option<Arc<AtomicBool>>,
}

/// Entries cost at least their metadata: a million empty files are not free.
const ENTRY_COST: u64 = 512;

/// Chunk size of file copies: holes are found, and cancellation checked, per chunk.
const CHUNK: usize = 64 * 1024;

impl UnpackBudget {
    /// At most `limit` bytes written (file data outside holes, plus 512 per entry).
    pub fn new(limit: u64) -> Self {
        Self {
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Counts into `counter` (a progress bar's), which starts at what it holds.
    pub fn count_into(mut self, counter: Arc<AtomicU64>) -> Self {
        self.used = counter;
        self
    }

    /// Stops unpacking with [`UnpackError::Cancelled`] once `flag` is set.
    pub fn cancel_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Bytes counted so far (by this budget and its clones).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn check_cancel(&self) -> Result<(), UnpackError> {
        match &self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(UnpackError::Cancelled),
            _ => Ok(()),
        }
    }

    fn charge(&mut self, bytes: u64, entry: &str) -> Result<(), UnpackError> {
        let used = self
            .used
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        match self.limit {
            Some(limit) if used > limit => Err(UnpackError::TooLarge {
                entry: entry.to_owned(),
                limit,
            }),
            _ => self.check_cancel(),
        }
    }
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
    let mut stats = UnpackStats::default();
    // Directory mtimes change as children are added, so they are set last.
    let mut dir_times: Vec<(Vec<OsString>, i64)> = Vec::new();
    let mut parents_open = DirCache::default();
    let mut buf = vec![0u8; CHUNK];
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
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
        let (parent, parent_setgid) = parents_open
            .open(&root, parents, true)
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
                stats.xattrs += set_xattrs(&dir, &xattrs).map_err(ctx.io("set xattr"))?;
                dir_times.push((components.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Created with its permission bits, so most files need no chmod; an entry in
                // the way (a later entry replacing an earlier one) is cleared only when the
                // name is taken. Both save a syscall per file: see `FileCreation`.
                let fd = match create_file(parent, file_name, mode) {
                    Err(Errno::EEXIST) => {
                        ctx.clear(parent, file_name, false)?;
                        create_file(parent, file_name, mode)
                    }
                    other => other,
                }
                .map_err(ctx.io("create file"))?;
                let file = File::from(fd);
                stats.bytes += copy_sparse(&mut entry, &file, &mut buf, budget, &name)?;
                let creation = FileCreation::get();
                // A new file is the creator's, or takes the group of a set-group-id parent.
                if (uid, gid) != creation.owner || parent_setgid {
                    // chown clears set-id bits, so it goes before chmod.
                    fchown(&file, Some(uid), Some(gid)).map_err(ctx.io("chown"))?;
                }
                if creation.needs_chmod(mode) {
                    fchmod(&file, mode).map_err(ctx.io("chmod"))?;
                }
                // After chown, which clears security.capability.
                stats.xattrs += set_xattrs(&file, &xattrs).map_err(ctx.io("set xattr"))?;
                futimens(&file, &times[0], &times[1]).map_err(ctx.io("set mtime"))?;
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
                fchownat(
                    parent,
                    file_name,
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(ctx.io("chown"))?;
                utimensat(
                    parent,
                    file_name,
                    &times[0],
                    &times[1],
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(ctx.io("set mtime"))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ctx.hostile("hardlink without a target"))?;
                let target = split_path(&target).map_err(|reason| ctx.hostile(reason))?;
                let Some((target_name, target_parents)) = target.split_last() else {
                    return Err(ctx.hostile("hardlink to the layer root"));
                };
                let target_dir = ctx.walk(&root, target_parents)?;
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
                fchownat(
                    parent,
                    file_name,
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(ctx.io("chown"))?;
                // We just created it, so it is not a symlink; the umask is why mode needs setting.
                fchmodat(parent, file_name, mode, FchmodatFlags::FollowSymlink)
                    .map_err(ctx.io("chmod"))?;
                utimensat(
                    parent,
                    file_name,
                    &times[0],
                    &times[1],
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(ctx.io("set mtime"))?;
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

    // Sorted, so that consecutive directories share their open parents.
    dir_times.sort();
    let mut parents_open = DirCache::default();
    for (components, mtime) in dir_times {
        budget.check_cancel()?;
        let entry =
            String::from_utf8_lossy(components.join(OsStr::new("/")).as_bytes()).into_owned();
        let ctx = Ctx { entry: &entry };
        let Some((name, parents)) = components.split_last() else {
            continue;
        };
        let parent = match parents_open.open(&root, parents, false) {
            Ok((fd, _)) => fd,
            // A later entry replaced or whited out a parent: nothing to set.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
            Err(e) => return Err(ctx.walk_error(e)),
        };
        let t = TimeSpec::new(mtime, 0);
        match utimensat(
            parent,
            name.as_os_str(),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        ) {
            // A later entry may have replaced or whited out the directory.
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(ctx.io("set directory mtime")(e)),
        }
    }
    Ok(stats)
}

/// Copies an entry's data into `file`, leaving runs of zeros as holes: the tar crate hands
/// over a GNU sparse entry's data with its holes filled in, and does not expose the map, so the
/// holes are found again here, per chunk (which also makes zero-filled regular files sparse:
/// the same content, less disk).
fn copy_sparse(
    from: &mut impl Read,
    file: &File,
    buf: &mut [u8],
    budget: &mut UnpackBudget,
    entry: &str,
) -> Result<u64, UnpackError> {
    let io = |op: &'static str| {
        move |source: io::Error| UnpackError::Io {
            entry: entry.to_owned(),
            op,
            source,
        }
    };
    let mut pos = 0u64;
    let (mut written, mut end) = (0u64, 0u64);
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("read file data")(e)),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if chunk.iter().all(|b| *b == 0) {
            budget.check_cancel()?;
        } else {
            budget.charge(filled as u64, entry)?;
            file.write_all_at(chunk, pos).map_err(io("write file"))?;
            written += filled as u64;
            end = pos + filled as u64;
        }
        pos += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    // Extends the file over a trailing hole (only then: one syscall less per file).
    if end < pos {
        file.set_len(pos).map_err(io("set file length"))?;
    }
    Ok(written)
}

/// The open directories of the previous entry's parents, so the next entry opens only what
/// differs. Entries only ever change a name inside their parent, which is never one of the
/// directories held here for the next entry's walk (it truncates to the shared prefix first).
#[derive(Default)]
struct DirCache {
    names: Vec<OsString>,
    fds: Vec<OwnedFd>,
    /// Whether each directory (and, first, the root) is set-group-id: a file created in one
    /// takes its group, so it needs a chown even when the entry's owner is the creator.
    setgid: Vec<bool>,
}

impl DirCache {
    /// The directory `root/parents...`, opened without following symlinks, created (0755, as
    /// tar does) where missing when `create` is set; and whether it is set-group-id.
    fn open<'a>(
        &'a mut self,
        root: &'a OwnedFd,
        parents: &[OsString],
        create: bool,
    ) -> Result<(&'a OwnedFd, bool), Errno> {
        if self.setgid.is_empty() {
            self.setgid.push(is_setgid(root)?);
        }
        let common = self
            .names
            .iter()
            .zip(parents)
            .take_while(|(a, b)| a == b)
            .count();
        self.names.truncate(common);
        self.fds.truncate(common);
        self.setgid.truncate(common + 1);
        for part in &parents[common..] {
            let dir = self.fds.last().unwrap_or(root);
            let next = open_dir(dir, part, create)?;
            self.setgid.push(is_setgid(&next)?);
            self.names.push(part.clone());
            self.fds.push(next);
        }
        let setgid = self.setgid.last().copied().unwrap_or(false);
        Ok((self.fds.last().unwrap_or(root), setgid))
    }
}

fn is_setgid(dir: &OwnedFd) -> Result<bool, Errno> {
    Ok(nix::sys::stat::fstat(dir)?.st_mode & libc::S_ISGID != 0)
}

/// Creates a regular file for writing, with `mode`'s permission bits (less the umask).
fn create_file(parent: &OwnedFd, name: &OsStr, mode: Mode) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode & Mode::from_bits_truncate(0o777),
    )
}

/// What a file created by this process gets without being asked: its owner, and the
/// permission bits the umask takes away. Knowing them saves the `fchown` and `fchmod` of most
/// files (root-owned, 0644 or 0755, under umask 022): two of the eight syscalls a file cost.
#[derive(Clone, Copy, Debug)]
struct FileCreation {
    owner: (Uid, Gid),
    umask: u32,
}

impl FileCreation {
    fn get() -> Self {
        static CREATION: std::sync::OnceLock<FileCreation> = std::sync::OnceLock::new();
        *CREATION.get_or_init(|| FileCreation {
            owner: (nix::unistd::geteuid(), nix::unistd::getegid()),
            // Read, not set and restored with umask(2): that would race with other threads.
            // Unknown (a kernel before 4.7): every bit, so every file gets its chmod.
            umask: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Umask:"))
                        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                })
                .unwrap_or(0o777),
        })
    }

    /// Whether a file created with `mode` needs a chmod to get it: set-id and sticky bits are
    /// never given at creation (and a chown clears set-id bits), and the umask's bits are not.
    fn needs_chmod(self, mode: Mode) -> bool {
        mode.bits() & (0o7000 | self.umask) != 0
    }
}

/// The prefix of xattrs in PAX headers (GNU tar, Docker, BuildKit).
const PAX_XATTR: &str = "SCHILY.xattr.";

/// The extended attributes in the entry's PAX headers that a lower dir may carry: `user.*`
/// and file capabilities (`security.capability`: what ping and the like are given instead of
/// set-uid). Others are dropped: `trusted.overlay.*` would forge overlayfs whiteouts, opaque
/// dirs or redirects, and `security.*` labels belong to the host's policy.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Vec<(CString, Vec<u8>)> {
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in extensions.flatten() {
        let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix(PAX_XATTR)) else {
            continue;
        };
        if !(key.starts_with("user.") || key == "security.capability") {
            tracing::debug!(entry = name, xattr = key, "dropping an xattr");
            continue;
        }
        if let Ok(key) = CString::new(key) {
            out.push((key, ext.value_bytes().to_vec()));
        }
    }
    out
}

fn set_xattrs(fd: &impl AsFd, xattrs: &[(CString, Vec<u8>)]) -> Result<u64, Errno> {
    for (name, value) in xattrs {
        set_xattr(fd, name, value)?;
    }
    Ok(xattrs.len() as u64)
}

fn open_dir(dir: &OwnedFd, part: &OsStr, create: bool) -> Result<OwnedFd, Errno> {
    match openat(dir, part, dir_flags(), Mode::empty()) {
        Err(Errno::ENOENT) if create => {
            match mkdirat(dir, part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            openat(dir, part, dir_flags(), Mode::empty())
        }
        other => other,
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
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

/// Error context for one entry.
struct Ctx<'a> {
    entry: &'a str,
}

impl Ctx<'_> {
    fn io<E: Into<io::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> UnpackError + use<E> {
        let entry = self.entry.to_owned();
        move |e: E| UnpackError::Io {
            entry,
            op,
            source: e.into(),
        }
    }

    fn hostile(&self, reason: &'static str) -> UnpackError {
        UnpackError::Hostile {
            entry: self.entry.to_owned(),
            reason,
        }
    }

    fn walk_error(&self, e: Errno) -> UnpackError {
        match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                self.hostile("a parent is a symlink or not a directory")
            }
            e => self.io("open parent directory")(e),
        }
    }

    /// Opens the directory `root/parents...` without following any symlink (for hardlink
    /// targets, which are rare enough to walk from the root).
    fn walk(&self, root: &OwnedFd, parents: &[OsString]) -> Result<OwnedFd, UnpackError> {
        let mut dir = root.try_clone().map_err(|source| UnpackError::Io {
            entry: self.entry.to_owned(),
            op: "dup directory fd",
            source,
        })?;
        for part in parents {
            dir = open_dir(&dir, part, false).map_err(|e| self.walk_error(e))?;
        }
        Ok(dir)
    }

    /// Removes whatever is at `name` so a later entry replaces an earlier one, as tar does.
    /// A directory is kept when the new entry is a directory too.
    fn clear(&self, parent: &OwnedFd, name: &OsStr, new_is_dir: bool) -> Result<(), UnpackError> {
        let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.io("stat existing entry")(e)),
        };
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir && new_is_dir {
            return Ok(());
        }
        let flag = if is_dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        unlinkat(parent, name, flag).map_err(self.io("replace existing entry"))
    }
}

fn set_xattr(fd: &impl AsFd, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: fd is open for the call's duration; name is NUL-terminated; value/len describe a
    // live slice. fsetxattr only reads them.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chmod_is_needed_only_for_bits_creation_cannot_give() {
        let creation = FileCreation {
            owner: (Uid::from_raw(0), Gid::from_raw(0)),
            umask: 0o022,
        };
        // (mode, needs a chmod)
        for (mode, want) in [
            (0o644, false),
            (0o755, false),
            (0o600, false),
            (0o666, true),
            (0o775, true),
            (0o4755, true),
            (0o2755, true),
            (0o1777, true),
        ] {
            let mode = Mode::from_bits_truncate(mode);
            assert_eq!(creation.needs_chmod(mode), want, "{mode:?}");
        }
    }

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
}
