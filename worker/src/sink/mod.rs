//! Sinks of local runs: results and dead letters as JSON lines to files, standard output or
//! standard error. (Kafka sinks live with the Kafka worker.)

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::result::Output;

/// A line-oriented destination.
pub struct LineSink {
    writer: Box<dyn Write + Send>,
    name: String,
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file could not be created.
    #[error("failed to create {path}")]
    Create {
        /// Path of the file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing failed.
    #[error("failed to write to {name}")]
    Write {
        /// Name of the sink.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl LineSink {
    /// A sink writing (truncating) the file at `path`.
    pub fn file(path: &Path) -> Result<Self, SinkError> {
        let file = File::create(path).map_err(|source| SinkError::Create {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            writer: Box::new(BufWriter::with_capacity(1 << 20, file)),
            name: path.display().to_string(),
        })
    }

    /// A sink writing to standard output.
    pub fn stdout() -> Self {
        Self {
            writer: Box::new(BufWriter::new(io::stdout())),
            name: "standard output".into(),
        }
    }

    /// A sink writing to standard error.
    pub fn stderr() -> Self {
        Self {
            writer: Box::new(io::stderr()),
            name: "standard error".into(),
        }
    }

    /// Writes one line.
    pub fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        self.writer
            .write_all(line)
            .and_then(|()| self.writer.write_all(b"\n"))
            .map_err(|source| SinkError::Write {
                name: self.name.clone(),
                source,
            })
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(|source| SinkError::Write {
            name: self.name.clone(),
            source,
        })
    }
}

/// The sinks of a run: each receives the results of its analytics; one dead-letter sink.
#[derive(Debug)]
pub struct Sinks {
    /// (analytic indices, or `None` for all; sink).
    pub results: Vec<(Option<Vec<usize>>, LineSink)>,
    /// Dead letters.
    pub dead_letter: LineSink,
}

impl Sinks {
    /// Writes and clears `out`; `pipeline` and `at` go into dead-letter records.
    pub fn write(&mut self, out: &mut Output, pipeline: &str, at: &str) -> Result<(), SinkError> {
        for record in &out.results {
            for (analytics, sink) in &mut self.results {
                if analytics
                    .as_ref()
                    .is_none_or(|a| a.contains(&record.analytic))
                {
                    sink.write_line(&record.value)?;
                }
            }
        }
        for dead in &out.dead_letters {
            self.dead_letter.write_line(&dead.to_json(pipeline, at))?;
        }
        // A local run is one task: it has no global analytics, so no partials to write.
        out.clear();
        Ok(())
    }

    /// Flushes every sink.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        for (_, sink) in &mut self.results {
            sink.flush()?;
        }
        self.dead_letter.flush()
    }
}
