//! The eStargz footer: the blob's last 51 bytes, an empty gzip member whose header's extra
//! field (`SG`, 22, `%016x` offset, `STARGZ`) names where the TOC's gzip member starts.

use std::io::Read;

/// The eStargz footer's size.
pub(super) const FOOTER_SIZE: u64 = 51;

/// The TOC offset a footer names, or why it is not an eStargz footer.
pub(super) fn toc_offset(footer: &[u8]) -> Result<u64, String> {
    // flate2 parses the gzip header (and checks the empty member's CRC and length).
    let mut gz = flate2::read::GzDecoder::new(footer);
    let mut rest = Vec::new();
    gz.read_to_end(&mut rest)
        .map_err(|e| format!("not a gzip member: {e}"))?;
    if !rest.is_empty() {
        return Err("the last gzip member is not empty".into());
    }
    let extra = gz
        .header()
        .and_then(|h| h.extra())
        .ok_or("no gzip extra field")?;
    // SI1 'S', SI2 'G', LEN 22 little-endian, then 16 hex digits and "STARGZ".
    let field = extra
        .strip_prefix(b"SG\x16\x00")
        .filter(|f| f.len() == 22 && f.ends_with(b"STARGZ"))
        .ok_or("the gzip extra field is not eStargz's")?;
    let hex = std::str::from_utf8(&field[..16]).map_err(|_| "the TOC offset is not hex")?;
    u64::from_str_radix(hex, 16).map_err(|_| "the TOC offset is not hex".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(offset: &str) -> Vec<u8> {
        let mut extra = b"SG\x16\x00".to_vec();
        extra.extend_from_slice(offset.as_bytes());
        extra.extend_from_slice(b"STARGZ");
        let mut gz = flate2::GzBuilder::new()
            .extra(extra)
            .write(Vec::new(), flate2::Compression::none());
        std::io::Write::flush(&mut gz).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn footer_offsets() {
        let cases: &[(&[u8], Result<u64, ()>)] = &[
            (&footer("00000000000004d2"), Ok(1234)),
            (&footer("000000000000zzzz"), Err(())),
            (&footer("00000000000004d2")[..50], Err(())),
            (
                b"not gzip at all, not gzip at all, not gzip at all..",
                Err(()),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(toc_offset(bytes).map_err(|_| ()), *want, "{bytes:?}");
        }
    }
}
