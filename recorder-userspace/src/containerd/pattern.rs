//! Which containers a `container-name:PATTERN` target means.
//!
//! PATTERN is a glob (`*` matches any run of characters, `/` and `:` included; `?` matches
//! one character; without either it is an exact match). A pattern without `=` matches a
//! container whose id or image name it matches, e.g. `web-*` or `*/busybox:*`. A pattern
//! `KEY=VALUE` matches a container whose label KEY has a value VALUE matches, e.g.
//! `app=web*`. Neither container ids nor image references can hold `=`, so the two forms
//! cannot be confused.
//!
//! A `k8s:POD_UID/CONTAINER` target is a conjunction of exact labels (see
//! [`ContainerPattern::kubernetes`]): the labels the CRI puts on a pod's containers.

use std::collections::HashMap;

/// A parsed `container-name:` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerPattern {
    /// Matches the container id or its image name.
    Name(String),
    /// Matches the value of one label.
    Label {
        /// The label key, matched exactly.
        key: String,
        /// The glob its value must match.
        value: String,
    },
    /// Matches a container that has every one of these labels with exactly this value.
    AllLabels(Vec<(String, String)>),
}

/// The CRI's label naming the pod a container belongs to, by its uid.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// The CRI's label naming a container within its pod.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

impl ContainerPattern {
    /// Parses PATTERN (without the `container-name:` prefix).
    pub fn parse(pattern: &str) -> Option<Self> {
        if pattern.is_empty() {
            return None;
        }
        Some(match pattern.split_once('=') {
            Some(("", _)) => return None,
            Some((key, value)) => ContainerPattern::Label {
                key: key.to_owned(),
                value: value.to_owned(),
            },
            None => ContainerPattern::Name(pattern.to_owned()),
        })
    }

    /// The container named `container` of the pod with uid `pod_uid`, by the CRI's labels.
    /// Exact values: a pod uid or container name is never a glob.
    pub fn kubernetes(pod_uid: &str, container: &str) -> Self {
        ContainerPattern::AllLabels(vec![
            (POD_UID_LABEL.to_owned(), pod_uid.to_owned()),
            (CONTAINER_NAME_LABEL.to_owned(), container.to_owned()),
        ])
    }

    /// Whether a container with this id, image and labels is meant.
    pub fn matches(&self, id: &str, image: &str, labels: &HashMap<String, String>) -> bool {
        match self {
            ContainerPattern::Name(p) => glob(p, id) || (!image.is_empty() && glob(p, image)),
            ContainerPattern::Label { key, value } => {
                labels.get(key).is_some_and(|v| glob(value, v))
            }
            ContainerPattern::AllLabels(wanted) => wanted
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value)),
        }
    }
}

impl std::fmt::Display for ContainerPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerPattern::Name(p) => f.write_str(p),
            ContainerPattern::Label { key, value } => write!(f, "{key}={value}"),
            ContainerPattern::AllLabels(wanted) => {
                let mut first = true;
                for (key, value) in wanted {
                    if !first {
                        f.write_str(",")?;
                    }
                    first = false;
                    write!(f, "{key}={value}")?;
                }
                Ok(())
            }
        }
    }
}

/// Glob match with `*` and `?`, iterative with one backtrack point (linear in practice).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("abc", "abc"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("a*", "abcd"));
        assert!(glob("*/busybox:*", "docker.io/library/busybox:1.36"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*b*b*", "abxxbyy"));
        assert!(!glob("*b*b*", "abxx"));
        assert!(glob("*", ""));
        assert!(!glob("?", ""));
    }

    #[test]
    fn names_and_labels() {
        let labels = HashMap::from([("app".to_owned(), "web-1".to_owned())]);
        let name = ContainerPattern::parse("web-*").unwrap();
        assert!(name.matches("web-7", "", &labels));
        assert!(!name.matches("db", "img", &labels));
        let image = ContainerPattern::parse("*busybox*").unwrap();
        assert!(image.matches("x", "docker.io/library/busybox:latest", &labels));
        let label = ContainerPattern::parse("app=web*").unwrap();
        assert!(label.matches("x", "", &labels));
        assert!(
            !ContainerPattern::parse("app=db")
                .unwrap()
                .matches("x", "", &labels)
        );
        assert_eq!(ContainerPattern::parse("=x"), None);
        assert_eq!(ContainerPattern::parse(""), None);
    }

    #[test]
    fn kubernetes_needs_both_labels_exactly() {
        let pod = |uid: &str, name: &str| {
            HashMap::from([
                (POD_UID_LABEL.to_owned(), uid.to_owned()),
                (CONTAINER_NAME_LABEL.to_owned(), name.to_owned()),
            ])
        };
        let p = ContainerPattern::kubernetes("u-1", "workload");
        assert!(p.matches("x", "", &pod("u-1", "workload")));
        assert!(!p.matches("x", "", &pod("u-2", "workload")));
        assert!(!p.matches("x", "", &pod("u-1", "recorder")));
        assert!(!p.matches("x", "", &pod("u-*", "workload")));
        let only_uid = HashMap::from([(POD_UID_LABEL.to_owned(), "u-1".to_owned())]);
        assert!(!p.matches("x", "", &only_uid));
        assert_eq!(
            p.to_string(),
            "io.kubernetes.pod.uid=u-1,io.kubernetes.container.name=workload"
        );
    }
}
