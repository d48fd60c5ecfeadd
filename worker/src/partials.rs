//! Records of the partials topic: what tasks tell the global stage.
//!
//! Two kinds, both binary (the topic is internal), each starting with a format byte and its
//! kind:
//!
//! - a **partial**: task `t`'s accumulator block of one key-window of a global analytic, with
//!   the task's revision of it (0 when the window closed in the task, then 1, 2, … for late
//!   updates; each revision holds everything the task has seen of the window, not a delta);
//! - a **progress** mark: task `t`'s watermark, and whether every input of the task is idle.
//!
//! Task `t` writes all its records to one partition of the topic (`t mod` its partition
//! count), in the order the task produced them, so a progress mark reaches the global stage
//! after every partial the task emitted before its watermark got there.

use crate::window::codec::{DecodeError, Reader, Writer};

/// Format of the records written now.
const FORMAT: u8 = 1;
const PARTIAL: u8 = 1;
const PROGRESS: u8 = 2;

/// One record of the partials topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A task's share of a key-window.
    Partial(Partial<'a>),
    /// A task's watermark.
    Progress(Progress),
}

/// Task `task`'s accumulator block of one key-window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial<'a> {
    /// The task that emitted it.
    pub task: u32,
    /// The analytic, by name.
    pub analytic: &'a str,
    /// The key.
    pub key: &'a str,
    /// Window start, epoch ms.
    pub start: i64,
    /// Window end, epoch ms.
    pub end: i64,
    /// The task's revision of this key-window.
    pub revision: u32,
    /// The block, as `AccLayout::write_block` wrote it.
    pub block: &'a [u8],
}

/// Task `task`'s watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The task.
    pub task: u32,
    /// Its watermark (epoch ms; `i64::MAX` once its input ended).
    pub watermark: i64,
    /// Every input of the task is idle: its watermark holds nobody back.
    pub idle: bool,
}

impl Partial<'_> {
    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.key.len() + self.block.len());
        w.u8(FORMAT);
        w.u8(PARTIAL);
        w.u64(u64::from(self.task));
        w.str(self.analytic);
        w.str(self.key);
        w.i64(self.start);
        w.i64(self.end);
        w.u64(u64::from(self.revision));
        w.raw(self.block);
        w.finish()
    }
}

impl Progress {
    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(19);
        w.u8(FORMAT);
        w.u8(PROGRESS);
        w.u64(u64::from(self.task));
        w.i64(self.watermark);
        w.u8(u8::from(self.idle));
        w.finish()
    }
}

impl<'a> Record<'a> {
    /// Reads a record's value; refuses other formats and truncated or trailing bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != FORMAT {
            return Err(DecodeError("a partials record of an unknown format"));
        }
        let kind = r.u8()?;
        let task = u32::try_from(r.u64()?).map_err(|_| DecodeError("a task beyond u32"))?;
        match kind {
            PARTIAL => {
                let analytic = r.str()?;
                let key = r.str()?;
                let start = r.i64()?;
                let end = r.i64()?;
                let revision =
                    u32::try_from(r.u64()?).map_err(|_| DecodeError("a revision beyond u32"))?;
                let block = r.raw(r.remaining())?;
                Ok(Record::Partial(Partial {
                    task,
                    analytic,
                    key,
                    start,
                    end,
                    revision,
                    block,
                }))
            }
            PROGRESS => {
                let watermark = r.i64()?;
                let idle = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("an idle flag that is neither 0 nor 1")),
                };
                r.finish()?;
                Ok(Record::Progress(Progress {
                    task,
                    watermark,
                    idle,
                }))
            }
            _ => Err(DecodeError("a partials record of an unknown kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damaged_ones_are_refused() {
        let partial = Partial {
            task: 7,
            analytic: "hot_products",
            key: "p-\"1",
            start: -3_600_000,
            end: 0,
            revision: 2,
            block: &[1, 2, 3, 4],
        };
        let bytes = partial.encode();
        assert_eq!(
            Record::decode(&bytes).unwrap(),
            Record::Partial(partial.clone())
        );
        let progress = Progress {
            task: 3,
            watermark: i64::MAX,
            idle: true,
        };
        let marks = progress.encode();
        assert_eq!(Record::decode(&marks).unwrap(), Record::Progress(progress));
        for cut in 0..marks.len() {
            assert!(Record::decode(&marks[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = marks.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
        // A partial's block is the rest of the record: cuts inside the header are refused.
        for cut in 0..bytes.len() - partial.block.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut newer = bytes.clone();
        newer[0] = FORMAT + 1;
        assert!(Record::decode(&newer).is_err());
        assert!(Record::decode(b"{\"json\": true}").is_err());
    }
}
