//! The overlay mount of the workload's root: its options, checked before anything is made.

use std::path::Path;

/// Largest overlay option string the kernel accepts through mount(2) (one page).
const MAX_MOUNT_DATA: usize = 4095;

/// Why the workload's root cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
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

fn path_str(p: &Path) -> Result<&str, PlanError> {
    let s = p
        .to_str()
        .ok_or_else(|| PlanError::UnsupportedPath(p.display().to_string()))?;
    if s.contains([',', ':', '\\']) {
        return Err(PlanError::UnsupportedPath(s.to_owned()));
    }
    Ok(s)
}

/// The overlay options for `lowerdirs` (bottom to top) with `upper` and `work`.
pub(crate) fn overlay_options(
    lowerdirs: &[impl AsRef<Path>],
    upper: &Path,
    work: &Path,
) -> Result<String, PlanError> {
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
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdirs_are_listed_top_first_and_bad_paths_refused() {
        let data = overlay_options(&["/l/0", "/l/1"], Path::new("/u"), Path::new("/w")).unwrap();
        assert_eq!(data, "lowerdir=/l/1:/l/0,upperdir=/u,workdir=/w");
        for bad in ["/a,b", "/a:b", "/a\\b"] {
            assert!(matches!(
                overlay_options(&[bad], Path::new("/u"), Path::new("/w")),
                Err(PlanError::UnsupportedPath(_))
            ));
        }
        let long = "/x".repeat(2100);
        assert!(matches!(
            overlay_options(&[long], Path::new("/u"), Path::new("/w")),
            Err(PlanError::TooLong(_))
        ));
    }
}
