//! Files the kernel opens by itself during an exec: a script's `#!` interpreter and an ELF
//! program's interpreter (`PT_INTERP`, the dynamic loader).
//!
//! No syscall names them, so the syscall tracepoints never see them, while fanotify-based
//! analyzers do (the kernel's own open of them raises fanotify events). The agent reads the head
//! of each executed file through the container's root and adds what the kernel would load.

use std::{
    fs::File,
    io::{self, Read},
    os::{fd::OwnedFd, unix::ffi::OsStrExt},
    path::Path,
};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// Bytes read from the start of an executable: enough for `#!` lines (the kernel reads 256)
/// and the program headers of any real ELF file.
const HEAD: usize = 4096;
/// binfmt handlers nest at most this deep in the kernel (script → interpreter → loader).
const MAX_NESTING: usize = 5;

/// A directory fd on a container's root, held for the whole recording.
///
/// Opened through `/proc/PID/root`, it keeps the container's root mount reachable after every
/// process of the container has exited, and lookups through it resolve absolute symlinks
/// against the container's root, as the kernel does for the container's own processes.
#[derive(Debug)]
pub struct ContainerRoot {
    fd: OwnedFd,
}

impl ContainerRoot {
    /// The root of process `pid`.
    pub fn of_pid(pid: u32) -> io::Result<Self> {
        Self::of_path(Path::new(&format!("/proc/{pid}/root")))
    }

    /// The directory at `path`, as a root.
    pub fn of_path(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(Self { fd: file.into() })
    }

    /// The first bytes of the file at `path` (absolute inside the container).
    fn head(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        let relative = path.strip_prefix(b"/").unwrap_or(path);
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(&self.fd, std::ffi::OsStr::from_bytes(relative), how)?;
        let file = File::from(fd);
        let mut head = Vec::with_capacity(HEAD);
        file.take(HEAD as u64).read_to_end(&mut head)?;
        Ok(head)
    }

    /// The interpreters the kernel loads to exec `path`, outermost first: for a script its
    /// `#!` interpreter (then that one's loader), for a dynamic ELF program its loader.
    pub fn interpreters(&self, path: &[u8]) -> Vec<Vec<u8>> {
        let mut chain = Vec::new();
        let mut current = path.to_vec();
        for _ in 0..MAX_NESTING {
            let Ok(head) = self.head(&current) else {
                break;
            };
            let Some(next) = interpreter_of(&head) else {
                break;
            };
            if chain.contains(&next) || next == path {
                break;
            }
            chain.push(next.clone());
            current = next;
        }
        chain
    }
}

/// The interpreter named by a file's head: a `#!` line's program, or an ELF `PT_INTERP`.
pub fn interpreter_of(head: &[u8]) -> Option<Vec<u8>> {
    if let Some(line) = head.strip_prefix(b"#!") {
        return shebang(line);
    }
    elf_interp(head)
}

fn shebang(line: &[u8]) -> Option<Vec<u8>> {
    let line = line.split(|&b| b == b'\n').next()?;
    let program = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|word| !word.is_empty())?;
    // A relative interpreter resolves against the caller's directory, which is unknown here.
    program.starts_with(b"/").then(|| program.to_vec())
}

/// `PT_INTERP` of a little-endian ELF file, from its head.
fn elf_interp(head: &[u8]) -> Option<Vec<u8>> {
    const PT_INTERP: u32 = 3;
    if head.get(..4)? != b"\x7fELF" || *head.get(5)? != 1 {
        return None;
    }
    // Every offset comes from the file: checked arithmetic, so a hostile header reads nothing.
    let bytes = |at: usize, n: usize| head.get(at..at.checked_add(n)?);
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes(at, 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes(at, 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes(at, 8)?.try_into().ok()?));
    // (offset of e_phoff, e_phentsize, e_phnum) and of p_offset, p_filesz in a header.
    let (phoff, phentsize, phnum, p_offset, p_filesz) = match head.get(4)? {
        2 => (
            u64_at(32)? as usize,
            u16_at(54)? as usize,
            u16_at(56)? as usize,
            8,
            32,
        ),
        1 => (
            u32_at(28)? as usize,
            u16_at(42)? as usize,
            u16_at(44)? as usize,
            4,
            16,
        ),
        _ => return None,
    };
    let wide = *head.get(4)? == 2;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let (offset, size) = if wide {
            (
                u64_at(ph.checked_add(p_offset)?)? as usize,
                u64_at(ph.checked_add(p_filesz)?)? as usize,
            )
        } else {
            (
                u32_at(ph.checked_add(p_offset)?)? as usize,
                u32_at(ph.checked_add(p_filesz)?)? as usize,
            )
        };
        let raw = bytes(offset, size)?;
        let name = raw.split(|&b| b == 0).next()?;
        return (!name.is_empty()).then(|| name.to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines() {
        assert_eq!(
            interpreter_of(b"#!/bin/sh\necho"),
            Some(b"/bin/sh".to_vec())
        );
        assert_eq!(
            interpreter_of(b"#! /usr/bin/env python3\n"),
            Some(b"/usr/bin/env".to_vec())
        );
        assert_eq!(interpreter_of(b"#!relative\n"), None);
        assert_eq!(interpreter_of(b"#!\n"), None);
        assert_eq!(interpreter_of(b"plain text"), None);
    }

    #[test]
    fn elf_interpreter_of_a_real_program() {
        let head = std::fs::read("/bin/sh").unwrap();
        let interp = interpreter_of(&head[..HEAD.min(head.len())]).unwrap();
        assert!(
            interp.starts_with(b"/lib") && interp.windows(5).any(|w| w == b"ld-li"),
            "{}",
            String::from_utf8_lossy(&interp)
        );
    }

    #[test]
    fn truncated_or_hostile_elf_is_ignored() {
        let head = std::fs::read("/bin/sh").unwrap();
        for cut in [4, 20, 60, 64, 100] {
            assert_eq!(interpreter_of(&head[..cut]), None, "cut at {cut}");
        }
        let mut bad = head[..HEAD].to_vec();
        // e_phoff far past the head.
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(interpreter_of(&bad), None);
    }

    #[test]
    fn chain_through_a_root() {
        let root = ContainerRoot::of_pid(std::process::id()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
        let chain = root.interpreters(script.as_os_str().as_encoded_bytes());
        assert_eq!(chain.first().map(Vec::as_slice), Some(&b"/bin/sh"[..]));
        assert_eq!(chain.len(), 2, "the shell's own loader follows");
    }
}
