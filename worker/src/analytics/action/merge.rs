//! An action's state in the global stage: the tasks' candidates and outcomes, decided together
//! ([`super::decide::Decider`]) as the stage's watermark (every task's) moves.

use std::sync::Arc;

use super::decide::{Candidate, Decider, Outcome};
use super::task::{CANDIDATE, OUTCOME};
use super::ActionPlan;
use crate::analytics::pattern::state::read_opt;
use crate::analytics::{Emit, GlobalAnalytic, Merge};
use crate::partials::Partial;
use crate::restore::RestoreError;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// An action's global-stage state.
#[derive(Debug)]
pub struct ActionMerge {
    decider: Decider,
}

impl ActionMerge {
    /// Empty state of `plan`.
    pub fn new(plan: Arc<ActionPlan>) -> Self {
        Self {
            decider: Decider::new(plan),
        }
    }

    fn take(&mut self, p: &Partial<'_>) -> Result<Merge, DecodeError> {
        let mut r = Reader::new(p.block);
        let merge = match r.u8()? {
            CANDIDATE => {
                let completion = r.i64()?;
                let score = f64::from_bits(r.u64()?);
                let captured = read_opt(&mut r)?;
                self.decider.candidate(Candidate {
                    user: p.key.into(),
                    time: p.start,
                    completion,
                    score,
                    captured,
                })
            }
            OUTCOME => {
                let converted = r.u8()? != 0;
                let revenue = f64::from_bits(r.u64()?);
                self.decider
                    .outcome(p.key, p.start, Outcome { converted, revenue })
            }
            _ => return Err(DecodeError("an unknown action block")),
        };
        r.finish()?;
        Ok(merge)
    }
}

impl GlobalAnalytic for ActionMerge {
    fn partial(&mut self, p: &Partial<'_>, _wm: i64, _out: &mut Emit<'_>) -> Merge {
        self.take(p).unwrap_or(Merge::Malformed)
    }

    fn advance(&mut self, _old: i64, wm: i64, out: &mut Emit<'_>) {
        self.decider.advance(wm, out);
    }

    fn write(&self, w: &mut Writer) {
        self.decider.write(w);
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), RestoreError> {
        Ok(self.decider.read(r)?)
    }

    fn decisions(&self) -> [u64; 4] {
        self.decider.counts
    }

    fn stats(&self) -> WindowStats {
        let (waiting, reports) = self.decider.sizes();
        WindowStats {
            keys: waiting,
            windows: reports,
            bytes: waiting * 96 + reports * 160,
        }
    }
}
