//! Registry credentials from the files docker, skopeo and crane read: `--registry-config FILE`,
//! else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; `auths` entries, a
//! `credsStore` and per-registry `credHelpers` (run as `docker-credential-<name>`).
//!
//! The `docker_credential` crate parses the file and runs the helpers; which file, and what a
//! missing one means (anonymous access), is decided here.

use std::io;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

use super::error::RegistryError;

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub enum CredentialSource {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; none is anonymous.
    #[default]
    DockerConfig,
    /// This file (a docker `config.json`, e.g. a mounted `kubernetes.io/dockerconfigjson`
    /// Secret); it must exist.
    File(PathBuf),
}

impl CredentialSource {
    /// The file to read, if one can be named.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            CredentialSource::File(path) => Some(path.clone()),
            CredentialSource::DockerConfig => std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
                .map(|dir| dir.join("config.json")),
        }
    }
}

/// The credentials for one registry, and where they were looked for.
#[derive(Clone)]
pub struct Credentials {
    /// What `oci-client` sends.
    pub auth: RegistryAuth,
    /// Where they were looked for, for messages: the file, and whether it had an entry.
    pub looked: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("auth", &self.described())
            .field("looked", &self.looked)
            .finish()
    }
}

impl Credentials {
    /// Anonymous access.
    pub fn anonymous(looked: impl Into<String>) -> Self {
        Credentials {
            auth: RegistryAuth::Anonymous,
            looked: looked.into(),
        }
    }

    /// Looks up the credentials for `registry` (a host, with its port if any).
    pub fn lookup(source: &CredentialSource, registry: &str) -> Result<Self, RegistryError> {
        let Some(path) = source.path() else {
            return Ok(Credentials::anonymous(
                "no docker config.json ($DOCKER_CONFIG and $HOME are unset)",
            ));
        };
        let looked = path.display().to_string();
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && matches!(source, CredentialSource::DockerConfig) =>
            {
                return Ok(Credentials::anonymous(format!("{looked} (absent)")));
            }
            Err(e) => {
                return Err(RegistryError::Credentials {
                    registry: registry.to_owned(),
                    looked,
                    source: Box::new(e),
                });
            }
        };
        let reader = io::BufReader::new(file);
        match docker_credential::get_credential_from_reader(reader, registry) {
            Ok(DockerCredential::UsernamePassword(user, password)) => Ok(Credentials {
                auth: RegistryAuth::Basic(user, password),
                looked,
            }),
            // An identity token is an OAuth2 refresh token that must be exchanged at the
            // registry's token endpoint; oci-client has no such exchange.
            Ok(DockerCredential::IdentityToken(_)) => Err(RegistryError::Credentials {
                registry: registry.to_owned(),
                looked,
                source: "the entry holds an identity token (OAuth2 refresh token), which is not \
                         supported: log in with a username and password or access token"
                    .into(),
            }),
            Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(Credentials::anonymous(
                format!("{looked} (no entry for {registry})"),
            )),
            Err(e) => Err(RegistryError::Credentials {
                registry: registry.to_owned(),
                looked,
                source: Box::new(e),
            }),
        }
    }

    /// Which kind of credentials these are, without the secret.
    pub fn described(&self) -> String {
        match &self.auth {
            RegistryAuth::Anonymous => "none (anonymous)".to_owned(),
            RegistryAuth::Basic(user, _) => format!("of user {user:?}"),
            RegistryAuth::Bearer(_) => "a bearer token".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_table() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        // "user:secret" in base64.
        std::fs::write(
            &config,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpzZWNyZXQ="},"https://index.docker.io/v1/":{"auth":"aHViOnB3"}}}"#,
        )
        .unwrap();
        let file = CredentialSource::File(config.clone());
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("127.0.0.1:5000", Some(("user", "secret"))),
            ("docker.io", Some(("hub", "pw"))),
            ("127.0.0.1:5001", None),
        ];
        for (registry, want) in cases {
            let got = Credentials::lookup(&file, registry).unwrap();
            match (want, &got.auth) {
                (Some((u, p)), RegistryAuth::Basic(gu, gp)) => {
                    assert_eq!((*u, *p), (gu.as_str(), gp.as_str()), "{registry}")
                }
                (None, RegistryAuth::Anonymous) => assert!(got.looked.contains("no entry")),
                _ => panic!("{registry}: {got:?}"),
            }
        }
        let missing = CredentialSource::File(dir.path().join("absent.json"));
        assert!(matches!(
            Credentials::lookup(&missing, "x:1"),
            Err(RegistryError::Credentials { .. })
        ));
        std::fs::write(&config, "not json").unwrap();
        assert!(Credentials::lookup(&file, "127.0.0.1:5000").is_err());
    }
}
