//! What to run in the sandbox, and how to derive it from an OCI image config.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::unpack::OPAQUE_XATTR;

/// `PATH` for images whose config sets none (the value Docker and containerd use).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process to run: argv, environment, working directory and credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the spec's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Absolute working directory inside the container; created when missing.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub additional_gids: Vec<u32>,
}

impl ProcessSpec {
    /// The value of `PATH` in the spec's environment, if set.
    pub fn path_var(&self) -> Option<&str> {
        self.env.iter().find_map(|e| e.strip_prefix("PATH="))
    }
}

/// The parts of an OCI image config that say what to run: the image's own [`RunConfig`].
///
/// [`RunConfig`]: crate::image::RunConfig
pub use crate::image::RunConfig as ImageProcess;

/// Why an image config could not be turned into a [`ProcessSpec`].
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither entrypoint, cmd nor an override gives anything to run.
    #[error("the image config has no entrypoint or cmd, and no command was given")]
    NoCommand,
    /// A user name is not in the image's `/etc/passwd`.
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    /// A group name is not in the image's `/etc/group`.
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    /// Reading `/etc/passwd` or `/etc/group` from the layers failed.
    #[error("reading {path} from the image")]
    Read {
        /// The file, relative to the image root.
        path: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ImageProcess {
    /// Builds the spec as `docker run IMAGE [CMD...]` would: `cmd_override` replaces `Cmd` and
    /// keeps `Entrypoint`; `User` names are resolved in the image's `/etc/passwd` and
    /// `/etc/group`, read from `lowerdirs` (bottom to top); `PATH` and `HOME` get defaults.
    pub fn to_spec(
        &self,
        cmd_override: Option<&[String]>,
        lowerdirs: &[PathBuf],
    ) -> Result<ProcessSpec, SpecError> {
        let mut args = self.entrypoint.clone();
        args.extend_from_slice(cmd_override.unwrap_or(&self.cmd));
        if args.is_empty() {
            return Err(SpecError::NoCommand);
        }
        let passwd = read_layered(lowerdirs, "etc/passwd")?;
        let group = read_layered(lowerdirs, "etc/group")?;
        let user = resolve_user(&self.user, passwd.as_deref(), group.as_deref())?;

        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_owned());
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        let cwd = match self.working_dir.as_str() {
            "" => "/".to_owned(),
            dir if dir.starts_with('/') => dir.to_owned(),
            // Docker treats a relative WorkingDir as relative to the root.
            dir => format!("/{dir}"),
        };
        Ok(ProcessSpec {
            args,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
        })
    }
}

/// A resolved `User`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups from `/etc/group` membership.
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd`, `/` when unknown.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// `(name, gid, members)` of each `/etc/group` line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves an OCI `User` the way runc does: numeric ids need no entry, names must exist;
/// the primary group defaults to the passwd entry's (or 0); supplementary groups are the
/// groups listing the user's name.
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");

    let entry = if user_part.is_empty() {
        passwd_entries(passwd).find(|e| e.uid == 0)
    } else if let Ok(uid) = user_part.parse::<u32>() {
        passwd_entries(passwd).find(|e| e.uid == uid)
    } else {
        Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| SpecError::UnknownUser(user_part.to_owned()))?,
        )
    };
    let uid = match (&entry, user_part.parse::<u32>()) {
        (_, Ok(uid)) => uid,
        (Some(e), _) => e.uid,
        (None, _) => 0,
    };
    let gid = match group_part {
        None | Some("") => entry.as_ref().map_or(0, |e| e.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|(name, _, _)| *name == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| SpecError::UnknownGroup(g.to_owned()))?,
        },
    };
    let additional_gids = match &entry {
        Some(e) => {
            let mut gids: Vec<u32> = group_entries(group)
                .filter(|(_, g, members)| *g != gid && members.contains(&e.name))
                .map(|(_, g, _)| g)
                .collect();
            gids.sort_unstable();
            gids.dedup();
            gids
        }
        None => Vec::new(),
    };
    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_owned();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Reads `rel` from the topmost layer that has it, as the overlay would show it. A whiteout
/// or an opaque directory hides it; a symlink is not followed (it would resolve on the host).
fn read_layered(lowerdirs: &[PathBuf], rel: &'static str) -> Result<Option<String>, SpecError> {
    let err = |source: io::Error| SpecError::Read { path: rel, source };
    let parts: Vec<&OsStr> = rel.split('/').map(OsStr::new).collect();
    for layer in lowerdirs.iter().rev() {
        match open_in_layer(layer, &parts).map_err(|e| err(e.into()))? {
            Lookup::File(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(err)?;
                return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
            }
            Lookup::Hidden => return Ok(None),
            Lookup::Absent => {}
        }
    }
    Ok(None)
}

enum Lookup {
    File(File),
    Hidden,
    Absent,
}

fn open_in_layer(layer: &Path, parts: &[&OsStr]) -> Result<Lookup, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = match openat(nix::fcntl::AT_FDCWD, layer, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Lookup::Absent),
        Err(e) => return Err(e),
    };
    let Some((name, parents)) = parts.split_last() else {
        return Ok(Lookup::Absent);
    };
    let mut opaque = false;
    for part in parents {
        if is_whiteout(&dir, part)? {
            return Ok(Lookup::Hidden);
        }
        dir = match openat(&dir, *part, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) if opaque => {
                return Ok(Lookup::Hidden);
            }
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(Lookup::Absent),
            Err(e) => return Err(e),
        };
        // Nothing below an opaque directory shows through: absence here is final.
        opaque |= is_opaque(&dir);
    }
    if is_whiteout(&dir, name)? {
        return Ok(Lookup::Hidden);
    }
    match openat(
        &dir,
        *name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Lookup::File(File::from(fd))),
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) if opaque => Ok(Lookup::Hidden),
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => Ok(Lookup::Absent),
        Err(e) => Err(e),
    }
}

fn is_whiteout(dir: &std::os::fd::OwnedFd, name: &OsStr) -> Result<bool, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
                && st.st_rdev == 0,
        ),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn is_opaque(dir: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut value = [0u8; 1];
    // SAFETY: the fd is open; name is NUL-terminated; the buffer is live and its length given.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            OPAQUE_XATTR.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1001:app:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\naudio:x:29:app\n";

    fn resolve(user: &str) -> Result<ResolvedUser, SpecError> {
        resolve_user(user, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn user_forms() {
        let r = resolve("").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let r = resolve("app").unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1001));
        assert_eq!(r.additional_gids, [29, 50]);
        assert_eq!(r.home, "/home/app");
        let r = resolve("1000").unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1001));
        let r = resolve("4242").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (4242, 0, "/"));
        assert!(r.additional_gids.is_empty());
        let r = resolve("4242:77").unwrap();
        assert_eq!((r.uid, r.gid), (4242, 77));
        let r = resolve("app:staff").unwrap();
        assert_eq!((r.uid, r.gid), (1000, 50));
        assert_eq!(r.additional_gids, [29]);
        let r = resolve("daemon:0").unwrap();
        assert_eq!((r.uid, r.gid), (1, 0));
        assert!(matches!(resolve("nobody"), Err(SpecError::UnknownUser(_))));
        assert!(matches!(
            resolve("app:nogroup"),
            Err(SpecError::UnknownGroup(_))
        ));
        // Without passwd/group files only numeric users work.
        assert_eq!(resolve_user("7:8", None, None).unwrap().gid, 8);
        assert!(resolve_user("app", None, None).is_err());
        let error = SpecError::Read {
            path: "etc/passwd",
            source: io::Error::other("disk full"),
        };
        assert_eq!(
            crate::errors::Chain(&error).to_string(),
            "reading etc/passwd from the image: disk full"
        );
    }

    #[test]
    fn cmd_override_keeps_entrypoint_and_defaults_env() {
        let image = ImageProcess {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["A=1".into()],
            working_dir: "srv".into(),
            user: String::new(),
        };
        let spec = image.to_spec(None, &[]).unwrap();
        assert_eq!(spec.args, ["/entry", "default"]);
        assert_eq!(spec.cwd, "/srv");
        assert_eq!(spec.path_var(), Some(&DEFAULT_PATH[5..]));
        assert!(spec.env.contains(&"HOME=/".to_owned()));
        let over = vec!["x".to_owned(), "y".to_owned()];
        assert_eq!(
            image.to_spec(Some(&over), &[]).unwrap().args,
            ["/entry", "x", "y"]
        );
        let empty = ImageProcess::default();
        assert!(matches!(
            empty.to_spec(None, &[]),
            Err(SpecError::NoCommand)
        ));
        assert!(matches!(
            empty.to_spec(Some(&[]), &[]),
            Err(SpecError::NoCommand)
        ));
    }
}
