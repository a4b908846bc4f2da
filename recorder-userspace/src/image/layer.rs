//! A layer's uncompressed tar stream, decoded from its blob and verified against its digest.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::digest::unwrap_io;
use super::error::{ImageError, LayerFault};
use super::media::Compression;
use super::source::BlobReader;

/// Read size for compressed blobs: large enough that syscalls and hashing calls amortise.
const RAW_BUFFER: usize = 256 << 10;

/// Counts the compressed bytes read, for progress reports.
struct Counted {
    inner: BlobReader,
    counter: Option<Arc<AtomicU64>>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = &self.counter {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

enum Decoder {
    Plain(BufReader<Counted>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Counted>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Counted>>),
}

/// The uncompressed tar stream of one layer. Reading it to EOF also reads the rest of the
/// blob and fails unless the whole blob matches its digest.
pub struct LayerReader {
    decoder: Decoder,
    digest: String,
    finished: bool,
    out: u64,
}

impl LayerReader {
    /// Decodes `blob`, compressed as `compression`; `counter` accumulates compressed bytes read.
    pub fn new(
        blob: BlobReader,
        compression: Compression,
        counter: Option<Arc<AtomicU64>>,
    ) -> Result<Self, ImageError> {
        let digest = blob.digest().to_string();
        let raw = BufReader::with_capacity(
            RAW_BUFFER,
            Counted {
                inner: blob,
                counter,
            },
        );
        let decoder = match compression {
            Compression::None => Decoder::Plain(raw),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(raw))),
            Compression::Zstd => {
                Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| {
                    ImageError::BadLayer {
                        digest: digest.clone(),
                        source: LayerFault::ZstdStart(e),
                    }
                })?)
            }
        };
        Ok(LayerReader {
            decoder,
            digest,
            finished: false,
            out: 0,
        })
    }

    /// The layer blob's digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    fn raw(&mut self) -> &mut BufReader<Counted> {
        match &mut self.decoder {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
        }
    }

    /// Uncompressed bytes read so far.
    pub fn bytes_out(&self) -> u64 {
        self.out
    }

    /// Converts an error into one that names this layer, keeping verification failures intact.
    pub fn error(&self, e: io::Error) -> ImageError {
        unwrap_io(e, |e| ImageError::BadLayer {
            digest: self.digest.clone(),
            source: match e.kind() {
                io::ErrorKind::UnexpectedEof => LayerFault::Truncated(e),
                _ => LayerFault::Read(e),
            },
        })
    }

    fn wrap(&self, e: io::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.error(e))
    }

    /// Reads the rest of the layer and its blob, so that the digest is checked.
    pub fn finish(&mut self) -> Result<(), ImageError> {
        io::copy(self, &mut io::sink()).map_err(|e| self.error(e))?;
        Ok(())
    }
}

impl Read for LayerReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.decoder {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
        .map_err(|e| self.wrap(e))?;
        self.out += n as u64;
        if n == 0 {
            // Bytes after the compressed stream still count towards the digest.
            io::copy(self.raw(), &mut io::sink()).map_err(|e| self.wrap(e))?;
            self.finished = true;
        }
        Ok(n)
    }
}
