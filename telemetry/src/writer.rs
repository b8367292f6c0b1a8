//! A cursor writing big-endian fields into a caller's buffer, for the export encoders
//! (`sflow`, `ipfix`): `None` as soon as a field does not fit, so a datagram is never
//! cut short silently.

/// Writes into `buf` from `at` on.
pub(crate) struct Writer<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) at: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> Option<()> {
        let end = self.at.checked_add(b.len())?;
        self.buf.get_mut(self.at..end)?.copy_from_slice(b);
        self.at = end;
        Some(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Option<()> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    /// XDR opaque data: the bytes, then zeros up to a multiple of 4.
    pub(crate) fn opaque(&mut self, b: &[u8]) -> Option<()> {
        self.bytes(b)?;
        let pad = b.len().div_ceil(4) * 4 - b.len();
        self.bytes(&[0; 3][..pad])
    }

    /// Overwrite a 16-bit field written earlier (a length known only at the end).
    pub(crate) fn put_u16_at(&mut self, at: usize, v: u16) {
        if let Some(b) = self.buf.get_mut(at..at + 2) {
            b.copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// Bytes from hex digits, spaces and newlines ignored: golden datagrams laid out by field.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
