//! The referrers-API path, against a small in-process registry double. A double only for
//! what the real registry here cannot show: Debian's distribution 2.8 has no referrers API
//! (tests/registry/ covers everything else against it), so this checks that where a registry
//! lists referrers itself (OCI distribution 1.1), `record push` leaves the referrers tag alone
//! and `record pull` finds the record through `GET /v2/<name>/referrers/<digest>`.
//!
//! Bearer-token auth is checked against it too: distribution 2.8 does it only with an external
//! token server, which is not packaged here.
//!
//! The double speaks just enough of the distribution API over HTTP/1.1: ping, chunked and
//! monolithic blob uploads, manifests by tag or digest, and the referrers API computed from the
//! stored manifests' `subject`, as a 1.1 registry does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use recorder_tests::agent_fixtures::recorder_bin;
use recorder_tests::image_fixtures::digest;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Default)]
struct State {
    blobs: HashMap<String, Vec<u8>>,
    uploads: HashMap<String, Vec<u8>>,
    /// (repository, tag or digest) -> (media type, bytes).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// `METHOD PATH` of every request, in order.
    requests: Vec<String>,
    next_upload: u64,
    /// Bearer-token auth, as registries with a token server do: (this registry's address,
    /// the `Authorization: Basic` value the token endpoint wants).
    bearer: Option<(String, String)>,
}

/// The token the double's token endpoint issues.
const TOKEN: &str = "double-issued-token";

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
    fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = body;
        self.header("Content-Type", content_type)
    }
    fn not_found(code: &str) -> Self {
        let body = format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"unknown\"}}]}}");
        Response::new(404).body("application/json", body.into_bytes())
    }
}

/// A request, as the double needs it.
struct Request {
    method: String,
    target: String,
    content_type: String,
    authorization: String,
    body: Vec<u8>,
}

fn handle(state: &Mutex<State>, request: Request) -> Response {
    let Request {
        method,
        target,
        content_type,
        authorization,
        body,
    } = request;
    let (method, target, ct) = (method.as_str(), target.as_str(), content_type.as_str());
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{method} {target}"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some((host, basic)) = &s.bearer {
        if path == "/token" {
            return if authorization == format!("Basic {basic}") {
                assert!(query.contains("scope=repository"), "no scope in {query}");
                let token = format!("{{\"token\":\"{TOKEN}\",\"expires_in\":300}}");
                Response::new(200).body("application/json", token.into_bytes())
            } else {
                Response::new(401).body("application/json", b"{}".to_vec())
            };
        }
        if authorization != format!("Bearer {TOKEN}") {
            let challenge = format!(
                "Bearer realm=\"http://{host}/token\",service=\"double\",scope=\"repository:app:pull\""
            );
            let body = b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token\"}]}";
            return Response::new(401)
                .header("WWW-Authenticate", &challenge)
                .body("application/json", body.to_vec());
        }
    }
    if path == "/v2/" || path == "/v2" {
        return Response::new(200).body("application/json", b"{}".to_vec());
    }
    let rest = path.strip_prefix("/v2/").unwrap_or(path);
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let key = (repo.to_owned(), reference.to_owned());
        return match method {
            "PUT" => {
                let d = digest(&body);
                s.manifests
                    .insert((repo.to_owned(), d.clone()), (ct.to_owned(), body.clone()));
                s.manifests.insert(key, (ct.to_owned(), body.clone()));
                let mut r = Response::new(201)
                    .header("Location", &format!("/v2/{repo}/manifests/{d}"))
                    .header("Docker-Content-Digest", &d);
                let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(subject) = doc["subject"]["digest"].as_str() {
                    r = r.header("OCI-Subject", subject);
                }
                r
            }
            _ => match s.manifests.get(&key) {
                Some((media_type, bytes)) => Response::new(200)
                    .header("Docker-Content-Digest", &digest(bytes))
                    .body(media_type, bytes.clone()),
                None => Response::not_found("MANIFEST_UNKNOWN"),
            },
        };
    }
    if let Some((repo, subject)) = rest.rsplit_once("/referrers/") {
        let manifests: Vec<serde_json::Value> = s
            .manifests
            .iter()
            .filter(|((r, reference), _)| r == repo && reference.starts_with("sha256:"))
            .filter_map(|((_, d), (media_type, bytes))| {
                let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
                (doc["subject"]["digest"].as_str() == Some(subject)).then(|| {
                    serde_json::json!({
                        "mediaType": media_type,
                        "digest": d,
                        "size": bytes.len(),
                        "artifactType": doc["artifactType"],
                        "annotations": doc["annotations"],
                    })
                })
            })
            .collect();
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
        return Response::new(200).body(INDEX, serde_json::to_vec(&index).unwrap());
    }
    if let Some((repo, upload)) = rest.split_once("/blobs/uploads/") {
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| v.replace("%3A", ":"))
        };
        return match method {
            "POST" => {
                s.next_upload += 1;
                let id = s.next_upload.to_string();
                if let Some(d) = param("digest") {
                    s.blobs.insert(d.clone(), body);
                    return Response::new(201).header("Location", &format!("/v2/{repo}/blobs/{d}"));
                }
                s.uploads.insert(id.clone(), Vec::new());
                Response::new(202)
                    .header("Location", &format!("/v2/{repo}/blobs/uploads/{id}"))
                    .header("Range", "0-0")
            }
            "PATCH" => {
                let data = s.uploads.entry(upload.to_owned()).or_default();
                data.extend_from_slice(&body);
                let end = data.len().saturating_sub(1);
                Response::new(202)
                    .header("Location", &format!("/v2/{repo}/blobs/uploads/{upload}"))
                    .header("Range", &format!("0-{end}"))
            }
            "PUT" => {
                let mut data = s.uploads.remove(upload).unwrap_or_default();
                data.extend_from_slice(&body);
                let d = param("digest").unwrap_or_default();
                assert_eq!(
                    digest(&data),
                    d,
                    "upload {upload} does not match its digest"
                );
                s.blobs.insert(d.clone(), data);
                Response::new(201)
                    .header("Location", &format!("/v2/{repo}/blobs/{d}"))
                    .header("Docker-Content-Digest", &d)
            }
            _ => Response::new(405),
        };
    }
    if let Some((_, d)) = rest.rsplit_once("/blobs/") {
        return match s.blobs.get(d) {
            Some(bytes) => Response::new(200)
                .header("Docker-Content-Digest", d)
                .body("application/octet-stream", bytes.clone()),
            None => Response::not_found("BLOB_UNKNOWN"),
        };
    }
    Response::not_found("NAME_UNKNOWN")
}

/// Serves one connection's requests (keep-alive) until the client closes it.
fn serve(state: Arc<Mutex<State>>, stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let (mut length, mut content_type, mut authorization) =
            (0usize, String::new(), String::new());
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap(),
                    "content-type" => content_type = v.trim().to_owned(),
                    "authorization" => authorization = v.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let head_only = method == "HEAD";
        let r = handle(
            &state,
            Request {
                method,
                target,
                content_type,
                authorization,
                body,
            },
        );
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            r.status,
            r.body.len()
        );
        for (k, v) in &r.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes()).unwrap();
        if !head_only {
            writer.write_all(&r.body).unwrap();
        }
    }
}

/// Starts the double with image `app:1` (a manifest) in it; its address and state. With
/// `basic` (base64 of `user:password`), it wants bearer tokens from its token endpoint.
fn start(basic: Option<&str>) -> (String, Arc<Mutex<State>>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let state = Arc::new(Mutex::new(State {
        bearer: basic.map(|b| (host.clone(), b.to_owned())),
        ..State::default()
    }));
    let image = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"{}"), "size": 2},
        "layers": [],
    }))
    .unwrap();
    let image_digest = digest(&image);
    {
        let mut s = state.lock().unwrap();
        for reference in ["1".to_owned(), image_digest.clone()] {
            s.manifests
                .insert(("app".into(), reference), (MANIFEST.into(), image.clone()));
        }
    }
    let served = state.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = served.clone();
            std::thread::spawn(move || serve(state, stream));
        }
    });
    (host, state, image_digest)
}

fn recorder(args: &[&str]) -> Output {
    let config = tempfile::tempdir().unwrap();
    recorder_with(config.path(), args)
}

fn recorder_with(docker_config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(recorder_bin())
        .env("DOCKER_CONFIG", docker_config)
        .env("RUST_BACKTRACE", "0")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn with_a_referrers_api_the_tag_schema_is_neither_written_nor_read() {
    let (host, state, image) = start(None);
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.json");
    let bytes =
        format!("{{\"path\":\"etc/hello\",\"manifestDigest\":\"{image}\",\"layerIndex\":0}}\n");
    std::fs::write(&record, &bytes).unwrap();

    let out = recorder(&[
        "record",
        "push",
        record.to_str().unwrap(),
        &format!("{host}/app"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("listed by the registry"), "{stderr}");

    let out = recorder(&["record", "pull", &format!("{host}/app:1")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), bytes);

    let requests = state.lock().unwrap().requests.clone();
    let referrers = format!("GET /v2/app/referrers/{image}");
    assert!(
        requests
            .iter()
            .filter(|r| r.starts_with(&referrers))
            .count()
            >= 2,
        "{requests:#?}"
    );
    let tag = format!(
        "/v2/app/manifests/sha256-{}",
        image.strip_prefix("sha256:").unwrap()
    );
    assert!(
        !requests.iter().any(|r| r.contains(&tag)),
        "the referrers tag was used: {requests:#?}"
    );
}

#[test]
fn bearer_token_auth_with_credentials_from_docker_config() {
    // base64("robot:t0ken"), as the token endpoint wants it.
    let (host, state, image) = start(Some("cm9ib3Q6dDBrZW4="));
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.json");
    let bytes =
        format!("{{\"path\":\"etc/hello\",\"manifestDigest\":\"{image}\",\"layerIndex\":0}}\n");
    std::fs::write(&record, &bytes).unwrap();
    let repository = format!("{host}/app");

    // Anonymous: no token, refused.
    let out = recorder(&["record", "push", record.to_str().unwrap(), &repository]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("registry {host} refused")),
        "{stderr}"
    );

    // With credentials: a token from the realm, then every request with it.
    recorder_tests::registry::docker_config(dir.path(), &host, "robot", "t0ken");
    let out = recorder_with(
        dir.path(),
        &["record", "push", record.to_str().unwrap(), &repository],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let out = recorder_with(dir.path(), &["record", "pull", &format!("{repository}:1")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), bytes);
    let requests = state.lock().unwrap().requests.clone();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /token?")),
        "{requests:#?}"
    );
}
