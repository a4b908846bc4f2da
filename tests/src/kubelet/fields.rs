//! Single pod-spec values translated as the kubelet translates them (resources, `$(VAR)`
//! expansion, strings and string maps), and the check that a container uses no field the
//! translation does not know.

use std::collections::HashMap;

use serde_json::Value;

use crate::cri::v1 as cri;

/// Fields of a container spec this translation handles (or that only the kubelet itself acts
/// on: probes, restart policy); anything else fails the test.
pub(super) fn check_known_fields(c: &Value) {
    const KNOWN: &[&str] = &[
        "name",
        "image",
        "command",
        "args",
        "env",
        "workingDir",
        "restartPolicy",
        "startupProbe",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "resources",
        "securityContext",
        "volumeMounts",
    ];
    for key in c.as_object().into_iter().flat_map(|o| o.keys()) {
        assert!(
            KNOWN.contains(&key.as_str()),
            "container field {key} is not translated by the test's kubelet (tests/src/kubelet/)"
        );
    }
}

/// The kubelet's resource translation: cpu request to shares (1 cpu = 1024), memory limit to
/// bytes, cpu limit to a quota over a 100 ms period; and a burstable pod's oom score, which the
/// kubelet computes as 1000 - 1000 * memory request / node memory, at most 999 (the test uses
/// that bound). Raising a score needs no privilege, and containerd's `restrict_oom_score_adj`
/// keeps it at or above containerd's own.
pub(super) fn resources(r: &Value) -> cri::LinuxContainerResources {
    let millicores = |v: &Value| -> Option<i64> {
        let s = v.as_str()?;
        Some(match s.strip_suffix('m') {
            Some(m) => m.parse().ok()?,
            None => (s.parse::<f64>().ok()? * 1000.0) as i64,
        })
    };
    let bytes = |v: &Value| -> Option<i64> {
        let s = v.as_str()?;
        for (suffix, unit) in [("Ki", 1i64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
            if let Some(n) = s.strip_suffix(suffix) {
                return Some(n.parse::<i64>().ok()? * unit);
            }
        }
        s.parse().ok()
    };
    let shares = millicores(&r["requests"]["cpu"])
        .map(|m| (m * 1024 / 1000).max(2))
        .unwrap_or(2);
    let (period, quota) = match millicores(&r["limits"]["cpu"]) {
        Some(m) => (100_000, m * 100),
        None => (100_000, 0),
    };
    cri::LinuxContainerResources {
        cpu_period: period,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: bytes(&r["limits"]["memory"]).unwrap_or(0),
        oom_score_adj: 999,
        ..Default::default()
    }
}

/// `$(VAR)` of `env` replaced by its value, `$$` by `$`; unknown references stay as written
/// (the kubelet's expansion rules).
pub(super) fn expand_vars(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')'))
            && let Some((_, value)) = env.iter().find(|(k, _)| k == name)
        {
            out.push_str(value);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

pub(super) fn string_map(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), str_of(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_as_the_kubelet_expands_them() {
        let env = vec![("A".to_owned(), "x".to_owned())];
        for (input, want) in [
            ("$(A)", "x"),
            ("k8s:$(A)/w", "k8s:x/w"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("$", "$"),
            ("a$b", "a$b"),
        ] {
            assert_eq!(expand_vars(input, &env), want, "{input}");
        }
    }
}
