//! The scratch space of `recorder run`: a directory of its own holding the unpacked layers
//! and the sandbox's upper dir, removed on every way out, by a [`Watchdog`] if the recorder
//! is killed.
//!
//! The directory is 0700 under an unpredictable name (`tempfile`): the image's files, its
//! setuid binaries and device nodes included, are reachable by root only, and nobody can plant
//! the directory (or a symlink in its place) before the run.

use std::path::{Path, PathBuf};

use crate::image::Image;
use crate::sandbox::{UnpackBudget, UnpackError, Watchdog, unpack_layer_within};

use super::AgentError;

/// A directory created for one run and removed, with everything in it, when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    watchdog: Watchdog,
}

impl WorkDir {
    /// Creates `recorder-run-XXXXXX` (0700) under `base` (which must exist), and its watchdog.
    pub fn create(base: &Path) -> Result<Self, AgentError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("recorder-run-")
            // Explicit: tempfile's default for directories is 0777 less the umask.
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|source| AgentError::Io {
                op: format!("creating a work dir in {}", base.display()),
                source,
            })?;
        let path = dir.keep();
        let watchdog = match Watchdog::spawn(&path) {
            Ok(w) => w,
            Err(source) => {
                let _ = std::fs::remove_dir(&path);
                return Err(AgentError::Io {
                    op: "starting the work dir's watchdog".into(),
                    source,
                });
            }
        };
        Ok(Self { path, watchdog })
    }

    /// The watchdog that removes this directory if the recorder dies; give it to the sandbox.
    pub fn watchdog(&self) -> Watchdog {
        self.watchdog.clone()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the sandbox keeps its upper dir and mount point (created by the sandbox).
    pub fn scratch(&self) -> PathBuf {
        self.path.join("sandbox")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // The unpacked layers: as many files as the image has.
        let _progress = crate::progress::Progress::spinner("removing the work dir");
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "removing the work dir");
        }
        self.watchdog.dismiss();
    }
}

/// The default `--max-unpacked`: this share of the space free where the work dir is.
pub const DEFAULT_UNPACKED_SHARE: f64 = 0.5;

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Result<u64, AgentError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| AgentError::Io {
        op: format!("statvfs {}", dir.display()),
        source: e.into(),
    })?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Unpacks every layer of `image` into `<work>/layers/<i>` within `budget`; returns the
/// lowerdirs, bottom first.
///
/// Checked before anything is written: the layers as stored (compressed, a floor of what they
/// unpack to) must fit the budget's limit and the free space. Checked during: every byte.
pub fn unpack_layers(
    image: &Image,
    work: &Path,
    limit: Option<u64>,
    budget: &mut UnpackBudget,
) -> Result<Vec<PathBuf>, AgentError> {
    let stored: u64 = image.layers().iter().map(|l| l.size).sum();
    let free = free_space(work)?;
    if let Some(limit) = limit.filter(|l| stored > *l) {
        return Err(AgentError::Unpack {
            layer: 0,
            source: UnpackError::TooLarge {
                entry: format!("(the layers are {stored} bytes as stored, before unpacking)"),
                limit,
            },
        });
    }
    if stored > free {
        return Err(AgentError::Io {
            op: format!(
                "unpacking the image into {}: its layers are {stored} bytes as stored, and only \
                 {free} are free there",
                work.display()
            ),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
    }
    let mut dirs = Vec::with_capacity(image.layers().len());
    for i in 0..image.layers().len() {
        let dir = work.join("layers").join(i.to_string());
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::Io {
            op: format!("creating {}", dir.display()),
            source,
        })?;
        let mut reader = image.open_layer(i).map_err(|source| AgentError::Image {
            image: format!("layer {i}"),
            source,
        })?;
        unpack_layer_within(&mut reader, &dir, budget)
            .map_err(|source| AgentError::Unpack { layer: i, source })?;
        // The reader checks the layer's digest at EOF.
        reader.finish().map_err(|source| AgentError::Image {
            image: format!("layer {i}"),
            source,
        })?;
        dirs.push(dir);
    }
    Ok(dirs)
}
