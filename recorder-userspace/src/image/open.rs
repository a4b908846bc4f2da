//! Opening an image: from a root descriptor down through indexes to one manifest, its config
//! and its layer descriptors.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::digest::BlobDigest;
use super::error::{ImageError, Result};
use super::layer::LayerReader;
use super::media::{self, Compression, DocKind};
use super::platform::{self, Platform};
use super::source::{BlobDir, BlobSource, MAX_JSON_BLOB};
use crate::files::read_capped;

/// Annotation that names a manifest in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Indexes nested deeper than this are refused (real images use one level).
const MAX_INDEX_DEPTH: usize = 8;

/// One layer of an image, as its manifest describes it.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// The blob's digest.
    pub digest: BlobDigest,
    /// The descriptor's media type as written.
    pub media_type: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// How the blob is compressed.
    pub compression: Compression,
    /// The digest of its eStargz table of contents, as the descriptor's
    /// `containerd.io/snapshot/stargz/toc.digest` annotation gives it (unparsed).
    pub toc_digest: Option<String>,
}

/// What the image config says about running the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`, empty when unset.
    pub working_dir: String,
    /// `User`, empty when unset.
    pub user: String,
}

/// An opened image: one manifest, its config and its layers, backed by a blob source.
#[derive(Clone)]
pub struct Image {
    source: Arc<dyn BlobSource>,
    manifest_digest: BlobDigest,
    manifest: ImageManifest,
    config: ImageConfiguration,
    layers: Vec<LayerInfo>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("source", &self.source.name())
            .field("manifest_digest", &self.manifest_digest)
            .field("layers", &self.layers)
            .finish()
    }
}

impl Image {
    /// Opens the manifest named `name` (or the only one, or this platform's) of an OCI layout.
    pub fn open_oci_layout(dir: &Path, name: Option<&str>, platform: &Platform) -> Result<Image> {
        let layout_file = dir.join("oci-layout");
        let layout = read_capped(&layout_file, MAX_JSON_BLOB).map_err(|source| ImageError::Io {
            path: layout_file.clone(),
            source,
        })?;
        let layout: serde_json::Value =
            serde_json::from_slice(&layout).map_err(|e| ImageError::BadJson {
                what: "oci-layout",
                name: layout_file.display().to_string(),
                source: e.into(),
            })?;
        if layout
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(ImageError::BadLayout {
                path: dir.to_owned(),
                message: "oci-layout has no imageLayoutVersion".into(),
            });
        }
        let index_file = dir.join("index.json");
        let bytes = read_capped(&index_file, MAX_JSON_BLOB).map_err(|source| ImageError::Io {
            path: index_file.clone(),
            source,
        })?;
        let index = parse_index(&bytes, &index_file.display().to_string())?;
        let source: Arc<dyn BlobSource> = Arc::new(BlobDir::new(dir));
        let desc = pick_from_layout(&index, name, platform, &source.name())?;
        Self::from_descriptor(source, &desc, platform)
    }

    /// Opens the manifest (or index, resolved by `platform`) `digest` of a containerd-style
    /// local content store directory.
    pub fn open_store(dir: &Path, digest: &BlobDigest, platform: &Platform) -> Result<Image> {
        let source: Arc<dyn BlobSource> = Arc::new(BlobDir::new(dir));
        Self::open_digest(source, digest, None, None, platform)
    }

    /// Opens the image a descriptor (of a manifest or an index) points at.
    pub fn from_descriptor(
        source: Arc<dyn BlobSource>,
        desc: &Descriptor,
        platform: &Platform,
    ) -> Result<Image> {
        let digest = BlobDigest::from_oci(desc.digest())?;
        let mt = desc.media_type().to_string();
        Self::open_digest(source, &digest, Some(desc.size()), Some(&mt), platform)
    }

    /// Opens the manifest or index `digest`; a missing or unknown media type is sniffed.
    pub fn open_digest(
        source: Arc<dyn BlobSource>,
        digest: &BlobDigest,
        size: Option<u64>,
        media_type: Option<&str>,
        platform: &Platform,
    ) -> Result<Image> {
        let mut digest = digest.clone();
        let mut size = size;
        let mut media_type = media_type.map(str::to_owned);
        for _ in 0..MAX_INDEX_DEPTH {
            let bytes = source.read_small(&digest, size)?;
            match doc_kind_of(&bytes, media_type.as_deref(), &digest)? {
                DocKind::Manifest => return Self::from_manifest(source, digest, &bytes),
                DocKind::Index => {
                    let index = parse_index(&bytes, &digest.to_string())?;
                    let chosen = pick_by_platform(index.manifests(), platform, &digest)?;
                    size = Some(chosen.size());
                    media_type = Some(chosen.media_type().to_string());
                    digest = BlobDigest::from_oci(chosen.digest())?;
                }
            }
        }
        Err(ImageError::TooDeep {
            digest: digest.to_string(),
            max: MAX_INDEX_DEPTH,
        })
    }

    fn from_manifest(
        source: Arc<dyn BlobSource>,
        manifest_digest: BlobDigest,
        bytes: &[u8],
    ) -> Result<Image> {
        let manifest = ImageManifest::from_reader(bytes).map_err(|e| ImageError::BadJson {
            what: "manifest",
            name: manifest_digest.to_string(),
            source: e.into(),
        })?;
        let cfg = manifest.config();
        let cfg_digest = BlobDigest::from_oci(cfg.digest())?;
        let cfg_type = cfg.media_type().to_string();
        if !media::is_config(&cfg_type) {
            return Err(ImageError::UnsupportedMediaType {
                digest: cfg_digest.to_string(),
                media_type: cfg_type,
            });
        }
        let cfg_bytes = source.read_small(&cfg_digest, Some(cfg.size()))?;
        let config =
            ImageConfiguration::from_reader(&cfg_bytes[..]).map_err(|e| ImageError::BadJson {
                what: "config",
                name: cfg_digest.to_string(),
                source: e.into(),
            })?;
        let layers = manifest
            .layers()
            .iter()
            .map(|d| {
                let digest = BlobDigest::from_oci(d.digest())?;
                let media_type = d.media_type().to_string();
                let compression = media::layer_compression(&media_type).ok_or_else(|| {
                    ImageError::UnsupportedMediaType {
                        digest: digest.to_string(),
                        media_type: media_type.clone(),
                    }
                })?;
                let toc_digest = d
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(super::estargz::TOC_DIGEST_ANNOTATION))
                    .cloned();
                Ok(LayerInfo {
                    digest,
                    media_type,
                    size: d.size(),
                    compression,
                    toc_digest,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Image {
            source,
            manifest_digest,
            manifest,
            config,
            layers,
        })
    }

    /// The digest of the chosen manifest (what the record's `manifestDigest` holds).
    pub fn manifest_digest(&self) -> &BlobDigest {
        &self.manifest_digest
    }

    /// The manifest.
    pub fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    /// The image config.
    pub fn config(&self) -> &ImageConfiguration {
        &self.config
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// The blob source the image reads from.
    pub fn source(&self) -> &Arc<dyn BlobSource> {
        &self.source
    }

    /// Entrypoint, cmd, env, working dir and user from the config.
    pub fn run_config(&self) -> RunConfig {
        let Some(c) = self.config.config() else {
            return RunConfig::default();
        };
        RunConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        }
    }

    /// Layer `index`'s uncompressed tar stream, verified against its digest at EOF.
    pub fn open_layer(&self, index: usize) -> Result<LayerReader> {
        self.open_layer_counted(index, None)
    }

    /// As [`Image::open_layer`], adding compressed bytes read to `counter`.
    pub fn open_layer_counted(
        &self,
        index: usize,
        counter: Option<Arc<AtomicU64>>,
    ) -> Result<LayerReader> {
        let layer = self.layers.get(index).ok_or(ImageError::NoSuchLayer {
            index,
            count: self.layers.len(),
        })?;
        let blob = self.source.open(&layer.digest, Some(layer.size))?;
        LayerReader::new(blob, layer.compression, counter)
    }
}

fn parse_index(bytes: &[u8], name: &str) -> Result<ImageIndex> {
    ImageIndex::from_reader(bytes).map_err(|e| ImageError::BadJson {
        what: "index",
        name: name.to_owned(),
        source: e.into(),
    })
}

/// The kind of a manifest-level blob, from its media type or, when that is absent or generic,
/// from its fields.
fn doc_kind_of(bytes: &[u8], media_type: Option<&str>, digest: &BlobDigest) -> Result<DocKind> {
    if let Some(kind) = media_type.and_then(media::doc_kind) {
        return Ok(kind);
    }
    let unsupported = |mt: String| ImageError::UnsupportedMediaType {
        digest: digest.to_string(),
        media_type: mt,
    };
    if let Some(mt) = media_type
        && !mt.is_empty()
        && mt != "application/octet-stream"
    {
        return Err(unsupported(mt.to_owned()));
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ImageError::BadJson {
        what: "manifest",
        name: digest.to_string(),
        source: e.into(),
    })?;
    if let Some(kind) = v.get("mediaType").and_then(|m| m.as_str()) {
        return media::doc_kind(kind).ok_or_else(|| unsupported(kind.to_owned()));
    }
    if v.get("manifests").is_some() {
        Ok(DocKind::Index)
    } else if v.get("layers").is_some() {
        Ok(DocKind::Manifest)
    } else {
        Err(unsupported(String::new()))
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

fn pick_from_layout(
    index: &ImageIndex,
    name: Option<&str>,
    platform: &Platform,
    source_name: &str,
) -> Result<Descriptor> {
    let all = index.manifests();
    let names = || {
        let v: Vec<&str> = all.iter().filter_map(ref_name).collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    let candidates: Vec<Descriptor> = match name {
        Some(n) => all
            .iter()
            .filter(|d| ref_name(d) == Some(n))
            .cloned()
            .collect(),
        None => all.clone(),
    };
    match candidates.as_slice() {
        [] => match name {
            Some(n) => Err(ImageError::RefNotFound {
                name: n.to_owned(),
                source_name: source_name.to_owned(),
                available: names(),
            }),
            None => Err(ImageError::BadLayout {
                path: source_name.into(),
                message: "index.json lists no manifests".into(),
            }),
        },
        [one] => Ok(one.clone()),
        many if many.iter().all(|d| d.platform().is_some()) => {
            let matching: Vec<&Descriptor> = many
                .iter()
                .filter(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
                .collect();
            let listed = |ds: &[&Descriptor]| {
                ds.iter()
                    .map(|d| {
                        let p = d.platform().as_ref().map(platform::describe);
                        match ref_name(d) {
                            Some(n) => format!("{n} ({})", p.unwrap_or_default()),
                            None => format!("{} ({})", d.digest(), p.unwrap_or_default()),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match matching.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(ImageError::Ambiguous {
                    source_name: source_name.to_owned(),
                    message: format!(
                        "no manifest for platform {platform}; present: {}; give one of those \
                         platforms with --platform",
                        listed(&many.iter().collect::<Vec<_>>())
                    ),
                }),
                several => Err(ImageError::Ambiguous {
                    source_name: source_name.to_owned(),
                    message: format!(
                        "{} manifests for platform {platform} and no --ref to choose one: {}",
                        several.len(),
                        listed(several)
                    ),
                }),
            }
        }
        many => Err(ImageError::Ambiguous {
            source_name: source_name.to_owned(),
            message: format!(
                "{} manifests and no --ref to choose one (names: {})",
                many.len(),
                names()
            ),
        }),
    }
}

fn pick_by_platform<'a>(
    manifests: &'a [Descriptor],
    platform: &Platform,
    index_digest: &BlobDigest,
) -> Result<&'a Descriptor> {
    if let Some(d) = manifests
        .iter()
        .find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
    {
        return Ok(d);
    }
    if let [only] = manifests
        && only.platform().is_none()
    {
        return Ok(only);
    }
    let available: Vec<String> = manifests
        .iter()
        .map(|d| {
            d.platform()
                .as_ref()
                .map(platform::describe)
                .unwrap_or_else(|| "unspecified".into())
        })
        .collect();
    Err(ImageError::NoPlatform {
        digest: index_digest.to_string(),
        platform: platform.to_string(),
        available: available.join(", "),
    })
}
