//! One analytic as a task runs it: what every kind shares (inputs, key, filter, window,
//! lateness, whether it is global) around its kind's compiled plan.

use std::sync::Arc;

use super::KindPlan;
use crate::expr::Expr;
use crate::window::accumulate::Input;
use crate::window::WindowKind;

/// One analytic as a task runs it: what every kind has, and its kind (`crate::analytics`).
#[derive(Debug)]
pub struct AnalyticPlan {
    /// Analytic name.
    pub name: String,
    /// Pipeline source index of each input.
    pub inputs: Vec<usize>,
    /// Key accessor per input.
    pub key: Vec<Input>,
    /// Name of the key field.
    pub key_field: String,
    /// Filter over events (aggregate and top-N analytics).
    pub filter: Option<Expr>,
    /// Window kind.
    pub window: WindowKind,
    /// Allowed lateness, ms.
    pub lateness: i64,
    /// Keyed by something other than the partition key, or always global by kind, over more
    /// than one task: tasks emit partials that the global stage merges (`crate::global`). Set
    /// by `Plan::for_tasks` (`crate::plan`).
    pub global: bool,
    /// The kind: how its task and global-stage states are made.
    pub kind: Arc<dyn KindPlan>,
}

impl AnalyticPlan {
    /// Whether a window of this analytic closes, or passes its allowed lateness, at a
    /// watermark in `(old, new]`: when the global stage must hear of a task's watermark.
    pub fn closes_between(&self, old: i64, new: i64) -> bool {
        if old == i64::MIN || new == i64::MAX {
            return new > old;
        }
        // A window whose result is final only some time after its end (a funnel's conversion
        // window) closes when the watermark passes that time.
        // Window ends are shifted by the kind's offset, too.
        let shift = self.kind.finality_delay() + self.kind.window_offset();
        let (old, new) = (old.saturating_sub(shift), new.saturating_sub(shift));
        let (size, slide) = match self.window {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Sliding { size, slide } => (size, slide),
            WindowKind::Session { .. } => return new > old,
        };
        // The first window end after `t`.
        let next_end = |t: i64| ((t - size).div_euclid(slide) + 1) * slide + size;
        next_end(old) <= new
            || next_end(old.saturating_sub(self.lateness)) <= new.saturating_sub(self.lateness)
    }
}
