//! The run's scratch dir: the overlay's upper and work dirs, the rootfs mount point, runc's
//! bundle and state; private (0700), and removed explicitly or on drop.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::run::SandboxError;

/// The scratch directory, removed explicitly or on drop.
#[derive(Debug)]
pub(super) struct ScratchDir {
    path: Option<PathBuf>,
}

impl ScratchDir {
    pub(super) fn create(path: &Path) -> Result<Self, SandboxError> {
        let err = |source| SandboxError::Scratch {
            path: path.to_owned(),
            source,
        };
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Only an empty dir is ours to take over; anything else may be someone's data.
                if std::fs::read_dir(path).map_err(err)?.next().is_some() {
                    return Err(err(io::Error::new(
                        io::ErrorKind::DirectoryNotEmpty,
                        "scratch directory is not empty",
                    )));
                }
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                    .map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
        // runc wants an absolute bundle and root.
        let path = std::path::absolute(path).map_err(err)?;
        Ok(Self { path: Some(path) })
    }

    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("."))
    }

    pub(super) fn make_dir(&self, name: &str, mode: u32) -> Result<PathBuf, SandboxError> {
        let dir = self.path().join(name);
        std::fs::create_dir(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)))
            .map_err(|source| SandboxError::Scratch {
                path: dir.clone(),
                source,
            })?;
        Ok(dir)
    }

    pub(super) fn remove(mut self) -> Result<(), SandboxError> {
        match self.path.take() {
            Some(path) => std::fs::remove_dir_all(&path)
                .map_err(|source| SandboxError::Scratch { path, source }),
            None => Ok(()),
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(error) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(path = %path.display(), %error, "removing the sandbox scratch dir");
        }
    }
}
