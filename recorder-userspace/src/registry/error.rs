//! Why a registry operation failed, classified so that the message says what to do.

use std::path::PathBuf;

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not an image reference.
    #[error(
        "{reference:?} is not an image reference (expected HOST[:PORT]/REPOSITORY[:TAG|@DIGEST])"
    )]
    BadReference {
        /// What was given.
        reference: String,
        /// The parser's complaint.
        #[source]
        source: oci_client::ParseError,
    },
    /// A CA file or certs.d directory could not be read.
    #[error("reading CA certificates {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("setting up the registry client")]
    Client {
        /// The cause.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The credential configuration exists but could not be used.
    #[error("reading the credentials for {registry} from {looked}")]
    Credentials {
        /// The registry host.
        registry: String,
        /// Where they were looked for.
        looked: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry did not answer.
    #[error("registry {registry} is unreachable while {op}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The TLS handshake failed (an unknown CA, a name mismatch, plain HTTP on the other end).
    #[error(
        "TLS with registry {registry} failed while {op} (a registry with a private CA needs \
         --ca-file; one without TLS needs --insecure)"
    )]
    Tls {
        /// The registry host.
        registry: String,
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// 401 or 403.
    #[error(
        "registry {registry} refused {op}: authentication failed or access denied \
         (credentials {credentials}; looked for in {looked})"
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What was being done.
        op: String,
        /// Which credentials were sent (never the secret).
        credentials: String,
        /// Where credentials were looked for.
        looked: String,
        /// The registry's answer.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// No such image (manifest, tag or repository).
    #[error("unknown image {reference}: registry {registry} has no such manifest")]
    UnknownImage {
        /// The reference.
        reference: String,
        /// The registry host.
        registry: String,
        /// The registry's answer.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The record to push does not parse.
    #[error("the record to push is not a record")]
    BadRecord(#[from] crate::record::RecordError),
    /// The record to push names no image manifest.
    #[error(
        "the record names no image manifest (it is empty or its entries have no manifestDigest): \
         there is no image for it to refer to"
    )]
    NoSubject,
    /// The record to push refers to several manifests.
    #[error("the record refers to several image manifests ({0}): push the record of one image")]
    SeveralSubjects(String),
    /// The record names a manifest that is not in the repository pushed to.
    #[error(
        "the record was made from manifest {subject}, which is not in {repository}: push the \
         image there first (recorder pushes only the record), or push the record to the \
         image's own repository"
    )]
    SubjectMissing {
        /// The manifest digest.
        subject: String,
        /// The repository pushed to.
        repository: String,
        /// The registry's answer.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// An index without the wanted platform.
    #[error("{reference} is an image index with no manifest for platform {platform}")]
    NoPlatform {
        /// The reference.
        reference: String,
        /// The wanted platform.
        platform: String,
    },
    /// No record refers to the image.
    #[error("no record refers to {image} (manifest {subject}) in {repository}{others}")]
    NoRecord {
        /// What was asked for.
        image: String,
        /// The platform manifest.
        subject: String,
        /// The repository.
        repository: String,
        /// `; its N other referrers are not records (...)`, when there are any.
        others: String,
    },
    /// An artifact that should be a record is not one.
    #[error("{digest} is not a recorder record: {message}")]
    NotARecord {
        /// The artifact manifest's digest.
        digest: String,
        /// What is wrong with it.
        message: String,
    },
    /// An artifact whose manifest is not JSON: not a record.
    #[error("{digest} is not a recorder record: its manifest does not parse")]
    UnreadableRecordManifest {
        /// The artifact manifest's digest.
        digest: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Content that does not hash to its digest (or is not its size).
    #[error("digest mismatch on {what} {expected}: the registry sent other content ({found})")]
    DigestMismatch {
        /// What was fetched.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// What was found instead: its digest, and its size where that was checked.
        found: String,
    },
    /// Content the registry client refused: it does not hash to its digest.
    #[error("digest mismatch on {what} {expected}: the registry sent other content")]
    ContentRefused {
        /// What was fetched.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// The client's check.
        #[source]
        source: oci_client::errors::DigestError,
    },
    /// The registry client names a manifest by a digest that is not one.
    #[error("manifest {reference}: the registry's digest of it, {digest:?}, is not a digest")]
    BadManifestDigest {
        /// The manifest's reference.
        reference: String,
        /// The digest as the client reports it.
        digest: String,
        /// Why it does not parse.
        #[source]
        source: crate::content::digest::DigestError,
    },
    /// A document from the registry that is not what it should be.
    #[error("{what} {reference} is not valid")]
    BadDocument {
        /// What was read.
        what: &'static str,
        /// Where it came from.
        reference: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Any other failure the registry reported.
    #[error("registry {registry}: {op} failed")]
    Registry {
        /// The registry host.
        registry: String,
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: Box<OciDistributionError>,
    },
}

/// How an `oci-client` error reads to a user.
pub(crate) enum Kind {
    Tls,
    Unreachable,
    Unauthorized,
    NotFound,
    Other,
}

/// Classifies an `oci-client` error: it reports status codes in several shapes.
pub(crate) fn kind(e: &OciDistributionError) -> Kind {
    if is_tls(e) {
        return Kind::Tls;
    }
    match e {
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            Kind::Unreachable
        }
        OciDistributionError::RequestError(r) => match r.status().map(|s| s.as_u16()) {
            Some(401 | 403) => Kind::Unauthorized,
            Some(404) => Kind::NotFound,
            _ if std::error::Error::source(r).is_some() && r.status().is_none() => {
                Kind::Unreachable
            }
            _ => Kind::Other,
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Kind::Unauthorized,
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => Kind::Unauthorized,
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => Kind::NotFound,
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes = || envelope.errors.iter().map(|e| &e.code);
            if codes().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                Kind::Unauthorized
            } else if codes().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                Kind::NotFound
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    }
}

/// Whether a rustls error is among the causes. tokio-rustls reports it inside (nested)
/// `io::Error`s, whose `source()` skips the error they wrap, so those are opened instead.
fn is_tls(e: &OciDistributionError) -> bool {
    // Its `IoError` is transparent: its `source()` would skip the io::Error too.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match e {
        OciDistributionError::IoError(io) => Some(io),
        e => Some(e),
    };
    while let Some(c) = cause {
        if c.is::<rustls::Error>() {
            return true;
        }
        cause = match c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use oci_client::errors::{OciEnvelope, OciError};

    use super::*;

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: String::new(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://r/v2/x".into(),
        }
    }

    fn server(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://r/v2/x".into(),
            message: String::new(),
        }
    }

    #[test]
    fn classification_table() {
        let cases: Vec<(OciDistributionError, &str)> = vec![
            (
                OciDistributionError::UnauthorizedError { url: "u".into() },
                "unauthorized",
            ),
            (
                OciDistributionError::AuthenticationFailure("no".into()),
                "unauthorized",
            ),
            (server(401), "unauthorized"),
            (server(403), "unauthorized"),
            (envelope(OciErrorCode::Denied), "unauthorized"),
            (envelope(OciErrorCode::Unauthorized), "unauthorized"),
            (server(404), "not found"),
            (
                OciDistributionError::ImageManifestNotFoundError("x".into()),
                "not found",
            ),
            (envelope(OciErrorCode::ManifestUnknown), "not found"),
            (envelope(OciErrorCode::NameUnknown), "not found"),
            (envelope(OciErrorCode::BlobUnknown), "not found"),
            (server(500), "other"),
            (envelope(OciErrorCode::ManifestInvalid), "other"),
            (
                OciDistributionError::IoError(std::io::Error::other(rustls::Error::General(
                    "handshake".into(),
                ))),
                "tls",
            ),
        ];
        for (error, want) in cases {
            let got = match kind(&error) {
                Kind::Tls => "tls",
                Kind::Unreachable => "unreachable",
                Kind::Unauthorized => "unauthorized",
                Kind::NotFound => "not found",
                Kind::Other => "other",
            };
            assert_eq!(got, want, "{error:?}");
        }
    }
}
