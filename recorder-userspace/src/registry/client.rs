//! A connection to one registry: `oci-client`'s client with our TLS, plain-HTTP and
//! credential policy, and errors that name the registry.

use std::path::PathBuf;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciImageIndex;
use oci_client::{Client, Reference};

use super::auth::{CredentialSource, Credentials};
use super::error::{Kind, RegistryError, kind};
use super::push::with_digest;
use crate::image::BlobDigest;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP for any registry (default: only for localhost and 127.0.0.1).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Directories of per-registry CA certificates, `DIR/HOST[:PORT]/*.crt`, as containerd's
    /// and docker's `certs.d`; empty: [`DEFAULT_CERTS_DIRS`].
    pub certs_dirs: Vec<PathBuf>,
    /// Where credentials come from.
    pub credentials: CredentialSource,
}

/// Where containerd and docker keep per-registry CA certificates.
pub const DEFAULT_CERTS_DIRS: &[&str] = &["/etc/containerd/certs.d", "/etc/docker/certs.d"];

/// The `*.crt` files of `DIR/HOST/` in each certs.d directory, sorted.
fn host_certificates(options: &RegistryOptions, host: &str) -> Result<Vec<PathBuf>, RegistryError> {
    let dirs: Vec<PathBuf> = if options.certs_dirs.is_empty() {
        DEFAULT_CERTS_DIRS.iter().map(PathBuf::from).collect()
    } else {
        options.certs_dirs.clone()
    };
    let mut found = Vec::new();
    for dir in dirs {
        let host_dir = dir.join(host);
        let entries = match std::fs::read_dir(&host_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(RegistryError::CaFile {
                    path: host_dir,
                    source,
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        found.extend(files);
    }
    Ok(found)
}

/// Parses an image reference (`HOST[:PORT]/REPO[:TAG|@DIGEST]`; Docker Hub names expand as
/// docker does).
pub fn parse_reference(s: &str) -> Result<Reference, RegistryError> {
    s.parse().map_err(|source| RegistryError::BadReference {
        reference: s.to_owned(),
        source,
    })
}

/// A registry host, connected with its credentials.
pub struct Registry {
    pub(crate) client: Client,
    host: String,
    credentials: Credentials,
    scheme: &'static str,
}

/// Whether plain HTTP is allowed without --insecure: only for this machine, as docker does.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost" || name.ends_with(".localhost") || name == "::1" || name.starts_with("127.")
}

impl Registry {
    /// Connects to the registry of `reference`: reads the credentials and the CA files
    /// (--ca-file and the host's certs.d), and picks HTTPS (plain HTTP for loopback hosts with
    /// no CA file, or with --insecure).
    pub async fn connect(
        reference: &Reference,
        options: &RegistryOptions,
    ) -> Result<Self, RegistryError> {
        let host = reference.resolve_registry().to_owned();
        let credentials = Credentials::lookup(&options.credentials, reference.registry())?;
        let mut config = ClientConfig {
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("recorder/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let mut ca_files: Vec<PathBuf> = options.ca_file.iter().cloned().collect();
        ca_files.extend(host_certificates(options, reference.registry())?);
        let plain = options.insecure || (is_loopback(&host) && ca_files.is_empty());
        config.protocol = if plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        for path in &ca_files {
            tracing::debug!(path = %path.display(), "trusting CA certificates");
            let data = std::fs::read(path).map_err(|source| RegistryError::CaFile {
                path: path.clone(),
                source,
            })?;
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        install_crypto_provider();
        let client = Client::try_from(config).map_err(|source| RegistryError::Client {
            source: Box::new(source),
        })?;
        client.store_auth_if_needed(&host, &credentials.auth).await;
        tracing::debug!(%host, plain, credentials = credentials.described(), looked = credentials.looked, "registry");
        Ok(Registry {
            client,
            host,
            credentials,
            scheme: if plain { "http" } else { "https" },
        })
    }

    /// The registry host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.scheme
    }

    /// The credentials in use.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The referrers of `subject` in `repository`'s repository: the API's answer, or the tag
    /// schema's index when the registry has no API.
    pub(crate) async fn referrers(
        &self,
        repository: &Reference,
        subject: &BlobDigest,
    ) -> Result<OciImageIndex, RegistryError> {
        self.client
            .pull_referrers(&with_digest(repository, &subject.to_string()), None)
            .await
            .map_err(|e| self.error(format!("listing the referrers of {subject}"), e))
    }

    /// The error of a failed `op`: unreachable, unauthorized, or as the registry said.
    pub(crate) fn error(
        &self,
        op: impl Into<String>,
        source: OciDistributionError,
    ) -> RegistryError {
        let op = op.into();
        match kind(&source) {
            Kind::Tls => RegistryError::Tls {
                registry: self.host.clone(),
                op,
                source: Box::new(source),
            },
            Kind::Unreachable => RegistryError::Unreachable {
                registry: self.host.clone(),
                op,
                source: Box::new(source),
            },
            Kind::Unauthorized => RegistryError::Unauthorized {
                registry: self.host.clone(),
                op,
                credentials: self.credentials.described(),
                looked: self.credentials.looked.clone(),
                source: Box::new(source),
            },
            Kind::NotFound | Kind::Other => RegistryError::Registry {
                registry: self.host.clone(),
                op,
                source: Box::new(source),
            },
        }
    }

    /// As [`Registry::error`], but a 404 is [`RegistryError::UnknownImage`] of `reference`.
    pub(crate) fn image_error(
        &self,
        op: impl Into<String>,
        reference: &Reference,
        source: OciDistributionError,
    ) -> RegistryError {
        match kind(&source) {
            Kind::NotFound => RegistryError::UnknownImage {
                reference: reference.whole(),
                registry: self.host.clone(),
                source: Box::new(source),
            },
            _ => self.error(op, source),
        }
    }

    /// A manifest or index, raw, with its digest (checked by oci-client against a digest
    /// reference and the registry's Docker-Content-Digest header).
    pub(crate) async fn manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<(bytes::Bytes, String), OciDistributionError> {
        self.client
            .pull_manifest_raw(reference, &self.credentials.auth, accept)
            .await
    }
}

/// rustls needs one process-wide crypto provider; oci-client is built without its own
/// (see Cargo.toml), so ring's is installed here. A second install is refused, harmlessly.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_table() {
        for (host, want) in [
            ("localhost:5000", true),
            ("127.0.0.1:41234", true),
            ("127.0.0.1", true),
            ("[::1]:5000", true),
            ("registry.localhost", true),
            ("ghcr.io", false),
            ("10.0.0.1:5000", false),
            ("localhost.example.com", false),
        ] {
            assert_eq!(is_loopback(host), want, "{host}");
        }
    }
}
