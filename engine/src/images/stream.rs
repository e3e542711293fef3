//! The two sides of the decompressor: the image file, counted for progress and for the ratio check, and
//! the decompressed stream, counted against the limits. A limit that trips is remembered in the shared
//! [`Meter`], so the error that tar passes on can be reported as what it is.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::rc::Rc;

use super::{Limits, Progress};

/// Byte counts shared by the two sides of the decompressor.
#[derive(Default)]
pub(super) struct Meter {
    pub(super) compressed: Cell<u64>,
    pub(super) decompressed: Cell<u64>,
    /// Set when a limit stopped the stream: the error that surfaces through tar is then this one.
    pub(super) tripped: RefCell<Option<String>>,
}

/// The image file: counts what zstd reads and reports it as progress.
pub(super) struct CompressedSide<'p> {
    pub(super) file: File,
    pub(super) meter: Rc<Meter>,
    pub(super) progress: &'p dyn Progress,
}

impl Read for CompressedSide<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.meter
            .compressed
            .set(self.meter.compressed.get() + n as u64);
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// The decompressed stream: counts what tar reads and stops at the limits.
pub(super) struct DecompressedSide<R> {
    pub(super) inner: R,
    pub(super) meter: Rc<Meter>,
    pub(super) limits: Limits,
}

impl<R: Read> Read for DecompressedSide<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.meter.decompressed.get() + n as u64;
        self.meter.decompressed.set(total);
        let l = &self.limits;
        let tripped = if total > l.max_bytes {
            Some(format!(
                "it decompresses to more than {} bytes (BLAST_IMAGE_MAX_BYTES raises that limit)",
                l.max_bytes
            ))
        } else if l.ratio_exceeded(total, self.meter.compressed.get()) {
            Some(format!(
                "it decompresses to more than {} times its compressed size (for an image you trust, \
                 set BLAST_IMAGE_MAX_BYTES to the most it may decompress to, which replaces this check)",
                l.max_ratio
            ))
        } else {
            None
        };
        if let Some(why) = tripped {
            *self.meter.tripped.borrow_mut() = Some(why);
            return Err(io::Error::other("decompression limit reached"));
        }
        Ok(n)
    }
}

/// Remembers a read error, so a failure inside a copy can be told from a failure of the writing side.
pub(super) struct Tracked<R> {
    pub(super) inner: R,
    pub(super) failed: Option<io::Error>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_through(
        limits: Limits,
        compressed: u64,
        data: &[u8],
    ) -> (io::Result<u64>, Option<String>) {
        let meter = Rc::new(Meter::default());
        meter.compressed.set(compressed);
        let mut side = DecompressedSide {
            inner: data,
            meter: meter.clone(),
            limits,
        };
        let result = io::copy(&mut side, &mut io::sink());
        let tripped = meter.tripped.borrow().clone();
        (result, tripped)
    }

    #[test]
    fn limits_trip_on_total_size_and_on_ratio_past_the_floor() {
        let data = vec![0u8; 1 << 20];
        let small = Limits {
            max_bytes: 1000,
            ..Limits::default()
        };
        let (result, tripped) = read_through(small, 1 << 20, &data);
        assert!(result.is_err());
        assert!(tripped.unwrap().contains("more than 1000 bytes"));

        let ratio = Limits {
            max_ratio: 10,
            ratio_floor: 4096,
            ..Limits::default()
        };
        let (result, tripped) = read_through(ratio, 100, &data);
        assert!(result.is_err());
        assert!(tripped.unwrap().contains("10 times its compressed size"));
        // The same ratio below the floor, or a plausible one above it, passes.
        let (result, _) = read_through(ratio, 100, &data[..4000]);
        assert_eq!(result.unwrap(), 4000);
        let (result, tripped) = read_through(ratio, 1 << 18, &data);
        assert_eq!((result.unwrap(), tripped), (1 << 20, None));
    }
}
