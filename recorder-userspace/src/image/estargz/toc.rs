//! The TOC's gzip member: one tar entry, `stargz.index.json`, whose content is the TOC JSON.

use std::io::Read;

use super::TOC_TAR_NAME;

/// Largest uncompressed TOC JSON (about 300 bytes an entry: some 3 million entries).
const MAX_TOC_JSON: u64 = 1 << 30;

/// Why the member gave no TOC: the decoder failed, or what it holds is not the TOC.
pub(super) enum TocRead {
    Io(std::io::Error),
    Bad(String),
}

/// The TOC JSON from its gzip member: a tar stream whose first entry is `stargz.index.json`.
pub(super) fn toc_json(compressed: &[u8]) -> Result<Vec<u8>, TocRead> {
    // One gzip member (not MultiGzDecoder): the footer after it is not part of the TOC.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(compressed));
    let mut entries = archive.entries().map_err(TocRead::Io)?;
    let mut entry = entries
        .next()
        .ok_or_else(|| TocRead::Bad("has no tar entry".into()))?
        .map_err(TocRead::Io)?;
    let entry_name = entry.path_bytes();
    if &*entry_name != TOC_TAR_NAME.as_bytes() {
        return Err(TocRead::Bad(format!(
            "tar entry is {:?}, not {TOC_TAR_NAME}",
            crate::image::path::display(&entry_name)
        )));
    }
    let size = entry.size();
    if size > MAX_TOC_JSON {
        return Err(TocRead::Bad(format!(
            "is {size} bytes, over the {MAX_TOC_JSON}-byte limit"
        )));
    }
    let mut json = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut json).map_err(TocRead::Io)?;
    if json.len() as u64 != size {
        return Err(TocRead::Bad("is cut short".into()));
    }
    Ok(json)
}
