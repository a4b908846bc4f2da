//! Copying programs of this machine into a layer, with the shared libraries they load.
//!
//! Paths keep their real spelling: every symlink met on the way (usrmerge's `/bin -> usr/bin`,
//! `/lib64/ld-linux-x86-64.so.2 -> /lib/...`, `libfoo.so.1 -> libfoo.so.1.2.3`) goes into the
//! layer as a symlink, and the file it leads to as a file, so the image resolves the same
//! paths the same way this machine does.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::layer::Layer;

/// Symlink hops allowed while resolving one path, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// Adds each program (a name looked up in `PATH`, or an absolute path) and every library
/// `ldd` lists for it.
pub fn add_programs(layer: &mut Layer, programs: &[&str]) -> anyhow::Result<()> {
    let mut paths = BTreeSet::new();
    for program in programs {
        let path = locate(program)?;
        paths.extend(libraries(&path)?);
        paths.insert(path);
    }
    for path in paths {
        add_path(layer, &path)?;
    }
    Ok(())
}

/// Adds the host file at `path` and the symlinks on the way to it.
pub fn add_path(layer: &mut Layer, path: &Path) -> anyhow::Result<()> {
    let mut hops = 0;
    let resolved = resolve(layer, Path::new("/"), path, &mut hops)
        .with_context(|| format!("copying {} from this machine", path.display()))?;
    let meta =
        fs::metadata(&resolved).with_context(|| format!("reading {}", resolved.display()))?;
    let name = to_layer_path(&resolved)?;
    if meta.is_dir() {
        layer.dir(&name, meta.permissions().mode() & 0o7777)
    } else if meta.is_file() {
        let data =
            fs::read(&resolved).with_context(|| format!("reading {}", resolved.display()))?;
        layer.file(&name, meta.permissions().mode() & 0o7777, data)
    } else {
        bail!("{} is neither a file nor a directory", resolved.display())
    }
}

/// Resolves `rest` below the symlink-free `base`, one component at a time like the kernel,
/// recording each symlink it follows in `layer`. Returns the symlink-free host path.
fn resolve(
    layer: &mut Layer,
    base: &Path,
    rest: &Path,
    hops: &mut usize,
) -> anyhow::Result<PathBuf> {
    let mut resolved = base.to_owned();
    let mut components = rest.components();
    while let Some(component) = components.next() {
        match component {
            Component::RootDir => resolved = PathBuf::from("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                let candidate = resolved.join(name);
                let meta = fs::symlink_metadata(&candidate)
                    .with_context(|| format!("looking at {}", candidate.display()))?;
                if !meta.file_type().is_symlink() {
                    resolved = candidate;
                    continue;
                }
                *hops += 1;
                if *hops > MAX_SYMLINKS {
                    bail!("too many symlinks at {}", candidate.display());
                }
                let target = fs::read_link(&candidate)
                    .with_context(|| format!("reading the link {}", candidate.display()))?;
                let target_text = target.to_str().with_context(|| {
                    format!("{} points at a non-UTF-8 path", candidate.display())
                })?;
                layer.symlink(&to_layer_path(&candidate)?, target_text)?;
                let remaining: PathBuf = components.collect();
                return resolve(layer, &resolved, &target.join(remaining), hops);
            }
        }
    }
    Ok(resolved)
}

fn to_layer_path(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(text.trim_start_matches('/').to_owned())
}

/// Finds a program the way a shell would, without resolving symlinks.
fn locate(program: &str) -> anyhow::Result<PathBuf> {
    if program.starts_with('/') {
        return Ok(PathBuf::from(program));
    }
    let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{program} is not installed on this machine (not in PATH)"))
}

/// The libraries `ldd` says `program` loads, the dynamic loader included.
pub fn libraries(program: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd (part of libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd fails on static programs, which need nothing more.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", program.display(), out.status);
    }
    parse_ldd(&text).with_context(|| format!("reading ldd's output for {}", program.display()))
}

/// Lines look like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`, or `linux-vdso.so.1 (0x...)` (no file).
fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        let after_arrow = line.split_once("=>").map(|(_, right)| right.trim());
        if after_arrow.is_some_and(|right| right.starts_with("not found")) {
            bail!("a library is missing: {line}");
        }
        let candidate = after_arrow.unwrap_or(line);
        if let Some(path) = candidate
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            found.push(PathBuf::from(path));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_library_paths_only() -> anyhow::Result<()> {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f50)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f50)\n";
        assert_eq!(
            parse_ldd(text)?,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        Ok(())
    }

    #[test]
    fn a_missing_library_is_an_error() {
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }
}
