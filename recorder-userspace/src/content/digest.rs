//! Content digests and the reader that checks a blob against its digest while it streams.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a digest does not parse, or content does not match its digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?}: only sha256:<64 lowercase hex digits> is supported")]
    Invalid(String),
    /// The content does not hash to its digest.
    #[error("blob {digest}: digest mismatch (content hashes to {actual})")]
    Mismatch {
        /// The expected digest.
        digest: BlobDigest,
        /// What the content hashes to.
        actual: BlobDigest,
    },
    /// The content's length differs from the size it was announced with.
    #[error("blob {digest}: size mismatch (descriptor says {expected} bytes, blob has {actual})")]
    SizeMismatch {
        /// The blob.
        digest: BlobDigest,
        /// The announced size.
        expected: u64,
        /// The size read (at least).
        actual: u64,
    },
}

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
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Self, DigestError> {
        d.as_ref().parse()
    }
}

impl FromStr for BlobDigest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, DigestError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError::Invalid(s.to_owned()))?;
        // Lowercase only: the hex names a file, and a second spelling would name another one.
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Invalid(s.to_owned()));
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

impl serde::Serialize for BlobDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Hashes what passes through and fails the read that reaches EOF if the digest or size is
/// wrong, with an [`io::Error`] of kind `InvalidData` carrying a [`DigestError`] (see
/// [`verification_error`]).
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

    fn fail(&self, e: DigestError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(size) = self.expected_size
            && size != self.read
        {
            return Err(self.fail(DigestError::SizeMismatch {
                digest: self.expected.clone(),
                expected: size,
                actual: self.read,
            }));
        }
        let actual = BlobDigest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(self.fail(DigestError::Mismatch {
                digest: self.expected.clone(),
                actual,
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
            return Err(self.fail(DigestError::SizeMismatch {
                digest: self.expected.clone(),
                expected: size,
                actual: self.read,
            }));
        }
        Ok(n)
    }
}

/// The verification failure an I/O error of a [`VerifyingReader`] carries, or the I/O error
/// itself when it is another failure (of the underlying reader).
pub fn verification_error(e: io::Error) -> Result<DigestError, io::Error> {
    if e.get_ref().is_some_and(|r| r.is::<DigestError>()) {
        let kind = e.kind();
        return match e.into_inner().map(|inner| inner.downcast::<DigestError>()) {
            Some(Ok(d)) => Ok(*d),
            // Unreachable: the check above saw a DigestError inside.
            Some(Err(other)) => Err(io::Error::new(kind, other)),
            None => Err(io::Error::from(kind)),
        };
    }
    Err(e)
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
            verification_error(err),
            Ok(DigestError::Mismatch { .. })
        ));
        let err = VerifyingReader::new(&b"abcd"[..], d, Some(3))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            verification_error(err),
            Ok(DigestError::SizeMismatch { .. })
        ));
        let plain = io::Error::other("disk on fire");
        assert!(verification_error(plain).is_err());
    }
}
