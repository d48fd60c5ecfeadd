//! The one way out of an analytic, in a task and in the global stage alike: results (encoded
//! as JSON records, the result shape of docs/design.md) and partials for the global stage, counted as they go.

use crate::partials::Partial;
use crate::result::{Encoder, InternalRecord, Output, ResultRecord};
use crate::window::accumulate::Value;

/// Where analytic `analytic` (named `name`) of task `task` emits: borrowed from the task or the
/// stage for one call into the analytic.
#[derive(Debug)]
pub struct Emit<'a> {
    /// Index of the analytic in the plan.
    pub analytic: usize,
    /// Its name: the first part of each result's Kafka key.
    pub name: &'a str,
    /// The emitting task (`crate::global::GLOBAL_STAGE` for the stage), written into partials.
    pub task: u32,
    /// The result encoder (pipeline name, `emitted_at`, cached window bounds).
    pub encoder: &'a mut Encoder,
    /// Results emitted by this analytic, counted.
    pub results: &'a mut u64,
    /// Partials emitted by this analytic, counted.
    pub partials: &'a mut u64,
    /// The output drained by the caller.
    pub out: &'a mut Output,
}

impl Emit<'_> {
    /// Emits the result of `key`'s window `[start, end)` with `values` named `names`.
    pub fn values(
        &mut self,
        key: &str,
        start: i64,
        end: i64,
        revision: u32,
        names: &[String],
        values: &[Value],
    ) {
        let record = self.encoder.encode_values(
            self.analytic,
            self.name,
            Some(key),
            start,
            end,
            revision,
            |v| {
                for (name, value) in names.iter().zip(values) {
                    crate::result::write_field(v, name);
                    crate::result::write_value(v, *value);
                }
            },
        );
        self.push(record);
    }

    /// Emits a result whose values `write` appends as `,"name":value` pairs; `key` `None` is a
    /// per-window result (Kafka key `<analytic>/<window_start>`, no `key` field).
    pub fn result_with(
        &mut self,
        key: Option<&str>,
        start: i64,
        end: i64,
        revision: u32,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let record =
            self.encoder
                .encode_values(self.analytic, self.name, key, start, end, revision, write);
        self.push(record);
    }

    fn push(&mut self, record: ResultRecord) {
        *self.results += 1;
        self.out.results.push(record);
    }

    /// Emits this task's partial of `key`'s window `[start, end)`: `block` in the kind's own
    /// encoding, with the task's `revision` of it.
    pub fn partial(&mut self, key: &str, start: i64, end: i64, revision: u32, block: &[u8]) {
        *self.partials += 1;
        let partial = Partial {
            task: self.task,
            analytic: self.name,
            key,
            start,
            end,
            revision,
            block,
        };
        self.out.partials.push(InternalRecord {
            key: format!("{}/{}/{}", self.name, key, start),
            value: partial.encode(),
        });
    }
}
