//! Reading JSON lines from files or standard input in large blocks.
//!
//! The reader hands out blocks of whole lines straight from its buffer: one `read` system call
//! fills up to [`BLOCK`] bytes, the block ends at its last newline, and only the partial line
//! after it is moved to the front before the next read. There is no copy per line and no scan
//! per byte besides the newline search ([`records`], with `memchr`). UTF-8 is not checked here:
//! the decoder checks the strings it keeps (keys and mapped values), as serde_json does.

use std::io::{ErrorKind, Read};

/// Bytes read per block: large enough that system calls and per-block work vanish (≈ 9 000
/// quickstart events), small enough to stay in the L2 cache of most cores.
pub const BLOCK: usize = 1 << 20;

/// A block reader of lines.
pub struct LineReader {
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// Bytes of `buf` read and not yet handed out (`buf[start..end]`).
    start: usize,
    end: usize,
    done: bool,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("buffered", &(self.end - self.start))
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl LineReader {
    /// Reads from `reader`.
    pub fn new(reader: Box<dyn Read + Send>) -> Self {
        Self {
            reader,
            buf: vec![0; BLOCK],
            start: 0,
            end: 0,
            done: false,
        }
    }

    /// The next block of whole lines (each with its newline; the input's last line may lack
    /// one). An empty block means end of input. A block comes from at most one `read` beyond
    /// what a line longer than the buffer needs, so a slow standard input yields what it has.
    pub fn read_block(&mut self) -> std::io::Result<&[u8]> {
        // The partial line left by the previous block moves to the front.
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        loop {
            if self.done {
                let block = 0..self.end;
                self.start = self.end;
                return Ok(&self.buf[block]);
            }
            if self.end == self.buf.len() {
                // One line longer than the buffer: grow it.
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let scanned = self.end;
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.done = true,
                Ok(n) => self.end += n,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            if let Some(last) = memchr::memrchr(b'\n', &self.buf[scanned..self.end]) {
                self.start = scanned + last + 1;
                return Ok(&self.buf[..self.start]);
            }
        }
    }
}

/// Splits a block into records: lines without their line ending, blank lines skipped.
pub fn records(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = block;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let line = match memchr::memchr(b'\n', rest) {
            Some(n) => {
                let line = &rest[..n];
                rest = &rest[n + 1..];
                line
            }
            None => std::mem::take(&mut rest),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Some(line);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `chunk` bytes per call, like a pipe.
    struct Trickle(std::io::Cursor<Vec<u8>>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    fn all_records(input: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut reader = LineReader::new(Box::new(Trickle(
            std::io::Cursor::new(input.to_vec()),
            chunk,
        )));
        let mut out = Vec::new();
        loop {
            let block = reader.read_block().unwrap();
            if block.is_empty() {
                return out;
            }
            out.extend(records(block).map(<[u8]>::to_vec));
        }
    }

    #[test]
    fn lines_come_out_whole_however_the_input_is_cut() {
        let mut input = Vec::new();
        for i in 0..5_000 {
            input.extend_from_slice(format!("{{\"n\":{i}}}\r\n").as_bytes());
            if i % 7 == 0 {
                input.extend_from_slice(b"  \n");
            }
        }
        input.extend_from_slice(b"{\"last\":true}");
        let expected: Vec<Vec<u8>> = (0..5_000)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .chain([b"{\"last\":true}".to_vec()])
            .collect();
        for chunk in [1, 7, 4096, usize::MAX] {
            assert_eq!(all_records(&input, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_read_whole() {
        let long = vec![b'x'; BLOCK * 2 + 3];
        let input = [b"a\n".as_slice(), &long, b"\nb\n"].concat();
        assert_eq!(
            all_records(&input, usize::MAX),
            vec![b"a".to_vec(), long, b"b".to_vec()]
        );
    }
}
