//! Bounded, strict binary reading and writing for the push protocol and the manifest.
//! Every read says what it was reading when the input ran out, and a decoder must consume
//! its input exactly ([`Reader::finish`]), so trailing bytes are an error, not ignored.

use crate::error::{Error, Result};

pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, pos: 0, what }
    }

    pub fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::Malformed { what: self.what, reason: format!("{} (at byte {})", reason.into(), self.pos) }
    }

    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.malformed(format!("truncated in {field}: need {n} bytes, {} left", self.remaining())));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        Ok(self.take(N, field)?.try_into().expect("take returns exactly N bytes"))
    }

    pub fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub fn i64(&mut self, field: &str) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A u16 length, then that many bytes.
    pub fn short_bytes(&mut self, field: &str) -> Result<&'a [u8]> {
        let len = usize::from(self.u16(field)?);
        self.take(len, field)
    }

    /// A u32 count or length, as a usize (checked: a 16-bit target would refuse, not wrap).
    pub fn len_u32(&mut self, field: &str) -> Result<usize> {
        let value = self.u32(field)?;
        usize::try_from(value).map_err(|_| self.malformed(format!("{field} {value} does not fit this machine")))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Refuses trailing bytes.
    pub fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.malformed(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

/// Appends big-endian fields; the mirror of [`Reader`].
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }
    /// A u16 length, then the bytes; longer than a u16 can say is refused, never cut.
    pub fn short_bytes(&mut self, v: &[u8]) -> Result<&mut Self> {
        let len = u16::try_from(v.len()).map_err(|_| Error::TooLarge { what: "short field", size: v.len(), limit: usize::from(u16::MAX) })?;
        Ok(self.u16(len).raw(v))
    }

    /// A length or count as a u32; more than a u32 can say is refused, never cut.
    pub fn len_u32(&mut self, len: usize, what: &'static str) -> Result<&mut Self> {
        let value = u32::try_from(len).map_err(|_| Error::TooLarge { what, size: len, limit: u32::MAX as usize })?;
        Ok(self.u32(value))
    }
}
