//! Digests as the image side uses them: [`BlobDigest`] and [`VerifyingReader`] live in
//! [`crate::content::digest`]; here their failures become [`ImageError`]s.

use std::io::{self, Read};

pub use crate::content::digest::{BlobDigest, DigestError, VerifyingReader};

use super::error::{ImageError, LayerFault};
use crate::content::digest::verification_error;

impl From<DigestError> for ImageError {
    fn from(e: DigestError) -> Self {
        match e {
            DigestError::Invalid(s) => ImageError::InvalidDigest(s),
            DigestError::Mismatch { digest, actual } => ImageError::DigestMismatch {
                digest: digest.to_string(),
                actual: actual.to_string(),
            },
            DigestError::SizeMismatch {
                digest,
                expected,
                actual,
            } => ImageError::SizeMismatch {
                digest: digest.to_string(),
                expected,
                actual,
            },
        }
    }
}

/// Turns an I/O error back into the failure it carries (a verification failure of a
/// [`VerifyingReader`], or an [`ImageError`] a layer reader wrapped), or wraps it with `other`.
pub(crate) fn unwrap_io(e: io::Error, other: impl FnOnce(io::Error) -> ImageError) -> ImageError {
    if e.get_ref().is_some_and(|r| r.is::<ImageError>()) {
        let kind = e.kind();
        return match e.into_inner().map(|inner| inner.downcast::<ImageError>()) {
            Some(Ok(img)) => *img,
            // Unreachable: the check above saw an ImageError inside.
            Some(Err(inner)) => other(io::Error::new(kind, inner)),
            None => other(io::Error::from(kind)),
        };
    }
    match verification_error(e) {
        Ok(d) => d.into(),
        Err(e) => other(e),
    }
}

/// Whether `e` carries an [`ImageError`] or a verification failure: a failure of the blob
/// itself rather than of reading it.
pub(crate) fn carries_image_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|r| r.is::<ImageError>() || r.is::<DigestError>())
}

/// Reads a whole blob through a verifying reader into memory (for small JSON blobs).
pub(crate) fn read_all_verified<R: Read>(
    mut r: VerifyingReader<R>,
    limit: u64,
) -> Result<Vec<u8>, ImageError> {
    let digest = r.digest().to_string();
    let mut out = Vec::new();
    let mut limited = (&mut r).take(limit + 1);
    limited.read_to_end(&mut out).map_err(|e| {
        unwrap_io(e, |e| ImageError::BadLayer {
            digest: digest.clone(),
            source: LayerFault::Read(e),
        })
    })?;
    if out.len() as u64 > limit {
        return Err(ImageError::JsonTooLarge {
            what: "blob",
            name: digest,
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_failures_become_image_errors() {
        let d = BlobDigest::of(b"abc");
        let err = VerifyingReader::new(&b"abd"[..], d.clone(), None)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            unwrap_io(err, |_| unreachable!()),
            ImageError::DigestMismatch { .. }
        ));
        let err = VerifyingReader::new(&b"abcd"[..], d, Some(3))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            unwrap_io(err, |_| unreachable!()),
            ImageError::SizeMismatch { .. }
        ));
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, ImageError::WorkerPanicked(3));
        assert!(carries_image_error(&wrapped));
        assert!(matches!(
            unwrap_io(wrapped, |_| unreachable!()),
            ImageError::WorkerPanicked(3)
        ));
        assert!(matches!(
            ImageError::from("sha512:00".parse::<BlobDigest>().unwrap_err()),
            ImageError::InvalidDigest(_)
        ));
    }
}
