//! What `--target` names: a process, a mount namespace, or a container in containerd.

use std::fmt;
use std::str::FromStr;

use crate::containerd::ContainerPattern;

/// `pid:N`, `mntns:N`, `container:ID`, `container-name:PATTERN` or `k8s:POD_UID/CONTAINER`.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// A process.
    Pid(u32),
    /// A mount namespace inode.
    Mntns(u32),
    /// A running container's task, by container id.
    Container(String),
    /// The next container created that matches.
    ContainerName(ContainerPattern),
    /// A pod's container, by pod uid and container name.
    K8s {
        /// The pod's `metadata.uid`.
        pod_uid: String,
        /// The container's name in the pod spec.
        container: String,
    },
}

impl TargetSpec {
    /// Whether the target is found through containerd.
    pub fn needs_containerd(&self) -> bool {
        !matches!(self, TargetSpec::Pid(_) | TargetSpec::Mntns(_))
    }
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected pid:N, mntns:N, container:ID, container-name:PATTERN or \
                     k8s:POD_UID/CONTAINER"
            )
        };
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let number = || rest.parse::<u32>().map_err(|_| bad());
        match kind {
            "pid" => Ok(TargetSpec::Pid(number()?)),
            "mntns" => Ok(TargetSpec::Mntns(number()?)),
            "container" if !rest.is_empty() => Ok(TargetSpec::Container(rest.to_owned())),
            "container-name" => ContainerPattern::parse(rest)
                .map(TargetSpec::ContainerName)
                .ok_or_else(bad),
            "k8s" => match rest.split_once('/') {
                Some((uid, name)) if !uid.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok(TargetSpec::K8s {
                        pod_uid: uid.to_owned(),
                        container: name.to_owned(),
                    })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Pid(n) => write!(f, "pid:{n}"),
            TargetSpec::Mntns(n) => write!(f, "mntns:{n}"),
            TargetSpec::Container(id) => write!(f, "container:{id}"),
            TargetSpec::ContainerName(p) => write!(f, "container-name:{p}"),
            TargetSpec::K8s { pod_uid, container } => write!(f, "k8s:{pod_uid}/{container}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print_back() {
        for (input, containerd) in [
            ("pid:1", false),
            ("mntns:4026531840", false),
            ("container:app-1", true),
            ("container-name:app-*", true),
            ("k8s:1234-abcd/app", true),
        ] {
            let target: TargetSpec = input.parse().unwrap();
            assert_eq!(target.to_string(), input);
            assert_eq!(target.needs_containerd(), containerd, "{input}");
        }
        for bad in [
            "",
            "pid",
            "pid:x",
            "container:",
            "k8s:uid",
            "k8s:/c",
            "k8s:u/c/d",
            "x:1",
        ] {
            assert!(bad.parse::<TargetSpec>().is_err(), "{bad}");
        }
    }
}
