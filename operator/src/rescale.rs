//! Rescale: the task assignment the workers run, and how a change of parallelism moves task state
//! between worker pods without losing or doubling it (docs/design.md, delivery, checkpoints and recovery, `docs/rescale.md`). Pure.
//!
//! The workers own tasks `t mod N == i` under an assignment epoch; each pod's checkpoints are on
//! its own volume. A rescale from `N` to `M` is a *hand-off* in steps, each a new epoch written
//! into `runtime.yaml` (which rolls the pods through the config hash):
//!
//! 1. **Release** (only when needed, see [`needs_release`]): every worker runs just the tasks it
//!    owns under both assignments; the tasks that move stop at a final checkpoint, which their
//!    old owner serves on `GET /v1/tasks/{t}/snapshot`.
//! 2. **Acquire**: every worker runs `t mod M == i`; a worker that gains a task fetches the
//!    newest checkpoint from its earlier owners over the headless Service and restores it before
//!    it reports ready. Replicas stay at `max(N, M)`, so every earlier owner still serves.
//! 3. **Complete**: once the StatefulSet reports every pod ready on the acquire step's revision,
//!    replicas drop to `M` (no new epoch, no roll).
//!
//! A step advances only when the StatefulSet runs exactly the config of the current step and
//! every pod of it is ready. The current step is read back from the StatefulSet annotation
//! [`ANNOTATION_ASSIGNMENT`] (a live read, written atomically with the pod template) and from the
//! pipeline status, whichever has the newer epoch, so a stale status in the informer cache or a
//! failed status write never takes a step back. A change of parallelism during a hand-off starts
//! a new one that also asks every owner since the last completed assignment.

use serde::{Deserialize, Serialize};
use tidemark_api::{HandoffStatus, HandoffStep, MarketingPipelineStatus};

/// StatefulSet annotation: the assignment its pod template carries, as JSON ([`Assignment`]).
pub const ANNOTATION_ASSIGNMENT: &str = "tidemark.dev/assignment";

/// The assignment the workers are told to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Assignment epoch; starts at 1, raised by every hand-off step but the last.
    pub epoch: i64,
    /// Workers that own tasks (`t mod parallelism == i`).
    pub parallelism: i32,
    /// The last hand-off, if the pipeline was ever rescaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffStatus>,
}

impl Assignment {
    /// Pods the StatefulSet keeps: during a hand-off every earlier owner as well.
    pub fn replicas(&self) -> i32 {
        match &self.handoff {
            Some(h) if h.step != HandoffStep::Complete => h
                .from
                .iter()
                .copied()
                .chain([self.parallelism])
                .max()
                .unwrap_or(self.parallelism),
            _ => self.parallelism,
        }
    }

    /// Whether a hand-off is under way.
    pub fn in_progress(&self) -> bool {
        self.handoff
            .as_ref()
            .is_some_and(|h| h.step != HandoffStep::Complete)
    }

    /// The parallelisms whose owners may hold moved tasks (`runtime.yaml`'s
    /// `previousParallelism`); kept after completion so the worker config does not change.
    pub fn previous(&self) -> &[i32] {
        self.handoff.as_ref().map_or(&[], |h| h.from.as_slice())
    }

    /// Whether the workers are in a release step.
    pub fn release(&self) -> bool {
        self.handoff
            .as_ref()
            .is_some_and(|h| h.step == HandoffStep::Release)
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses an annotation value; `None` when absent or unreadable.
    pub fn from_annotation(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The assignment a status describes, if it has one.
    pub fn from_status(status: &MarketingPipelineStatus) -> Option<Self> {
        Some(Self {
            epoch: status.assignment_epoch?,
            parallelism: status.parallelism?,
            handoff: status.handoff.clone(),
        })
    }
}

/// The assignment in effect: the newer by epoch of the StatefulSet's record and the status
/// (on a tie the StatefulSet's, which is read live).
pub fn current(
    status: Option<&MarketingPipelineStatus>,
    recorded: Option<Assignment>,
) -> Option<Assignment> {
    let from_status = status.and_then(Assignment::from_status);
    match (recorded, from_status) {
        (Some(r), Some(s)) => Some(if s.epoch > r.epoch { s } else { r }),
        (r, s) => r.or(s),
    }
}

/// What this reconcile decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    /// The assignment to write.
    pub assignment: Assignment,
    /// Set when this reconcile started a rescale: the parallelism before.
    pub rescaled_from: Option<i32>,
    /// Set when this reconcile moved a hand-off to its next step.
    pub advanced: Option<HandoffStep>,
}

impl Scale {
    /// Workers in effect (`status.parallelism`, `runtime.yaml`).
    pub fn parallelism(&self) -> i32 {
        self.assignment.parallelism
    }

    /// The assignment epoch.
    pub fn epoch(&self) -> i64 {
        self.assignment.epoch
    }
}

/// The next assignment for `desired` workers given the one in effect and whether the
/// StatefulSet has finished its current step (every pod ready on the current config).
/// Idempotent: fed its own output and the same progress it decides the same.
pub fn plan(desired: i32, current: Option<&Assignment>, step_done: bool) -> Scale {
    let desired = desired.max(1);
    let Some(current) = current else {
        return Scale {
            assignment: Assignment {
                epoch: 1,
                parallelism: desired,
                handoff: None,
            },
            rescaled_from: None,
            advanced: None,
        };
    };
    let unchanged = Scale {
        assignment: current.clone(),
        rescaled_from: None,
        advanced: None,
    };
    if desired != current.parallelism {
        // A new hand-off. Owners of every assignment since the last completed one may hold
        // state: the completed one, and each one started since.
        let mut from = match &current.handoff {
            Some(h) if h.step != HandoffStep::Complete => h.from.clone(),
            _ => Vec::new(),
        };
        if !from.contains(&current.parallelism) {
            from.push(current.parallelism);
        }
        let step = if needs_release(&from, desired) {
            HandoffStep::Release
        } else {
            HandoffStep::Acquire
        };
        return Scale {
            assignment: Assignment {
                epoch: current.epoch + 1,
                parallelism: desired,
                handoff: Some(HandoffStatus {
                    from,
                    to: desired,
                    step,
                }),
            },
            rescaled_from: Some(current.parallelism),
            advanced: Some(step),
        };
    }
    let Some(handoff) = &current.handoff else {
        return unchanged;
    };
    if !step_done {
        return unchanged;
    }
    let (step, epoch) = match handoff.step {
        HandoffStep::Release => (HandoffStep::Acquire, current.epoch + 1),
        HandoffStep::Acquire => (HandoffStep::Complete, current.epoch),
        HandoffStep::Complete => return unchanged,
    };
    Scale {
        assignment: Assignment {
            epoch,
            parallelism: current.parallelism,
            handoff: Some(HandoffStatus {
                step,
                ..handoff.clone()
            }),
        },
        rescaled_from: None,
        advanced: Some(step),
    }
}

/// Whether the acquire step alone could deadlock the rolling update, so a release step must
/// come first: the StatefulSet restarts pods from the highest ordinal down, one at a time, and
/// waits for each to be ready. A gaining worker is ready only once it has fetched its moved
/// tasks, which an earlier owner serves only after it stopped them, i.e. after its own restart.
/// So every task that moves must move from a higher ordinal to a lower one (a scale-down by a
/// divisor, e.g. 4 → 2 or 2 → 1); otherwise (any scale-up, or e.g. 3 → 2) the release step
/// stops moved tasks everywhere first. Checked over one period of the assignments (their least
/// common multiple of tasks); when that is very large the answer is conservatively yes.
pub fn needs_release(from: &[i32], to: i32) -> bool {
    const LIMIT: u64 = 1 << 20;
    let parallelisms: Vec<u64> = from
        .iter()
        .chain([&to])
        .map(|p| u64::try_from((*p).max(1)).unwrap_or(1))
        .collect();
    let mut period = 1u64;
    for p in &parallelisms {
        period = period / gcd(period, *p) * p;
        if period > LIMIT {
            return true;
        }
    }
    let to = u64::try_from(to.max(1)).unwrap_or(1);
    (0..period).any(|t| {
        let owner = t % to;
        from.iter().any(|p| {
            let old = t % u64::try_from((*p).max(1)).unwrap_or(1);
            old < owner
        })
    })
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(parallelism: i32, epoch: i64) -> Assignment {
        Assignment {
            epoch,
            parallelism,
            handoff: None,
        }
    }

    fn step(a: &Assignment) -> Option<HandoffStep> {
        a.handoff.as_ref().map(|h| h.step)
    }

    #[test]
    fn a_new_pipeline_starts_at_epoch_one_without_a_hand_off() {
        let scale = plan(3, None, false);
        assert_eq!(scale.assignment, settled(3, 1));
        assert_eq!(scale.assignment.replicas(), 3);
        assert_eq!(
            plan(3, Some(&scale.assignment), true).assignment,
            settled(3, 1)
        );
    }

    #[test]
    fn scaling_down_by_a_divisor_acquires_then_completes_and_only_then_removes_pods() {
        let start = settled(2, 1);
        let acquire = plan(1, Some(&start), false);
        assert_eq!(acquire.rescaled_from, Some(2));
        let a = &acquire.assignment;
        assert_eq!(
            (a.epoch, a.parallelism, step(a)),
            (2, 1, Some(HandoffStep::Acquire))
        );
        assert_eq!(
            a.replicas(),
            2,
            "the earlier owner keeps running and serves"
        );
        assert_eq!(a.previous(), &[2]);
        assert!(!a.release());
        // Not ready yet: nothing changes, however often it is asked.
        assert_eq!(plan(1, Some(a), false).assignment, *a);
        let done = plan(1, Some(a), true);
        let d = &done.assignment;
        assert_eq!((d.epoch, step(d)), (2, Some(HandoffStep::Complete)));
        assert_eq!(done.advanced, Some(HandoffStep::Complete));
        assert_eq!(d.replicas(), 1);
        assert_eq!(
            d.previous(),
            &[2],
            "the worker config stays the same: no roll"
        );
        assert_eq!(plan(1, Some(d), true).assignment, *d);
        assert!(!d.in_progress());
    }

    #[test]
    fn scaling_up_releases_first_then_acquires_with_the_new_pods() {
        let start = settled(1, 4);
        let release = plan(2, Some(&start), false).assignment;
        assert_eq!(
            (release.epoch, step(&release)),
            (5, Some(HandoffStep::Release))
        );
        assert!(release.release());
        assert_eq!(release.replicas(), 2);
        assert_eq!(plan(2, Some(&release), false).assignment, release);
        let acquire = plan(2, Some(&release), true);
        assert_eq!(acquire.advanced, Some(HandoffStep::Acquire));
        assert_eq!(
            (acquire.assignment.epoch, step(&acquire.assignment)),
            (6, Some(HandoffStep::Acquire))
        );
        let done = plan(2, Some(&acquire.assignment), true).assignment;
        assert_eq!((done.epoch, step(&done)), (6, Some(HandoffStep::Complete)));
        assert_eq!(done.replicas(), 2);
    }

    #[test]
    fn each_rescale_raises_the_epoch_once_per_step() {
        let mut a = settled(4, 1);
        let mut epochs = vec![a.epoch];
        for desired in [2, 1, 3] {
            a = plan(desired, Some(&a), false).assignment;
            while a.in_progress() {
                a = plan(desired, Some(&a), true).assignment;
            }
            epochs.push(a.epoch);
        }
        // 4 → 2 and 2 → 1 by divisors: one step each; 1 → 3: release + acquire.
        assert_eq!(epochs, vec![1, 2, 3, 5]);
    }

    #[test]
    fn a_change_during_a_hand_off_asks_every_owner_since_the_last_completed_assignment() {
        let a = plan(2, Some(&settled(3, 7)), false).assignment;
        let h = a.handoff.as_ref().unwrap();
        assert_eq!((h.from.clone(), h.step), (vec![3], HandoffStep::Release));
        let retarget = plan(4, Some(&a), false);
        let b = &retarget.assignment;
        let h = b.handoff.as_ref().unwrap();
        assert_eq!((b.epoch, h.from.clone(), h.to), (9, vec![3, 2], 4));
        assert_eq!(b.replicas(), 4);
        // Back to a completed one's parallelism: still a hand-off from both.
        let back = plan(3, Some(b), false).assignment;
        assert_eq!(back.handoff.as_ref().unwrap().from, vec![3, 2, 4]);
        assert_eq!(back.replicas(), 4);
    }

    #[test]
    fn the_newer_record_wins_so_a_stale_status_never_takes_a_step_back() {
        let recorded = plan(1, Some(&settled(2, 1)), false).assignment;
        let stale = MarketingPipelineStatus {
            parallelism: Some(2),
            assignment_epoch: Some(1),
            ..MarketingPipelineStatus::default()
        };
        assert_eq!(
            current(Some(&stale), Some(recorded.clone())),
            Some(recorded.clone())
        );
        let complete = plan(1, Some(&recorded), true).assignment;
        let status = MarketingPipelineStatus {
            parallelism: Some(1),
            assignment_epoch: Some(2),
            handoff: recorded.handoff.clone(),
            ..MarketingPipelineStatus::default()
        };
        assert_eq!(
            current(Some(&status), Some(complete.clone())),
            Some(complete),
            "a tie goes to the StatefulSet's record"
        );
        assert_eq!(
            current(Some(&stale), None),
            Some(settled(2, 1)),
            "without a StatefulSet, the status"
        );
        assert_eq!(current(None, None), None);
        let text = recorded.to_annotation();
        assert_eq!(Assignment::from_annotation(&text), Some(recorded));
        assert_eq!(Assignment::from_annotation("{"), None);
    }

    #[test]
    fn a_release_step_is_needed_unless_every_moved_task_goes_to_a_lower_ordinal() {
        assert!(!needs_release(&[2], 1));
        assert!(!needs_release(&[4], 2));
        assert!(!needs_release(&[6], 3));
        assert!(needs_release(&[1], 2), "scale-up");
        assert!(needs_release(&[2], 4));
        assert!(needs_release(&[3], 2), "task 3: worker 0 → worker 1");
        assert!(needs_release(&[4, 3], 2));
        assert!(!needs_release(&[2], 2));
    }
}
