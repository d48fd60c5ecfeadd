//! The epochs' observations, held until an epoch is complete, then handed to the learner in
//! one fixed order (module docs of `crate::analytics::model`).

use std::collections::BTreeMap;

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::{Learner, Observation};
use crate::analytics::{Emit, Merge};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// One epoch's observations as they arrived, with where each is by identity (user, time,
/// tag).
#[derive(Debug, Default)]
struct Epoch {
    items: Vec<Observation>,
    index: HashTable<usize>,
}

/// The hash of an observation's identity.
fn id_hash(user: &str, time: i64, tag: u8) -> u64 {
    FxBuildHasher.hash_one((user, time, tag))
}

/// The learner's order of observations: by a hash of the user (cheap to compare, the same
/// on every machine), then the user, time and tag.
fn order(x: &Observation, y: &Observation) -> std::cmp::Ordering {
    user_hash(&x.user)
        .cmp(&user_hash(&y.user))
        .then_with(|| (&x.user, x.time, x.tag).cmp(&(&y.user, y.time, y.tag)))
}

/// The hash of a user that orders observations.
pub fn user_hash(user: &str) -> u64 {
    FxBuildHasher.hash_one(user)
}

/// The observations of epochs not yet learned, and the learner.
#[derive(Debug)]
pub struct Driver {
    learner: Box<dyn Learner>,
    lateness: i64,
    pending: BTreeMap<i64, Epoch>,
    /// The vector of the epoch learned last, emptied: the next epoch's (an epoch's vector
    /// is large; a fresh one each time costs page faults).
    spare: Vec<Observation>,
    /// Observations held, and their payload bytes (for `stats`).
    held: usize,
    held_bytes: usize,
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
            spare: Vec::new(),
            held: 0,
            held_bytes: 0,
            learned: i64::MIN,
            epochs: 0,
        }
    }

    /// Takes an observation (from any task, in any order): a replay of one held (same
    /// identity and bytes) is stale, one with the same identity and other bytes replaces it.
    pub fn observe(&mut self, o: Observation) -> Merge {
        if o.epoch <= self.learned {
            return Merge::Late;
        }
        let spare = &mut self.spare;
        let epoch = self.pending.entry(o.epoch).or_insert_with(|| Epoch {
            items: std::mem::take(spare),
            index: HashTable::new(),
        });
        let hash = id_hash(&o.user, o.time, o.tag);
        let items = &epoch.items;
        let same = |i: &usize| {
            let held = &items[*i];
            held.user == o.user && held.time == o.time && held.tag == o.tag
        };
        match epoch.index.find(hash, same).copied() {
            Some(i) if epoch.items[i].payload == o.payload => Merge::Stale,
            Some(i) => {
                self.held_bytes = self.held_bytes + o.payload.len() - epoch.items[i].payload.len();
                epoch.items[i] = o;
                Merge::Merged
            }
            None => {
                self.held += 1;
                self.held_bytes += o.payload.len() + o.user.len();
                let at = epoch.items.len();
                let items = &epoch.items;
                epoch.index.insert_unique(hash, at, |i| {
                    let held = &items[*i];
                    id_hash(&held.user, held.time, held.tag)
                });
                epoch.items.push(o);
                Merge::Merged
            }
        }
    }

    /// Learns every epoch complete at watermark `wm` (every task's), in order.
    pub fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        let complete = wm.saturating_sub(self.lateness);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > complete {
                break;
            }
            let (end, epoch) = entry.remove_entry();
            let mut batch = epoch.items;
            batch.sort_unstable_by(order);
            self.held -= batch.len();
            self.held_bytes -= batch
                .iter()
                .map(|o| o.payload.len() + o.user.len())
                .sum::<usize>();
            self.learner.epoch(end, &batch, out);
            batch.clear();
            if batch.capacity() > self.spare.capacity() {
                self.spare = batch;
            }
            self.learned = end;
            self.epochs += 1;
        }
    }

    /// Appends the state (observations sorted, so equal states encode equally).
    pub fn write(&self, w: &mut Writer) {
        w.i64(self.learned);
        w.u64(self.epochs);
        w.len_prefix(self.held);
        for (end, epoch) in &self.pending {
            let mut items: Vec<&Observation> = epoch.items.iter().collect();
            items.sort_unstable_by(|a, b| order(a, b));
            for o in items {
                w.i64(*end);
                w.str(&o.user);
                w.i64(o.time);
                w.u8(o.tag);
                w.len_prefix(o.payload.len());
                w.raw(&o.payload);
            }
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
            if epoch <= self.learned {
                return Err(DecodeError("an observation of an epoch already learned"));
            }
            self.observe(Observation {
                epoch,
                user,
                time,
                tag,
                payload,
            });
        }
        self.learner.read(r)
    }

    /// The learner's gauges, with the epochs learned and the observations waiting.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        let mut g = self.learner.gauges();
        g.push(("epochs_learned".into(), self.epochs as f64));
        g.push(("observations_pending".into(), self.held as f64));
        g
    }

    /// Sizes: pending observations, and the model.
    pub fn stats(&self) -> WindowStats {
        let model = self.learner.stats();
        WindowStats {
            keys: model.keys,
            windows: model.windows + self.held,
            bytes: model.bytes + self.held * 120 + 2 * self.held_bytes,
        }
    }
}
