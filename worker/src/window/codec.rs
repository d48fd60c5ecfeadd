//! The binary encoding of snapshot format 2: little-endian scalars and compressed columns.
//!
//! A **column** is a sequence of integers whose length the reader already knows. It is stored
//! frame-of-reference: one header byte (method and width), a base, then every value as its
//! offset from the base in `width` bytes (1 to 8). The method is either the values themselves
//! (base = their minimum) or their differences from the previous value (base = the minimum
//! difference, after the first value), whichever is narrower; sorted positions (0, 1, 2, …)
//! thus cost one byte each, and columns of small counts or of equal times one byte per value.
//!
//! Every value costs at least one byte, so a count read from the input can be checked against
//! the bytes left before anything is allocated: corrupt input is refused with a
//! [`DecodeError`], it never makes the reader allocate more than a few times its own size and
//! never panics.

/// Why bytes do not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub &'static str);

/// Result of reading.
pub type Decoded<T> = Result<T, DecodeError>;

/// Method bit of a column header: values are differences from the previous value.
const DELTA: u8 = 0x80;

/// Appends format-2 data to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer with `capacity` bytes reserved.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets what was written, keeping the buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A u64, 8 bytes.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// An i64, 8 bytes.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A count or length (u64).
    pub fn len_prefix(&mut self, n: usize) {
        self.u64(n as u64);
    }

    /// Bytes as they are (their length is written elsewhere).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A length-prefixed string.
    pub fn str(&mut self, s: &str) {
        self.len_prefix(s.len());
        self.raw(s.as_bytes());
    }

    /// A length-prefixed section written by `f`, so that a reader can skip it whole.
    pub fn section(&mut self, f: impl FnOnce(&mut Writer)) {
        let at = self.buf.len();
        self.u64(0);
        f(self);
        let len = (self.buf.len() - at - 8) as u64;
        self.buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }

    /// A column of `values` (see the module documentation); nothing for no values.
    pub fn column(&mut self, values: &[i64]) {
        let Some((&first, rest)) = values.split_first() else {
            return;
        };
        let (min, max) = min_max(values.iter().copied());
        let (dmin, dmax) = min_max(values.windows(2).map(|pair| pair[1].wrapping_sub(pair[0])));
        let plain = width(max.wrapping_sub(min) as u64);
        let delta = if rest.is_empty() {
            u8::MAX
        } else {
            width(dmax.wrapping_sub(dmin) as u64)
        };
        if delta < plain {
            self.u8(DELTA | delta);
            self.i64(first);
            self.i64(dmin);
            let offsets = values
                .windows(2)
                .map(|pair| pair[1].wrapping_sub(pair[0]).wrapping_sub(dmin) as u64);
            self.offsets(delta, rest.len(), offsets);
        } else {
            self.u8(plain);
            self.i64(min);
            let offsets = values.iter().map(|v| v.wrapping_sub(min) as u64);
            self.offsets(plain, values.len(), offsets);
        }
    }

    /// A column of u64 values (stored as their i64 bit patterns).
    pub fn column_u64(&mut self, values: &[u64]) {
        // Reinterpreting the bits keeps the encoding exact; ranges are computed with wrapping
        // arithmetic, so values above i64::MAX cost width, not correctness.
        let values: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        self.column(&values);
    }

    fn offsets(&mut self, width: u8, n: usize, offsets: impl Iterator<Item = u64>) {
        let at = self.buf.len();
        self.buf.resize(at + n * usize::from(width), 0);
        let out = &mut self.buf[at..];
        match width {
            1 => put::<1>(out, offsets),
            2 => put::<2>(out, offsets),
            3 => put::<3>(out, offsets),
            4 => put::<4>(out, offsets),
            5 => put::<5>(out, offsets),
            6 => put::<6>(out, offsets),
            7 => put::<7>(out, offsets),
            _ => put::<8>(out, offsets),
        }
    }
}

fn put<const W: usize>(out: &mut [u8], offsets: impl Iterator<Item = u64>) {
    for (chunk, v) in out.chunks_exact_mut(W).zip(offsets) {
        chunk.copy_from_slice(&v.to_le_bytes()[..W]);
    }
}

fn min_max(values: impl Iterator<Item = i64>) -> (i64, i64) {
    values.fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Bytes needed for offsets up to `range`: 1 to 8.
fn width(range: u64) -> u8 {
    let bits = 64 - range.leading_zeros();
    (bits.div_ceil(8) as u8).max(1)
}

/// Reads format-2 data.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Fails unless everything was read.
    pub fn finish(&self) -> Decoded<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes after the snapshot"))
        }
    }

    /// The next `n` bytes.
    pub fn raw(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(DecodeError("truncated snapshot"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A u64.
    pub fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An i64.
    pub fn i64(&mut self) -> Decoded<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A count of things each of which takes at least one of the remaining bytes: refused if
    /// larger than that, so that it is safe to allocate for.
    pub fn len_prefix(&mut self) -> Decoded<usize> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or(DecodeError("a count exceeds the snapshot's size"))
    }

    /// A length-prefixed string.
    pub fn str(&mut self) -> Decoded<&'a str> {
        let n = self.len_prefix()?;
        std::str::from_utf8(self.raw(n)?).map_err(|_| DecodeError("a name is not UTF-8"))
    }

    /// A length-prefixed section, as a reader of its own.
    pub fn section(&mut self) -> Decoded<Reader<'a>> {
        let n = self.len_prefix()?;
        Ok(Reader::new(self.raw(n)?))
    }

    /// A column of `n` values.
    pub fn column(&mut self, n: usize) -> Decoded<Vec<i64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let header = self.u8()?;
        let width = header & !DELTA;
        if !(1..=8).contains(&width) {
            return Err(DecodeError("bad column header"));
        }
        let mut out = Vec::new();
        if header & DELTA != 0 {
            let first = self.i64()?;
            let base = self.i64()?;
            let bytes = self.column_bytes(n - 1, width)?;
            out.reserve_exact(n);
            out.push(first);
            let mut previous = first;
            get(width, bytes, |offset| {
                previous = previous.wrapping_add(base.wrapping_add(offset as i64));
                out.push(previous);
            });
        } else {
            let base = self.i64()?;
            let bytes = self.column_bytes(n, width)?;
            out.reserve_exact(n);
            get(width, bytes, |offset| {
                out.push(base.wrapping_add(offset as i64))
            });
        }
        Ok(out)
    }

    /// A column of `n` u64 values.
    pub fn column_u64(&mut self, n: usize) -> Decoded<Vec<u64>> {
        Ok(self.column(n)?.into_iter().map(|v| v as u64).collect())
    }

    /// A column of `n` values that must lie in `0..=max`.
    pub fn column_bounded(&mut self, n: usize, max: u64) -> Decoded<Vec<u64>> {
        let values = self.column_u64(n)?;
        if values.iter().any(|&v| v > max) {
            return Err(DecodeError("a value is out of range"));
        }
        Ok(values)
    }

    fn column_bytes(&mut self, n: usize, width: u8) -> Decoded<&'a [u8]> {
        let len = n
            .checked_mul(usize::from(width))
            .ok_or(DecodeError("truncated snapshot"))?;
        self.raw(len)
    }
}

fn get(width: u8, bytes: &[u8], f: impl FnMut(u64)) {
    match width {
        1 => take::<1>(bytes, f),
        2 => take::<2>(bytes, f),
        3 => take::<3>(bytes, f),
        4 => take::<4>(bytes, f),
        5 => take::<5>(bytes, f),
        6 => take::<6>(bytes, f),
        7 => take::<7>(bytes, f),
        _ => take::<8>(bytes, f),
    }
}

fn take<const W: usize>(bytes: &[u8], mut f: impl FnMut(u64)) {
    for chunk in bytes.chunks_exact(W) {
        let mut v = [0u8; 8];
        v[..W].copy_from_slice(chunk);
        f(u64::from_le_bytes(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(values: &[i64]) -> (usize, Vec<i64>) {
        let mut w = Writer::default();
        w.column(values);
        w.u8(0xAB);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let back = r.column(values.len()).unwrap();
        assert_eq!(r.u8().unwrap(), 0xAB);
        r.finish().unwrap();
        (bytes.len() - 1, back)
    }

    #[test]
    fn sorted_positions_and_constant_columns_take_one_byte_per_value() {
        let positions: Vec<i64> = (0..100_000).collect();
        let (len, back) = round_trip(&positions);
        assert_eq!(back, positions);
        assert_eq!(len, 1 + 16 + (100_000 - 1));
        let constant = vec![i64::MIN; 1000];
        let (len, back) = round_trip(&constant);
        assert_eq!(back, constant);
        assert_eq!(len, 1 + 8 + 1000);
    }

    #[test]
    fn extreme_values_round_trip() {
        for values in [
            vec![i64::MIN, i64::MAX, 0, -1, 1],
            vec![i64::MAX, i64::MIN],
            vec![7],
            vec![],
        ] {
            assert_eq!(round_trip(&values).1, values);
        }
    }

    #[test]
    fn corrupt_columns_are_refused() {
        let mut w = Writer::default();
        w.column(&[1, 2, 3, 1000]);
        let bytes = w.finish();
        for cut in 0..bytes.len() {
            assert!(Reader::new(&bytes[..cut]).column(4).is_err());
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(Reader::new(&bad).column(4).is_err());
        let mut huge = Writer::default();
        huge.u64(u64::MAX);
        assert!(Reader::new(&huge.finish()).len_prefix().is_err());
    }

    proptest! {
        #[test]
        fn columns_round_trip(values in prop::collection::vec(any::<i64>(), 0..50), small in prop::collection::vec(-300i64..300, 0..50)) {
            prop_assert_eq!(round_trip(&values).1, values);
            prop_assert_eq!(round_trip(&small).1, small);
        }
    }
}
