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
///
/// `volatile` (5.10+): the upper dir is the run's scratch, thrown away after it, so nothing is
/// worth a sync. Without it, the unmount when the container's namespace goes syncs the whole
/// upper file system (`ovl_sync_fs`): on a cold run, every file just unpacked into the layer
/// cache on the same file system was written back while the recorder waited (229 of a cold
/// run's waits in `sched_switch` were that writeback, 60,000-file image).
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
        "lowerdir={},upperdir={},workdir={},volatile",
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
        assert_eq!(data, "lowerdir=/l/1:/l/0,upperdir=/u,workdir=/w,volatile");
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
