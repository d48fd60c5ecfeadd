//! The pure core of a funnel: which units a user's events make in one window, and how far each
//! got. No state, no I/O: the task calls [`units`] when a window becomes final (and again for a
//! user whose late event changes a final window).
//!
//! Rules (also in `docs/analytics.md`):
//!
//! - Events are taken in event-time order, events of equal time in arrival order.
//! - A unit enters at its first step-1 event inside the window `[start, end)`: per window a
//!   user is one unit; with sessions, each session is one unit per window.
//! - From the entry, later steps are matched among the unit's later events whose time is at
//!   most `entry + conversion window`: `ordered` takes the next step whenever it comes, `strict`
//!   stops at the first event that is not the next step, `any` reaches step k once steps 1..k
//!   have all occurred, in any order.
//! - An exclusion between steps a and b stops a unit that has reached a but not b: it keeps
//!   what it reached. An event that is both an exclusion and the next step counts as the
//!   exclusion.
//! - Sessions by field: a unit sees only its session's events. Sessions by gap: a unit sees the
//!   events after its entry until two consecutive events of the user are more than the gap
//!   apart; two entries in one window are distinct sessions when such a gap lies between them.

/// One stored event of a user, as the funnel needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ev {
    /// Event time, epoch ms.
    pub time: i64,
    /// Bit `k`: the event matches step `k`.
    pub steps: u16,
    /// Bit `x`: the event is one of exclusion `x`'s types.
    pub excluded: u16,
    /// Breakdown value (an id in the analytic's table of values).
    pub breakdown: u32,
    /// Session id (hash of the session field's value), 0 without sessions by field.
    pub session: u64,
}

/// How a funnel's units progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Number of steps (2..16).
    pub steps: usize,
    /// How later steps follow.
    pub order: Order,
    /// Conversion window, ms.
    pub conversion: i64,
    /// Exclusions as (first step index, second step index), bit `x` of [`Ev::excluded`].
    pub exclusions: Vec<(usize, usize)>,
    /// Breakdown from the entry (`false`) or from the furthest step's event (`true`).
    pub last_touch: bool,
    /// What a unit is.
    pub unit: UnitKind,
}

/// The order of steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Next step whenever it comes.
    Ordered,
    /// Next step as the very next event.
    Strict,
    /// Any order.
    Any,
}

/// What a unit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    /// A user.
    User,
    /// A session by the session field ([`Ev::session`]).
    SessionField,
    /// A session cut by inactivity longer than the gap (ms).
    SessionGap(i64),
}

/// How far one unit got: its breakdown value, the steps reached (at least 1) and, for each
/// step after the first it reached, the milliseconds from its entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitResult {
    /// Breakdown value id.
    pub breakdown: u32,
    /// Steps reached, 1..=steps.
    pub reached: u8,
    /// Milliseconds from entry to step k+1, for k in 0..reached-1.
    pub times: Vec<i64>,
}

/// The units a user with `events` (sorted by time, arrival order within a time) makes in the
/// window `[start, end)`, in entry order.
pub fn units(events: &[Ev], start: i64, end: i64, rules: &Rules) -> Vec<UnitResult> {
    let first = events.partition_point(|e| e.time < start);
    let mut out = Vec::new();
    match rules.unit {
        UnitKind::User => {
            if let Some(i) = (first..events.len())
                .take_while(|&i| events[i].time < end)
                .find(|&i| events[i].steps & 1 != 0)
            {
                out.push(progress(events, i, rules, |_| true));
            }
        }
        UnitKind::SessionField => {
            for i in (first..events.len()).take_while(|&i| events[i].time < end) {
                let e = &events[i];
                let entry = |o: &Ev| o.steps & 1 != 0 && o.session == e.session;
                // A session enters at its first step-1 event in the window (no allocation:
                // a user has few events in a window).
                if entry(e) && !events[first..i].iter().any(entry) {
                    out.push(progress(events, i, rules, |o| o.session == e.session));
                }
            }
        }
        UnitKind::SessionGap(gap) => {
            // Whether the session of the event before `first` already entered in this window:
            // none did, entries are only inside the window.
            let mut entered = false;
            for i in (first..events.len()).take_while(|&i| events[i].time < end) {
                if i > 0 && events[i].time - events[i - 1].time > gap {
                    entered = false;
                }
                if !entered && events[i].steps & 1 != 0 {
                    entered = true;
                    out.push(progress(events, i, rules, |_| true));
                }
            }
        }
    }
    out
}

/// How far the unit entering at `events[entry]` gets, seeing the later events `member` admits
/// (its session).
fn progress(
    events: &[Ev],
    entry: usize,
    rules: &Rules,
    member: impl Fn(&Ev) -> bool,
) -> UnitResult {
    let e0 = &events[entry];
    let deadline = e0.time.saturating_add(rules.conversion);
    let all = if rules.steps >= 16 {
        u16::MAX
    } else {
        (1u16 << rules.steps) - 1
    };
    let mut reached = 1usize;
    let mut done: u16 = 1;
    let mut times = Vec::new();
    let mut breakdown = e0.breakdown;
    let mut previous = e0.time;
    for e in &events[entry + 1..] {
        if e.time > deadline || reached == rules.steps {
            break;
        }
        if let UnitKind::SessionGap(gap) = rules.unit {
            if e.time - previous > gap {
                break;
            }
            previous = e.time;
        }
        if !member(e) {
            continue;
        }
        let blocked = rules.exclusions.iter().enumerate().any(|(x, &(a, b))| {
            e.excluded & (1 << x) != 0 && done & (1 << a) != 0 && done & (1 << b) == 0
        });
        if blocked {
            break;
        }
        match rules.order {
            Order::Ordered | Order::Strict => {
                if e.steps & (1 << reached) != 0 {
                    done |= 1 << reached;
                    reached += 1;
                    times.push(e.time - e0.time);
                    breakdown = e.breakdown;
                } else if rules.order == Order::Strict {
                    break;
                }
            }
            Order::Any => {
                let before = reached;
                done |= e.steps & all;
                while reached < rules.steps && done & (1 << reached) != 0 {
                    reached += 1;
                    times.push(e.time - e0.time);
                }
                if reached > before {
                    breakdown = e.breakdown;
                }
            }
        }
    }
    UnitResult {
        breakdown: if rules.last_touch {
            breakdown
        } else {
            e0.breakdown
        },
        reached: reached as u8,
        times,
    }
}
