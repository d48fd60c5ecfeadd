//! Reading JSON lines in batches from files or standard input.

use std::io::{BufRead, BufReader, Read};

/// A batched line reader: fills a buffer with whole lines, so a batch is decoded without copying.
pub struct LineReader {
    reader: BufReader<Box<dyn Read + Send>>,
    done: bool,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl LineReader {
    /// Reads from `reader`.
    pub fn new(reader: Box<dyn Read + Send>) -> Self {
        Self {
            reader: BufReader::with_capacity(1 << 20, reader),
            done: false,
        }
    }

    /// Appends up to `max_lines` lines to `buf` (each with its newline, if it had one);
    /// returns how many. 0 means end of input.
    pub fn read_batch(&mut self, buf: &mut Vec<u8>, max_lines: usize) -> std::io::Result<usize> {
        let mut lines = 0;
        while lines < max_lines && !self.done {
            let n = self.reader.read_until(b'\n', buf)?;
            if n == 0 {
                self.done = true;
            } else {
                lines += 1;
            }
        }
        Ok(lines)
    }
}

/// Splits a batch into records: lines without their line ending, blank lines skipped.
pub fn records(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    batch
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}
