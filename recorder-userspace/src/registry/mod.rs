//! Records in an OCI registry, next to the image they were recorded from.
//!
//! A record is pushed as an OCI 1.1 artifact, as the image spec's artifact guidance says: an
//! image manifest (`application/vnd.oci.image.manifest.v1+json`, not the artifact manifest
//! type that OCI 1.1 dropped and distribution 2.8 rejects) with
//!
//! - `artifactType` [`ARTIFACT_TYPE`] (ours, stable: pullers filter on it),
//! - the empty config (`application/vnd.oci.empty.v1+json`, the two bytes `{}`),
//! - layer 0: the record itself, byte for byte, as [`RECORD_MEDIA_TYPE`],
//! - layer 1 (when there is one): the companion blob, as [`COMPANION_MEDIA_TYPE`],
//! - `subject`: the platform manifest the record was recorded from (its `manifestDigest`),
//! - annotations: [`ANNOTATION_CREATED`], [`ANNOTATION_VERSION`] and what is known of the
//!   workload ([`ANNOTATION_COMMAND`], [`ANNOTATION_PERIOD`], ...).
//!
//! Records are found again from the image: through the referrers API
//! (`GET /v2/<name>/referrers/<digest>`) where the registry has it, else through the referrers
//! tag schema (an OCI index tagged `sha256-<hex>` listing the referrers), which the pusher
//! keeps up to date, as the OCI distribution spec asks of clients of registries without the
//! API (distribution 2.8, for one).
//!
//! Transport, authentication and the referrers API are the `oci-client` crate's; what it lacks
//! (credentials from docker's config files, the pusher's side of the tag schema, the error
//! classification) is here.

mod auth;
mod client;
mod error;
mod pull;
mod push;

pub use auth::{CredentialSource, Credentials};
pub use client::{Registry, RegistryOptions, parse_reference};
pub use error::RegistryError;
pub use pull::{Pulled, RecordRef, newest, pull_record, records_of};
pub use push::{Discovery, Pushed, RecordArtifact, push_record};

pub use crate::record::RECORD_MEDIA_TYPE;

/// The `artifactType` of a record artifact. Stable: changing it hides every record pushed
/// before from `recorder record pull`.
pub const ARTIFACT_TYPE: &str = "application/vnd.recorder.record.v1+json";

/// Media type of the companion blob (per-entry extras, one JSON object a line).
pub const COMPANION_MEDIA_TYPE: &str = "application/vnd.recorder.record.companion.v1+jsonl";

/// The empty config's media type (OCI image spec 1.1).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The empty config's content.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// When the record artifact was made (RFC 3339), the OCI pre-defined annotation.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// The layer's file name, so that `oras pull` and the like write `record.jsonl`.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// The recorder version that pushed the record.
pub const ANNOTATION_VERSION: &str = "dev.recorder.version";

/// The workload's command, when known.
pub const ANNOTATION_COMMAND: &str = "dev.recorder.workload.command";

/// The profiling period, when one was set.
pub const ANNOTATION_PERIOD: &str = "dev.recorder.workload.period";

/// Why recording stopped (e.g. the workload exited), when known.
pub const ANNOTATION_STOPPED: &str = "dev.recorder.workload.stopped";

/// The image reference the record was made from, when it was one.
pub const ANNOTATION_IMAGE: &str = "dev.recorder.image";

/// `true` when every event of the target reached the recorder, `false` when the kernel
/// dropped some (the record is then incomplete), when known.
pub const ANNOTATION_COMPLETE: &str = "dev.recorder.complete";

/// Number of entries in the record.
pub const ANNOTATION_ENTRIES: &str = "dev.recorder.entries";

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = crate::image::media::OCI_MANIFEST;

/// Media type of an OCI image index.
pub const OCI_INDEX: &str = crate::image::media::OCI_INDEX;
