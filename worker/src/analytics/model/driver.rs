//! The epochs' observations, held until an epoch is complete, then handed to the learner in
//! one fixed order (module docs of `crate::analytics::model`).

use std::collections::BTreeMap;

use super::{Learner, Observation};
use crate::analytics::{Emit, Merge};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// Key of an observation: epoch end, user, time, tag.
type Key = (i64, Box<str>, i64, u8);

/// The observations of epochs not yet learned, and the learner.
#[derive(Debug)]
pub struct Driver {
    learner: Box<dyn Learner>,
    lateness: i64,
    pending: BTreeMap<Key, Vec<u8>>,
    /// Every epoch ending at or before this was learned.
    learned: i64,
    /// Epochs learned.
    pub epochs: u64,
}

impl Driver {
    /// A driver of `learner`; an epoch is complete once the watermark passes its end plus
    /// `lateness`.
    pub fn new(learner: Box<dyn Learner>, lateness: i64) -> Self {
        Self {
            learner,
            lateness,
            pending: BTreeMap::new(),
            learned: i64::MIN,
            epochs: 0,
        }
    }

    /// Takes an observation (from any task, in any order; a replay is recognised).
    pub fn observe(&mut self, o: Observation) -> Merge {
        if o.epoch <= self.learned {
            return Merge::Late;
        }
        let key = (o.epoch, o.user, o.time, o.tag);
        match self.pending.get_mut(&key) {
            Some(held) if *held == o.payload => Merge::Stale,
            Some(held) => {
                *held = o.payload;
                Merge::Merged
            }
            None => {
                self.pending.insert(key, o.payload);
                Merge::Merged
            }
        }
    }

    /// Learns every epoch complete at watermark `wm` (every task's), in order.
    pub fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        let complete = wm.saturating_sub(self.lateness);
        let mut batch = Vec::new();
        while let Some(((epoch, ..), _)) = self.pending.first_key_value() {
            let epoch = *epoch;
            if epoch > complete {
                break;
            }
            batch.clear();
            while let Some(entry) = self.pending.first_entry() {
                if entry.key().0 != epoch {
                    break;
                }
                let ((_, user, time, tag), payload) = entry.remove_entry();
                batch.push(Observation {
                    epoch,
                    user,
                    time,
                    tag,
                    payload,
                });
            }
            self.learner.epoch(epoch, &batch, out);
            self.learned = epoch;
            self.epochs += 1;
        }
    }

    /// Appends the state.
    pub fn write(&self, w: &mut Writer) {
        w.i64(self.learned);
        w.u64(self.epochs);
        w.len_prefix(self.pending.len());
        for ((epoch, user, time, tag), payload) in &self.pending {
            w.i64(*epoch);
            w.str(user);
            w.i64(*time);
            w.u8(*tag);
            w.len_prefix(payload.len());
            w.raw(payload);
        }
        self.learner.write(w);
    }

    /// Loads what [`Driver::write`] wrote into this fresh driver.
    pub fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.learned = r.i64()?;
        self.epochs = r.u64()?;
        for _ in 0..r.len_prefix()? {
            let epoch = r.i64()?;
            let user: Box<str> = r.str()?.into();
            let time = r.i64()?;
            let tag = r.u8()?;
            let n = r.len_prefix()?;
            let payload = r.raw(n)?.to_vec();
            self.pending.insert((epoch, user, time, tag), payload);
        }
        self.learner.read(r)
    }

    /// The learner's gauges, with the epochs learned and the observations waiting.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        let mut g = self.learner.gauges();
        g.push(("epochs_learned".into(), self.epochs as f64));
        g.push(("observations_pending".into(), self.pending.len() as f64));
        g
    }

    /// Sizes: pending observations, and the model.
    pub fn stats(&self) -> WindowStats {
        let model = self.learner.stats();
        let pending: usize = self
            .pending
            .iter()
            .map(|((_, u, _, _), p)| 64 + u.len() + p.len())
            .sum();
        WindowStats {
            keys: model.keys,
            windows: model.windows + self.pending.len(),
            bytes: model.bytes + pending,
        }
    }
}
