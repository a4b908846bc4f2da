//! Content digests and the reader that checks a blob against its digest while it streams.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::error::ImageError;

/// A `sha256:<hex>` content digest, the only algorithm OCI images use in practice.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobDigest {
    hex: String,
}

impl BlobDigest {
    /// The 64 lowercase hex digits, as used in `blobs/sha256/<hex>`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    /// The digest a finished hasher holds.
    pub fn from_hasher(h: Sha256) -> Self {
        BlobDigest {
            hex: hex::encode(h.finalize()),
        }
    }

    /// The digest of an OCI descriptor, refusing algorithms other than sha256.
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Self, ImageError> {
        d.as_ref().parse()
    }
}

impl FromStr for BlobDigest {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, ImageError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::InvalidDigest(s.to_owned()))?;
        // Lowercase only: the hex names a file, and a second spelling would name another one.
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageError::InvalidDigest(s.to_owned()));
        }
        Ok(BlobDigest {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Hashes what passes through and fails the read that reaches EOF if the digest or size is wrong.
///
/// Callers must read to EOF for the check to happen; everything here that consumes a blob does.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    expected: BlobDigest,
    expected_size: Option<u64>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, which must yield exactly the blob named by `expected`.
    pub fn new(inner: R, expected: BlobDigest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
            expected,
            expected_size,
            verified: false,
        }
    }

    /// The digest being checked.
    pub fn digest(&self) -> &BlobDigest {
        &self.expected
    }

    fn fail(&self, e: ImageError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(size) = self.expected_size
            && size != self.read
        {
            return Err(self.fail(ImageError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: size,
                actual: self.read,
            }));
        }
        let actual = BlobDigest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(self.fail(ImageError::DigestMismatch {
                digest: self.expected.to_string(),
                actual: actual.to_string(),
            }));
        }
        self.verified = true;
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if let Some(size) = self.expected_size
            && self.read > size
        {
            return Err(self.fail(ImageError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: size,
                actual: self.read,
            }));
        }
        Ok(n)
    }
}

/// Turns an I/O error back into the verification failure it carries, or wraps it with `other`.
pub(crate) fn unwrap_io(e: io::Error, other: impl FnOnce(io::Error) -> ImageError) -> ImageError {
    if e.get_ref().is_some_and(|r| r.is::<ImageError>()) {
        if let Some(inner) = e.into_inner()
            && let Ok(img) = inner.downcast::<ImageError>()
        {
            return *img;
        }
        // Unreachable in practice: the check above saw an ImageError inside.
        return ImageError::BadLayer {
            digest: String::new(),
            message: "lost verification error".into(),
        };
    }
    other(e)
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
            message: e.to_string(),
        })
    })?;
    if out.len() as u64 > limit {
        return Err(ImageError::BadJson {
            what: "blob",
            name: digest,
            message: format!("larger than the {limit}-byte limit for JSON documents"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_lowercase_sha256() {
        let d = BlobDigest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<BlobDigest>().unwrap(), d);
        assert!("sha512:00".parse::<BlobDigest>().is_err());
        assert!(d.to_string().to_uppercase().parse::<BlobDigest>().is_err());
        assert!("sha256:../../etc/passwd".parse::<BlobDigest>().is_err());
    }

    #[test]
    fn verifying_reader_rejects_mismatch_at_eof() {
        let d = BlobDigest::of(b"abc");
        let mut ok = Vec::new();
        VerifyingReader::new(&b"abc"[..], d.clone(), Some(3))
            .read_to_end(&mut ok)
            .unwrap();
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
    }
}
