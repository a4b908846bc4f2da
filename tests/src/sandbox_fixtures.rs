//! Layer tars and tiny root filesystems for the sandbox tests, built from host binaries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds an in-memory tar, with full control over names (including hostile ones).
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &[u8], mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        // Raw bytes, bypassing the tar crate's own path checks, so tests can write hostile names.
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        h
    }

    fn append(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.file_owned(name, mode, 0, 0, data)
    }

    /// A regular file whose name may be longer than a header's 100-byte name field (written
    /// with a GNU long-name entry, as the tar crate does for long paths).
    pub fn long_file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        self.builder.append_data(&mut h, name, data).unwrap();
        self
    }

    /// A regular file with an owner.
    pub fn file_owned(
        &mut self,
        name: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(
            tar::EntryType::Regular,
            name.as_bytes(),
            mode,
            data.len() as u64,
        );
        h.set_uid(uid);
        h.set_gid(gid);
        self.append(h, data)
    }

    /// An entry with raw name bytes.
    pub fn raw(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(kind, name, 0o644, data.len() as u64);
        if let Some(link) = link {
            let field = &mut h.as_old_mut().linkname;
            field.fill(0);
            field[..link.len()].copy_from_slice(link);
        }
        self.append(h, data)
    }

    /// A directory.
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, name.as_bytes(), mode, 0);
        self.append(h, &[])
    }

    /// A symlink.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Symlink,
            name.as_bytes(),
            Some(target.as_bytes()),
            &[],
        )
    }

    /// A hardlink to an earlier entry.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            tar::EntryType::Link,
            name.as_bytes(),
            Some(target.as_bytes()),
            &[],
        )
    }

    /// A character or block device, or a fifo.
    pub fn node(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = Self::header(kind, name.as_bytes(), mode, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, &[])
    }

    /// The finished tar bytes.
    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    /// Adds host `programs` (found on PATH) at `/bin/NAME`, with every library `ldd` names at
    /// the path it names, so they run inside a root made of this layer.
    pub fn host_programs(&mut self, programs: &[&str]) -> &mut Self {
        let binaries: Vec<(String, PathBuf)> = programs
            .iter()
            .map(|p| (format!("bin/{p}"), which(p)))
            .collect();
        self.host_binaries(&binaries)
    }

    /// Adds host binaries at the image paths given, with every library `ldd` names for them.
    pub fn host_binaries(&mut self, binaries: &[(String, PathBuf)]) -> &mut Self {
        let mut libs = BTreeSet::new();
        for (name, path) in binaries {
            let data = std::fs::read(path).unwrap();
            self.file(name, 0o755, &data);
            libs.extend(ldd(path));
        }
        for lib in libs {
            let data = std::fs::read(&lib).unwrap();
            let name = lib.to_str().unwrap().trim_start_matches('/');
            self.file(name, 0o755, &data);
        }
        self
    }
}

/// The absolute path of `program` on the host's PATH.
pub fn which(program: &str) -> PathBuf {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} not found on PATH"))
}

/// The shared libraries (and loader) `binary` needs, as paths on the host.
pub fn ldd(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("running ldd");
    assert!(out.status.success(), "ldd {} failed", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Lines of `/proc/self/mountinfo` that mention `needle`.
pub fn mounts_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}
