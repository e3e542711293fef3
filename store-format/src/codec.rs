//! Primitive readers and writers shared by the encodings: big-endian integers, length-prefixed strings.
//! The reader never trusts a length: it checks it against what remains before allocating.

/// Why bytes are not a valid encoding. Every decoder error names what it was reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a blast {expected} (wrong magic bytes)")]
    BadMagic { expected: &'static str },
    #[error(
        "{what} has format version {found}; this blast reads version {supported}: upgrade blast"
    )]
    UnsupportedVersion {
        what: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    #[error("{what} has {count} trailing bytes")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn new(magic: &[u8; 8], version: u16) -> Self {
        let mut w = Writer(Vec::with_capacity(256));
        w.0.extend_from_slice(magic);
        w.u16(version);
        w
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes32(&mut self, v: &[u8; 32]) {
        self.0.extend_from_slice(v);
    }
    /// Counts are u32; the types that call this never hold more than u32::MAX items (checked on decode).
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub fn str(&mut self, s: &str) {
        self.count(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks magic and version and positions after them.
    pub fn open(
        buf: &'a [u8],
        magic: &[u8; 8],
        what: &'static str,
        supported: u16,
    ) -> Result<Self, FormatError> {
        let mut r = Reader { buf, what };
        let found = r.take(8)?;
        if found != magic {
            return Err(FormatError::BadMagic { expected: what });
        }
        let version = r.u16()?;
        if version != supported {
            return Err(FormatError::UnsupportedVersion {
                what,
                found: version,
                supported,
            });
        }
        Ok(r)
    }

    pub fn invalid(&self, detail: impl Into<String>) -> FormatError {
        FormatError::Invalid {
            what: self.what,
            detail: detail.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError::Truncated { what: self.what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    pub fn bytes32(&mut self) -> Result<[u8; 32], FormatError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }

    /// A count of items each at least `min_item_len` bytes long: rejected when the rest cannot hold them,
    /// so a hostile count never drives an allocation.
    pub fn count(&mut self, min_item_len: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.buf.len() {
            return Err(FormatError::Truncated { what: self.what });
        }
        Ok(n)
    }

    pub fn str(&mut self) -> Result<&'a str, FormatError> {
        let n = self.u32()? as usize;
        let raw = self.take(n)?;
        std::str::from_utf8(raw).map_err(|_| self.invalid("string is not UTF-8"))
    }

    pub fn finish(self) -> Result<(), FormatError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FormatError::TrailingBytes {
                what: self.what,
                count: self.buf.len(),
            })
        }
    }
}
