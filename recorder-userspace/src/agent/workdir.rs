//! The scratch space of `recorder run`: a directory of its own holding the unpacked layers
//! and the sandbox's upper dir, removed on every way out.

use std::path::{Path, PathBuf};

use crate::image::Image;
use crate::sandbox::unpack_layer;

use super::AgentError;

/// A directory created for one run and removed, with everything in it, when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `recorder-run-<pid>` under `base` (which must exist).
    pub fn create(base: &Path) -> Result<Self, AgentError> {
        let path = base.join(format!("recorder-run-{}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| AgentError::Io {
            op: format!("creating the work dir {}", path.display()),
            source,
        })?;
        Ok(Self { path })
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
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "removing the work dir");
        }
    }
}

/// Unpacks every layer of `image` into `<work>/layers/<i>`; returns the lowerdirs, bottom first.
pub fn unpack_layers(image: &Image, work: &Path) -> Result<Vec<PathBuf>, AgentError> {
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
        unpack_layer(&mut reader, &dir)
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
