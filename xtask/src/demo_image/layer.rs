//! One image layer as a sorted set of entries, written as a reproducible tar+gzip blob.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use flate2::{Compression, write::GzEncoder};
use sha2::{Digest, Sha256};

/// Every entry gets this mtime (2024-01-01T00:00:00Z), so the blob depends only on content.
pub const FIXED_MTIME: u64 = 1_704_067_200;

/// What a path in a layer is.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// A layer's entries by relative path (no leading `/`). A `BTreeMap` keeps them sorted, and a
/// parent sorts before its children, so the tar is reproducible and never names a child first.
#[derive(Default)]
pub struct Layer {
    entries: BTreeMap<String, Entry>,
}

/// A written layer: the compressed blob and the digests the manifest and config need.
pub struct LayerBlob {
    pub gzip: Vec<u8>,
    /// sha256 of the compressed blob (the manifest's layer digest).
    pub digest: String,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    pub entries: usize,
}

impl Layer {
    pub fn dir(&mut self, path: &str, mode: u32) -> anyhow::Result<()> {
        self.insert(path, Entry::Dir { mode })
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> anyhow::Result<()> {
        let data = data.into();
        self.insert(path, Entry::File { mode, data })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        let target = target.to_owned();
        self.insert(path, Entry::Symlink { target })
    }

    /// An OCI whiteout: `path` (from a lower layer) is deleted in the merged view.
    pub fn whiteout(&mut self, path: &str) -> anyhow::Result<()> {
        let (parent, name) = split_parent(path);
        self.file(&join(parent, &format!(".wh.{name}")), 0o644, Vec::new())
    }

    /// An OCI opaque marker: lower layers' contents of `dir` are hidden.
    pub fn opaque(&mut self, dir: &str) -> anyhow::Result<()> {
        self.dir(dir, 0o755)?;
        self.file(&join(dir, ".wh..wh..opq"), 0o644, Vec::new())
    }

    /// Adds `path`, creating missing parents as plain dirs. Adding the same path twice is
    /// fine when both agree (shared libraries reached from several binaries).
    fn insert(&mut self, path: &str, entry: Entry) -> anyhow::Result<()> {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        if path.is_empty() {
            bail!("a layer entry needs a non-root path");
        }
        let mut parent = String::new();
        for part in path.split('/').take(path.split('/').count() - 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(_) => bail!("{path}: its parent {parent} is not a directory in this layer"),
            }
        }
        match (self.entries.get(path), &entry) {
            (Some(Entry::Dir { .. }), Entry::Dir { .. }) | (None, _) => {
                self.entries.insert(path.to_owned(), entry);
            }
            (Some(Entry::Symlink { target: a }), Entry::Symlink { target: b }) if a == b => {}
            (Some(Entry::File { data: a, .. }), Entry::File { data: b, .. }) if a == b => {}
            (Some(old), new) => bail!("{path} added twice: {old:?} then {new:?}"),
        }
        Ok(())
    }

    /// Creates the layer's entries as files under `dir`, which must not exist yet (the
    /// image's file tree, for a container build to copy).
    pub fn unpack(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (path, entry) in &self.entries {
            let at = dir.join(path);
            match entry {
                Entry::Dir { mode } => std::fs::create_dir(&at)
                    .and_then(|()| std::fs::set_permissions(&at, PermissionsExt::from_mode(*mode))),
                Entry::File { mode, data } => std::fs::write(&at, data)
                    .and_then(|()| std::fs::set_permissions(&at, PermissionsExt::from_mode(*mode))),
                Entry::Symlink { target } => std::os::unix::fs::symlink(target, &at),
            }
            .with_context(|| format!("creating {}", at.display()))?;
        }
        Ok(())
    }

    /// Writes the tar (root-owned entries, fixed mtime) and gzips it with fixed settings.
    pub fn write(&self) -> anyhow::Result<LayerBlob> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(FIXED_MTIME);
            header.set_uid(0);
            header.set_gid(0);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), std::io::empty())
                }
                Entry::File { mode, data } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, data.as_slice())
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)
                }
            }
            .with_context(|| format!("adding {path} to a layer tar"))?;
        }
        let tar = tar.into_inner().context("finishing a layer tar")?;
        // GzEncoder writes mtime 0 and no file name in the gzip header, so equal tars give
        // equal blobs.
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&tar).context("compressing a layer")?;
        let gzip = gz.finish().context("compressing a layer")?;
        Ok(LayerBlob {
            digest: sha256_digest(&gzip),
            diff_id: sha256_digest(&tar),
            gzip,
            entries: self.entries.len(),
        })
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn split_parent(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/').trim_end_matches('/');
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}
