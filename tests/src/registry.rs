//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) started on
//! 127.0.0.1 with a config of our own in a temp dir (its packaged config wants password auth
//! on a fixed port), optionally with htpasswd basic auth; images go in with `skopeo copy`.
//! distribution 2.8 has no referrers API: it exercises the referrers tag schema.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the registry may take to listen (it takes well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails the test unless the registry and skopeo are installed.
pub fn require_registry_tools() {
    for tool in ["docker-registry", "skopeo", "htpasswd", "openssl", "curl"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file());
        assert!(
            found,
            "{tool} is not installed; `cargo xtask setup` installs docker-registry, skopeo, \
             apache2-utils, openssl and curl"
        );
    }
}

/// A running registry; killed and its storage removed on drop.
pub struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    /// `user:password` when started with basic auth.
    creds: Option<String>,
}

/// A port nobody listens on now (the registry binds it right after; a clash fails the start).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Registry {
    /// Without authentication.
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// With htpasswd basic auth for `user` / `password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    /// Over HTTPS, with a certificate for 127.0.0.1 issued by a CA of its own
    /// ([`Registry::ca_file`]).
    pub fn start_with_tls() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        write_ca_and_certificate(dir.path());
        Registry::start_in(dir, None, true)
    }

    /// The PEM file of the CA that issued a TLS registry's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(auth: Option<(&str, &str)>) -> Registry {
        Registry::start_in(tempfile::tempdir().unwrap(), auth, false)
    }

    fn start_in(dir: tempfile::TempDir, auth: Option<(&str, &str)>, tls: bool) -> Registry {
        require_registry_tools();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: recorder-tests\n",
            dir.path().join("storage").display()
        );
        if tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            ));
        }
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: recorder-tests\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut registry = Registry {
            dir,
            child,
            port,
            creds: auth.map(|(u, p)| format!("{u}:{p}")),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = registry.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}):\n{}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port} within {START_TIMEOUT:?}:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where distribution keeps a blob's bytes.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Copies manifest `name` of OCI layout `layout` to `REPOSITORY:TAG` here, digests kept.
    pub fn push_layout(&self, layout: &Path, name: &str, repository_tag: &str) {
        let mut cmd = xtask::skopeo();
        cmd.args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some(creds) = &self.creds {
            cmd.args(["--dest-creds", creds]);
        }
        let out = cmd
            .arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{repository_tag}", self.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}\nregistry log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `curl` against this registry (with its credentials), e.g. to put or read raw content.
    pub fn curl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30"]);
        if let Some(creds) = &self.creds {
            cmd.args(["-u", creds]);
        }
        cmd.args(args).output().unwrap()
    }

    /// GET `/v2/PATH`'s body, with an Accept header for manifests and indexes.
    pub fn get(&self, path: &str) -> Vec<u8> {
        let accept = "Accept: application/vnd.oci.image.index.v1+json, \
                      application/vnd.oci.image.manifest.v1+json";
        let url = format!("http://{}/v2/{path}", self.host());
        let out = self.curl(&["-f", "-H", accept, &url]);
        assert!(out.status.success(), "GET {url}: {out:?}");
        out.stdout
    }

    /// PUTs a blob into `repository` (monolithic upload); returns its digest.
    pub fn put_blob(&self, repository: &str, data: &[u8]) -> String {
        let digest = crate::image_fixtures::digest(data);
        let url = format!("http://{}/v2/{repository}/blobs/uploads/", self.host());
        let started = self.curl(&["-f", "-X", "POST", "-D", "-", "-o", "/dev/null", &url]);
        assert!(started.status.success(), "POST {url}: {started:?}");
        let headers = String::from_utf8_lossy(&started.stdout);
        let location = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no Location in {headers}"));
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.host())
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let tmp = self.dir.path().join("upload.bin");
        std::fs::write(&tmp, data).unwrap();
        let body = format!("@{}", tmp.display());
        let out = self.curl(&[
            "-f",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &body,
            &put,
        ]);
        assert!(out.status.success(), "PUT {put}: {out:?}");
        digest
    }

    /// PUTs a manifest (or index) of `media_type` as `repository:reference`; returns its digest.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let url = format!(
            "http://{}/v2/{repository}/manifests/{reference}",
            self.host()
        );
        let tmp = self.dir.path().join("manifest.json");
        std::fs::write(&tmp, body).unwrap();
        let data = format!("@{}", tmp.display());
        let content_type = format!("Content-Type: {media_type}");
        let out = self.curl(&[
            "-f",
            "-X",
            "PUT",
            "-H",
            &content_type,
            "--data-binary",
            &data,
            &url,
        ]);
        assert!(
            out.status.success(),
            "PUT {url}: {out:?}\nregistry log:\n{}",
            self.log()
        );
        crate::image_fixtures::digest(body)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl` with `args` in `dir`, failing the test on an error.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA (`ca.pem`, `ca-key.pem`) in `dir`, and a certificate for 127.0.0.1 it issued
/// (`cert.pem`, `key.pem`): rustls refuses a self-signed CA certificate as a server's.
pub fn write_ca_and_certificate(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=recorder tests CA",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    );
}

/// A docker `config.json` in `dir` with `user`/`password` for `host`; returns its path.
pub fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join("config.json");
    let config = serde_json::json!({
        "auths": { host: { "username": user, "password": password } }
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

/// Reads a whole file, failing the test with its name.
pub fn read(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .read_to_end(&mut out)
        .unwrap();
    out
}
