//! Everything the child needs, prepared as C strings before forking so the child never
//! allocates.

use std::ffi::{CString, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::spec::{DEFAULT_PATH, ProcessSpec};

/// Largest overlay option string the kernel accepts through mount(2) (one page).
const MAX_MOUNT_DATA: usize = 4095;

/// A filesystem operation run inside the container's new root.
pub(crate) enum Step {
    /// `mkdir`; an existing entry is fine.
    Mkdir { path: CString, mode: libc::mode_t },
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        source: CString,
        target: CString,
        fstype: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    /// `mknod` of a character device.
    CharDev {
        path: CString,
        major: u32,
        minor: u32,
    },
    /// `symlink(target, path)`.
    Symlink { target: CString, path: CString },
}

impl Step {
    /// A human description, for errors reported by the child.
    pub(crate) fn describe(&self) -> String {
        match self {
            Step::Mkdir { path, .. } => format!("mkdir {}", path.to_string_lossy()),
            Step::Mount { fstype, target, .. } => format!(
                "mount {} on {}",
                fstype.to_string_lossy(),
                target.to_string_lossy()
            ),
            Step::CharDev { path, .. } => format!("mknod {}", path.to_string_lossy()),
            Step::Symlink { path, .. } => format!("symlink {}", path.to_string_lossy()),
        }
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A string for the kernel contains a NUL byte.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// overlayfs option syntax cannot express this path.
    #[error("layer path {0} contains ',', ':' or '\\', which overlayfs options cannot express")]
    UnsupportedPath(String),
    /// The overlay options exceed one page.
    #[error(
        "overlay options are {0} bytes, over the kernel's {MAX_MOUNT_DATA}: use shorter layer paths"
    )]
    TooLong(usize),
    /// Nothing to run.
    #[error("the process has no arguments")]
    NoArgs,
}

/// The child's whole script. Holds raw pointers into its own `CString`s, so it stays on the
/// thread that made it.
pub(crate) struct Plan {
    pub(crate) new_root: CString,
    pub(crate) overlay_data: CString,
    pub(crate) steps: Vec<Step>,
    pub(crate) cwd_prefixes: Vec<CString>,
    pub(crate) cwd: CString,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    pub(crate) groups: Vec<libc::gid_t>,
    pub(crate) exec_candidates: Vec<CString>,
    pub(crate) argv: Vec<*const c_char>,
    pub(crate) envp: Vec<*const c_char>,
    // The pointer vectors above point into these.
    _args: Vec<CString>,
    _env: Vec<CString>,
}

fn cstring(what: &'static str, value: impl Into<Vec<u8>>) -> Result<CString, PlanError> {
    CString::new(value).map_err(|e| PlanError::Nul {
        what,
        value: String::from_utf8_lossy(&e.into_vec()).into_owned(),
    })
}

fn path_str(p: &Path) -> Result<&str, PlanError> {
    let s = p
        .to_str()
        .ok_or_else(|| PlanError::UnsupportedPath(p.display().to_string()))?;
    if s.contains([',', ':', '\\']) {
        return Err(PlanError::UnsupportedPath(s.to_owned()));
    }
    Ok(s)
}

impl Plan {
    /// Plans an overlay of `lowerdirs` (bottom to top) with `upper`/`work`, mounted on
    /// `new_root`, then the runtime mounts and `spec`'s process.
    pub(crate) fn new(
        lowerdirs: &[impl AsRef<Path>],
        upper: &Path,
        work: &Path,
        new_root: &Path,
        spec: &ProcessSpec,
    ) -> Result<Self, PlanError> {
        let mut lowers = Vec::with_capacity(lowerdirs.len());
        for dir in lowerdirs.iter().rev() {
            lowers.push(path_str(dir.as_ref())?);
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            path_str(upper)?,
            path_str(work)?
        );
        if data.len() > MAX_MOUNT_DATA {
            return Err(PlanError::TooLong(data.len()));
        }
        if spec.args.is_empty() {
            return Err(PlanError::NoArgs);
        }

        let args = spec
            .args
            .iter()
            .map(|a| cstring("argument", a.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let env = spec
            .env
            .iter()
            .map(|e| cstring("environment entry", e.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let argv = args
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = env
            .iter()
            .map(|e| e.as_ptr())
            .chain([std::ptr::null()])
            .collect();

        let program = spec.args[0].as_str();
        let exec_candidates = if program.contains('/') {
            vec![cstring("command", program)?]
        } else {
            let path = spec.path_var().unwrap_or(&DEFAULT_PATH[5..]);
            path.split(':')
                .map(|dir| {
                    let dir = if dir.is_empty() { "." } else { dir };
                    cstring(
                        "command",
                        format!("{}/{program}", dir.trim_end_matches('/')),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?
        };

        let cwd = if spec.cwd.starts_with('/') {
            spec.cwd.clone()
        } else {
            format!("/{}", spec.cwd)
        };
        let mut cwd_prefixes = Vec::new();
        let mut prefix = String::new();
        for part in cwd.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            cwd_prefixes.push(cstring("working directory", prefix.as_str())?);
        }

        Ok(Plan {
            new_root: cstring("root path", new_root.as_os_str().as_bytes())?,
            overlay_data: cstring("overlay options", data)?,
            steps: runtime_steps(),
            cwd_prefixes,
            cwd: cstring("working directory", cwd)?,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.additional_gids.clone(),
            exec_candidates,
            argv,
            envp,
            _args: args,
            _env: env,
        })
    }
}

/// The mounts and nodes a container runtime provides, in container paths.
fn runtime_steps() -> Vec<Step> {
    // Literal strings cannot contain NUL, so these conversions cannot fail.
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let mkdir = |path: &str, mode| Step::Mkdir {
        path: c(path),
        mode,
    };
    let mount = |source: &str, target: &str, fstype: &str, flags, data: &str| Step::Mount {
        source: c(source),
        target: c(target),
        fstype: c(fstype),
        flags,
        data: c(data),
    };
    let dev = |name: &str, major, minor| Step::CharDev {
        path: c(&format!("/dev/{name}")),
        major,
        minor,
    };
    let link = |target: &str, path: &str| Step::Symlink {
        target: c(target),
        path: c(path),
    };
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME};
    vec![
        mkdir("/proc", 0o555),
        mount(
            "proc",
            "/proc",
            "proc",
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "",
        ),
        mkdir("/sys", 0o555),
        mount(
            "sysfs",
            "/sys",
            "sysfs",
            MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "",
        ),
        mkdir("/dev", 0o755),
        mount(
            "tmpfs",
            "/dev",
            "tmpfs",
            MS_NOSUID | MS_STRICTATIME,
            "mode=755,size=65536k",
        ),
        dev("null", 1, 3),
        dev("zero", 1, 5),
        dev("full", 1, 7),
        dev("random", 1, 8),
        dev("urandom", 1, 9),
        dev("tty", 5, 0),
        mkdir("/dev/pts", 0o755),
        mount(
            "devpts",
            "/dev/pts",
            "devpts",
            MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        ),
        link("pts/ptmx", "/dev/ptmx"),
        link("/proc/self/fd", "/dev/fd"),
        link("/proc/self/fd/0", "/dev/stdin"),
        link("/proc/self/fd/1", "/dev/stdout"),
        link("/proc/self/fd/2", "/dev/stderr"),
        mkdir("/dev/shm", 0o1777),
        mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=1777,size=65536k",
        ),
        mkdir("/tmp", 0o1777),
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
    ]
}
