//! `recorder run --mount`: host directories or files bind-mounted into the workload's
//! container, in `ctr run` / `ctr-remote image optimize`'s syntax:
//! `type=bind,src=/host/path,dst=/in/container,options=rbind:ro` (keys `source`/`src`,
//! `destination`/`dst`, `type`, `options` separated by `:`).
//!
//! Checked before the image is indexed or anything runs: the type is `bind` (the only kind the
//! workload's host side can give: tmpfs and the like would add nothing to a record), the
//! source exists (it is made absolute, for runc, which would resolve a relative one against
//! the bundle), the destination is absolute and has no `..`, and every option is one runc
//! knows for a bind mount. What the workload reads through such a mount is on another
//! filesystem than the image's root, so it is excluded from the record as not image content,
//! like `/etc/hosts`.
//!
//! Fields are split on `,` by hand rather than with a CSV reader as `ctr` does: a path with a
//! comma or a quote is refused by name instead of half supported.

use std::path::{Component, Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{Mount, MountBuilder};

/// The options runc accepts on a bind mount (propagation, flags, atime); `bind` and `rbind`
/// choose the kind of bind.
const KNOWN_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "ro",
    "rw",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
];

/// Why a `--mount` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum BindMountError {
    /// A field is not `key=value`.
    #[error(
        "{field:?} is not KEY=VALUE (expected type=bind,src=/host/path,dst=/in/container[,options=rbind:ro])"
    )]
    NotKeyValue {
        /// The field.
        field: String,
    },
    /// A key other than type, source/src, destination/dst, options.
    #[error("unknown key {0:?} (known: type, source or src, destination or dst, options)")]
    UnknownKey(String),
    /// A key given twice.
    #[error("{0:?} is given twice")]
    Repeated(String),
    /// Not a bind mount.
    #[error("type {0:?} is not supported: only type=bind")]
    Type(String),
    /// No source or no destination.
    #[error("no {0} (expected type=bind,src=/host/path,dst=/in/container)")]
    Missing(&'static str),
    /// A quote or a comma inside a path: not parsed as `ctr`'s CSV would.
    #[error("quoted fields are not supported")]
    Quoted,
    /// The source cannot be resolved (missing, unreadable).
    #[error("source {path}")]
    Source {
        /// The source as given.
        path: String,
        /// What the filesystem said.
        #[source]
        source: std::io::Error,
    },
    /// The destination is not absolute, is `/`, or has a `..`.
    #[error("destination {0:?} must be an absolute path below / without `..`")]
    Destination(String),
    /// An option runc does not know for a bind mount.
    #[error("unknown option {0:?} (known: {known})", known = KNOWN_OPTIONS.join(", "))]
    Option(String),
}

/// A validated bind mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// The host path, absolute and resolved.
    pub source: PathBuf,
    /// Where it appears in the container.
    pub destination: String,
    /// runc's options, with `rbind` added when neither `bind` nor `rbind` is given (docker's
    /// and `ctr`'s default kind).
    pub options: Vec<String>,
}

impl BindMount {
    /// Parses and checks one `--mount` value (the source must exist now).
    pub fn parse(spec: &str) -> Result<Self, BindMountError> {
        if spec.contains('"') {
            return Err(BindMountError::Quoted);
        }
        let (mut typ, mut source, mut destination, mut options) = (None, None, None, None);
        for field in spec.split(',') {
            let (key, value) =
                field
                    .split_once('=')
                    .ok_or_else(|| BindMountError::NotKeyValue {
                        field: field.to_owned(),
                    })?;
            let slot = match key {
                "type" => &mut typ,
                "source" | "src" => &mut source,
                "destination" | "dst" => &mut destination,
                "options" => &mut options,
                other => return Err(BindMountError::UnknownKey(other.to_owned())),
            };
            if slot.replace(value).is_some() {
                return Err(BindMountError::Repeated(key.to_owned()));
            }
        }
        match typ {
            Some("bind") => {}
            Some(other) => return Err(BindMountError::Type(other.to_owned())),
            None => return Err(BindMountError::Missing("type")),
        }
        let source = source.ok_or(BindMountError::Missing("source (src=)"))?;
        let destination = destination.ok_or(BindMountError::Missing("destination (dst=)"))?;
        let resolved = std::fs::canonicalize(source).map_err(|error| BindMountError::Source {
            path: source.to_owned(),
            source: error,
        })?;
        let dest = Path::new(destination);
        let below_root = dest.is_absolute()
            && dest.components().any(|c| matches!(c, Component::Normal(_)))
            && !dest.components().any(|c| c == Component::ParentDir);
        if !below_root {
            return Err(BindMountError::Destination(destination.to_owned()));
        }
        let mut options: Vec<String> = match options {
            Some("") | None => Vec::new(),
            Some(list) => list.split(':').map(str::to_owned).collect(),
        };
        if let Some(bad) = options
            .iter()
            .find(|o| !KNOWN_OPTIONS.contains(&o.as_str()))
        {
            return Err(BindMountError::Option(bad.clone()));
        }
        if !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.insert(0, "rbind".to_owned());
        }
        Ok(Self {
            source: resolved,
            destination: destination.to_owned(),
            options,
        })
    }

    /// The OCI runtime spec's mount.
    pub fn to_oci(&self) -> Result<Mount, OciSpecError> {
        MountBuilder::default()
            .destination(&self.destination)
            .typ("bind")
            .source(&self.source)
            .options(self.options.clone())
            .build()
    }
}

impl std::str::FromStr for BindMount {
    type Err = BindMountError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Self::parse(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::Chain;

    #[test]
    fn specs() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_str().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let ok = |options: &[&str]| {
            Ok(BindMount {
                source: real.clone(),
                destination: "/data".into(),
                options: options.iter().map(|s| s.to_string()).collect(),
            })
        };
        let cases: Vec<(String, Result<BindMount, BindMountError>)> = vec![
            (
                format!("type=bind,src={src},dst=/data,options=rbind:ro"),
                ok(&["rbind", "ro"]),
            ),
            (
                format!("type=bind,source={src},destination=/data"),
                ok(&["rbind"]),
            ),
            (
                format!("dst=/data,type=bind,src={src},options=ro:nosuid"),
                ok(&["rbind", "ro", "nosuid"]),
            ),
            (
                format!("type=bind,src={src},dst=/data,options=bind"),
                ok(&["bind"]),
            ),
            (
                format!("type=tmpfs,src={src},dst=/data"),
                Err(BindMountError::Type("tmpfs".into())),
            ),
            (
                format!("src={src},dst=/data"),
                Err(BindMountError::Missing("type")),
            ),
            (
                "type=bind,dst=/data".into(),
                Err(BindMountError::Missing("source (src=)")),
            ),
            (
                format!("type=bind,src={src}"),
                Err(BindMountError::Missing("destination (dst=)")),
            ),
            (
                format!("type=bind,src={src},dst=data"),
                Err(BindMountError::Destination("data".into())),
            ),
            (
                format!("type=bind,src={src},dst=/"),
                Err(BindMountError::Destination("/".into())),
            ),
            (
                format!("type=bind,src={src},dst=/a/../etc"),
                Err(BindMountError::Destination("/a/../etc".into())),
            ),
            (
                format!("type=bind,src={src},dst=/data,options=rbind:rox"),
                Err(BindMountError::Option("rox".into())),
            ),
            (
                format!("type=bind,src={src},dst=/data,ro"),
                Err(BindMountError::NotKeyValue { field: "ro".into() }),
            ),
            (
                format!("type=bind,src={src},target=/data"),
                Err(BindMountError::UnknownKey("target".into())),
            ),
            (
                format!("type=bind,src={src},src=/x,dst=/data"),
                Err(BindMountError::Repeated("src".into())),
            ),
            (
                format!("type=bind,\"src={src}\",dst=/data"),
                Err(BindMountError::Quoted),
            ),
        ];
        // The error holds an io::Error (no PartialEq): compared by their derived Debug, which
        // says every field of these variants.
        for (spec, want) in cases {
            assert_eq!(
                format!("{:?}", BindMount::parse(&spec)),
                format!("{want:?}"),
                "{spec}"
            );
        }
        let missing = BindMount::parse("type=bind,src=/no/such/dir,dst=/data").unwrap_err();
        assert!(
            matches!(&missing, BindMountError::Source { path, .. } if path == "/no/such/dir"),
            "{missing:?}"
        );
        let message = Chain(&missing).to_string();
        assert!(message.contains("No such file"), "{message}");
    }

    #[test]
    fn oci_mount() {
        let m = BindMount::parse("type=bind,src=/,dst=/host,options=rbind:ro").unwrap();
        let json = serde_json::to_value(m.to_oci().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "destination": "/host", "type": "bind", "source": "/",
                "options": ["rbind", "ro"]
            })
        );
    }
}
