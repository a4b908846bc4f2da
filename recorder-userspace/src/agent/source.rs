//! Where the image comes from: an OCI layout directory, or a containerd-style content store
//! with a manifest digest.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::image::{BlobDigest, Image, ImageError, Platform};

/// An image source as given on the command line: `DIR` (an OCI image layout, the manifest
/// picked by `--ref` when several) or `DIR@sha256:HEX` (a content store and a manifest or
/// index digest in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An OCI image layout and an optional `org.opencontainers.image.ref.name`.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The manifest's reference name, when the layout has several.
        reference: Option<String>,
    },
    /// A content store and a manifest (or index) digest.
    Store {
        /// The store directory.
        dir: PathBuf,
        /// The manifest or index.
        digest: BlobDigest,
    },
}

impl ImageSource {
    /// Opens the image, picking `platform` from an index.
    pub fn open(&self, platform: &Platform) -> Result<Image, ImageError> {
        match self {
            ImageSource::Layout { dir, reference } => {
                Image::open_oci_layout(dir, reference.as_deref(), platform)
            }
            ImageSource::Store { dir, digest } => Image::open_store(dir, digest, platform),
        }
    }

    /// Sets the reference name of a layout source (ignored for a store).
    pub fn with_reference(mut self, name: Option<String>) -> Self {
        if let ImageSource::Layout { reference, .. } = &mut self {
            *reference = name;
        }
        self
    }
}

impl FromStr for ImageSource {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.rsplit_once("@sha256:") {
            Some((dir, hex)) => Ok(ImageSource::Store {
                dir: dir.into(),
                digest: format!("sha256:{hex}").parse()?,
            }),
            None => Ok(ImageSource::Layout {
                dir: s.into(),
                reference: None,
            }),
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Layout { dir, reference } => {
                write!(f, "{}", dir.display())?;
                match reference {
                    Some(r) => write!(f, " (ref {r})"),
                    None => Ok(()),
                }
            }
            ImageSource::Store { dir, digest } => write!(f, "{}@{digest}", dir.display()),
        }
    }
}
