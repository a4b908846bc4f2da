//! Extended attributes: the ones a layer's PAX headers carry that a lower dir may hold, and
//! overlayfs' opaque-directory marker.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

/// Marks a directory opaque for overlayfs: nothing of the lower layers shows through it.
pub(in crate::sandbox) const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// The prefix of xattrs in PAX headers (GNU tar, Docker, BuildKit).
const PAX_XATTR: &str = "SCHILY.xattr.";

/// The extended attributes in the entry's PAX headers that a lower dir may carry: `user.*`
/// and file capabilities (`security.capability`: what ping and the like are given instead of
/// set-uid). Others are dropped: `trusted.overlay.*` would forge overlayfs whiteouts, opaque
/// dirs or redirects, and `security.*` labels belong to the host's policy.
pub(super) fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
) -> Vec<(CString, Vec<u8>)> {
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in extensions.flatten() {
        let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix(PAX_XATTR)) else {
            continue;
        };
        if !(key.starts_with("user.") || key == "security.capability") {
            tracing::debug!(entry = name, xattr = key, "dropping an xattr");
            continue;
        }
        if let Ok(key) = CString::new(key) {
            out.push((key, ext.value_bytes().to_vec()));
        }
    }
    out
}

pub(super) fn set_xattrs(fd: &impl AsFd, xattrs: &[(CString, Vec<u8>)]) -> Result<u64, Errno> {
    for (name, value) in xattrs {
        set_xattr(fd, name, value)?;
    }
    Ok(xattrs.len() as u64)
}

pub(super) fn set_xattr(fd: &impl AsFd, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: fd is open for the call's duration; name is NUL-terminated; value/len describe a
    // live slice. fsetxattr only reads them.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}
