//! Image references as a pod spec writes them, normalized the way the CRI names images in
//! containerd (`busybox` → `docker.io/library/busybox:latest`).

/// The registry a reference without one means.
const DEFAULT_DOMAIN: &str = "docker.io";

/// The repository prefix of an official image on [`DEFAULT_DOMAIN`].
const OFFICIAL_PREFIX: &str = "library/";

/// The fully qualified form of `reference`, as the CRI stores it in containerd: with its
/// registry, `library/` for official Docker Hub images, and `:latest` when it has neither tag
/// nor digest. Already qualified references come back unchanged.
pub fn normalize_reference(reference: &str) -> String {
    // A first component with a `.` or `:`, or `localhost`, is a registry (Docker's rule).
    let (domain, remainder) = match reference.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN, reference.to_owned()),
    };
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_PREFIX}{remainder}")
    } else {
        remainder
    };
    let last = remainder.rsplit('/').next().unwrap_or_default();
    let tagged = last.contains(':') || last.contains('@');
    let tag = if tagged { "" } else { ":latest" };
    format!("{domain}/{remainder}{tag}")
}

#[cfg(test)]
mod tests {
    use super::normalize_reference as n;

    #[test]
    fn normalizes_like_the_cri() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("python:3.12-slim"), "docker.io/library/python:3.12-slim");
        assert_eq!(n("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(
            n("docker.io/library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(n("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("ghcr.io/o/r"), "ghcr.io/o/r:latest");
        assert_eq!(n("localhost:5000/r:1"), "localhost:5000/r:1");
        assert_eq!(n("localhost/r"), "localhost/r:latest");
        let pinned = format!("quay.io/o/r@sha256:{}", "a".repeat(64));
        assert_eq!(n(&pinned), pinned);
    }
}
