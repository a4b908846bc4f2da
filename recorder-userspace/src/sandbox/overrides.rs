//! What `recorder run` changes of the image's process, with `ctr-remote image optimize`'s (and
//! docker's) option names: `--entrypoint`, `--env`, `--env-file`, `--user`, `--cwd`, and the
//! command after `--`.

use super::spec::ImageProcess;

/// Overrides of the image config's process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessOverrides {
    /// Replaces `Entrypoint`; the image's `Cmd` is dropped with it, and the command given
    /// becomes its arguments (as `docker run --entrypoint`).
    pub entrypoint: Option<String>,
    /// Replaces `Cmd` (the entrypoint, the image's or the override, is kept).
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries, in order, over the image's `Env` (a key set again replaces it).
    pub env: Vec<String>,
    /// Replaces `User`.
    pub user: Option<String>,
    /// Replaces `WorkingDir`.
    pub cwd: Option<String>,
}

impl ProcessOverrides {
    /// The process spec of `image` with these overrides, over the image's `lowerdirs`.
    pub fn spec(
        &self,
        image: &crate::image::Image,
        lowerdirs: &[std::path::PathBuf],
    ) -> Result<super::ProcessSpec, super::SpecError> {
        let mut process = image.run_config();
        let cmd = self.apply(&mut process);
        process.to_spec(cmd.as_deref(), lowerdirs)
    }

    /// Applies the overrides to `process`; returns the command replacing `Cmd`, if any, for
    /// [`ImageProcess::to_spec`].
    pub fn apply(&self, process: &mut ImageProcess) -> Option<Vec<String>> {
        if let Some(entrypoint) = &self.entrypoint {
            process.entrypoint = vec![entrypoint.clone()];
            process.cmd.clear();
        }
        for entry in &self.env {
            let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
            process
                .env
                .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            process.env.push(entry.clone());
        }
        if let Some(user) = &self.user {
            process.user = user.clone();
        }
        if let Some(cwd) = &self.cwd {
            process.working_dir = cwd.clone();
        }
        self.cmd.clone()
    }
}

/// Parses an `--env-file`: `KEY=VALUE` lines; blank lines and `#` comments skipped; a bare
/// `KEY` takes its value from this process's environment (as docker does), and is dropped when
/// unset there. Returns the entries, or the first bad line (1-based) and why.
pub fn parse_env_file(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some(("", _)) => return Err((i + 1, "empty variable name".into())),
            Some(_) => entries.push(line.to_owned()),
            None => {
                if line.contains(char::is_whitespace) {
                    return Err((i + 1, format!("{line:?}: expected KEY=VALUE")));
                }
                if let Ok(value) = std::env::var(line) {
                    entries.push(format!("{line}={value}"));
                }
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageProcess {
        ImageProcess {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: "/app".into(),
            user: "1000".into(),
        }
    }

    #[test]
    fn overrides() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (entrypoint, cmd, entrypoint after, cmd after, returned cmd)
        let cases = [
            (None, None, s(&["/bin/sh", "-c"]), s(&["echo hi"]), None),
            (
                None,
                Some(s(&["ls"])),
                s(&["/bin/sh", "-c"]),
                s(&["echo hi"]),
                Some(s(&["ls"])),
            ),
            (Some("/bin/cat"), None, s(&["/bin/cat"]), s(&[]), None),
            (
                Some("/bin/cat"),
                Some(s(&["/etc/x"])),
                s(&["/bin/cat"]),
                s(&[]),
                Some(s(&["/etc/x"])),
            ),
        ];
        for (entrypoint, cmd, want_entry, want_cmd, want_returned) in cases {
            let mut p = image();
            let o = ProcessOverrides {
                entrypoint: entrypoint.map(str::to_owned),
                cmd: cmd.clone(),
                ..Default::default()
            };
            assert_eq!(o.apply(&mut p), want_returned);
            assert_eq!((p.entrypoint, p.cmd), (want_entry, want_cmd), "{o:?}");
        }
        let mut p = image();
        ProcessOverrides {
            env: s(&["A=2", "B=3"]),
            user: Some("0:0".into()),
            cwd: Some("/tmp".into()),
            ..Default::default()
        }
        .apply(&mut p);
        assert_eq!(p.env, s(&["PATH=/bin", "A=2", "B=3"]));
        assert_eq!((p.user.as_str(), p.working_dir.as_str()), ("0:0", "/tmp"));
    }

    #[test]
    fn env_files() {
        assert_eq!(
            parse_env_file("# c\n\nA=1\n  B=x=y\nC=\n"),
            Ok(vec!["A=1".into(), "B=x=y".into(), "C=".into()])
        );
        assert_eq!(
            parse_env_file("A=1\n=2\n"),
            Err((2, "empty variable name".into()))
        );
        assert!(parse_env_file("not a var\n").is_err());
    }
}
