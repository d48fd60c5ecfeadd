//! Watermarks: per input (a source partition of a task) the newest event time minus the bounded
//! out-of-orderness; the task's watermark is the least of them, never moving backwards.
//!
//! An input without events for the idle timeout (processing time) stops holding the watermark
//! back until it receives an event again; an input at its end (end of a file) never does.

/// Watermark tracking of one task.
#[derive(Clone, Debug)]
pub struct Watermarks {
    inputs: Vec<InputState>,
    bound: i64,
    idle_timeout: i64,
    current: i64,
}

#[derive(Clone, Copy, Debug)]
struct InputState {
    max_time: i64,
    last_active: i64,
    finished: bool,
}

impl Watermarks {
    /// Tracking of `inputs` inputs with out-of-orderness `bound` and `idle_timeout` (ms), started
    /// at processing time `now`.
    pub fn new(inputs: usize, bound: i64, idle_timeout: i64, now: i64) -> Self {
        let state = InputState {
            max_time: i64::MIN,
            last_active: now,
            finished: false,
        };
        Self {
            inputs: vec![state; inputs],
            bound,
            idle_timeout,
            current: i64::MIN,
        }
    }

    /// The task's watermark: every event at or before it is late.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Records an event of `input` at event time `time`, processing time `now`; returns the
    /// watermark if it advanced.
    #[inline]
    pub fn observe(&mut self, input: usize, time: i64, now: i64) -> Option<i64> {
        let state = &mut self.inputs[input];
        state.last_active = now;
        if time <= state.max_time {
            return None;
        }
        state.max_time = time;
        self.recompute(now)
    }

    /// Marks `input` as ended; returns the watermark if it advanced.
    pub fn finish(&mut self, input: usize, now: i64) -> Option<i64> {
        self.inputs[input].finished = true;
        self.recompute(now)
    }

    /// Re-evaluates idleness at processing time `now`; returns the watermark if it advanced.
    pub fn tick(&mut self, now: i64) -> Option<i64> {
        self.recompute(now)
    }

    /// Whether every input that has not ended is idle at processing time `now` (and one has not
    /// ended): the task's watermark then holds nobody back.
    pub fn all_idle(&self, now: i64) -> bool {
        let mut open = self.inputs.iter().filter(|s| !s.finished).peekable();
        open.peek().is_some()
            && open.all(|s| now.saturating_sub(s.last_active) >= self.idle_timeout)
    }

    /// Restores a watermark from a checkpoint.
    pub fn restore(&mut self, watermark: i64, max_times: &[i64]) {
        self.current = watermark;
        for (state, &max) in self.inputs.iter_mut().zip(max_times) {
            state.max_time = max;
        }
    }

    /// Newest event time per input, for checkpoints.
    pub fn max_times(&self) -> Vec<i64> {
        self.inputs.iter().map(|s| s.max_time).collect()
    }

    fn recompute(&mut self, now: i64) -> Option<i64> {
        let mut candidate = i64::MAX;
        let mut any_active = false;
        for state in &self.inputs {
            if state.finished {
                continue;
            }
            let idle = now.saturating_sub(state.last_active) >= self.idle_timeout;
            if idle {
                continue;
            }
            any_active = true;
            candidate = candidate.min(state.max_time.saturating_sub(self.bound));
        }
        let all_finished = self.inputs.iter().all(|s| s.finished);
        if !any_active && !all_finished {
            return None; // every input idle: hold the watermark
        }
        if candidate > self.current {
            self.current = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_the_least_input_minus_the_bound() {
        let mut wm = Watermarks::new(2, 10, 1_000, 0);
        assert_eq!(wm.observe(0, 100, 0), None, "input 1 has seen nothing yet");
        assert_eq!(wm.observe(1, 50, 0), Some(40));
        assert_eq!(wm.observe(1, 200, 0), Some(90));
        assert_eq!(
            wm.observe(0, 90, 0),
            None,
            "older events never move it back"
        );
    }

    #[test]
    fn an_idle_input_stops_holding_the_watermark_back_until_it_wakes() {
        let mut wm = Watermarks::new(2, 0, 1_000, 0);
        wm.observe(0, 100, 0);
        wm.observe(1, 10, 0);
        assert_eq!(wm.current(), 10);
        assert_eq!(wm.tick(999), None);
        assert_eq!(wm.observe(0, 500, 1_500), Some(500), "input 1 idle since 0");
        assert_eq!(
            wm.observe(1, 20, 1_600),
            None,
            "a woken input cannot move it back"
        );
        assert_eq!(
            wm.observe(0, 600, 1_700),
            None,
            "the woken input holds it at 20 < 500"
        );
        assert_eq!(wm.current(), 500);
    }

    #[test]
    fn finished_inputs_release_the_watermark_to_infinity() {
        let mut wm = Watermarks::new(2, 10, 1_000, 0);
        wm.observe(0, 100, 0);
        wm.observe(1, 100, 0);
        assert_eq!(wm.finish(0, 0), None);
        assert_eq!(wm.finish(1, 0), Some(i64::MAX));
    }
}
