//! Window algebra against brute-force oracles: random event sequences, out of order within the
//! watermark bound and beyond it, every emitted result compared.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;
use tidemark_api::AggregateOp;

use super::accumulate::{AccLayout, Input, Value};
use super::{Emission, WindowKind, Windows};
use crate::event::Event;

/// A test event: key, time, source (0 or 1), price, product.
#[derive(Clone, Debug)]
struct Ev {
    key: u8,
    time: i64,
    source: usize,
    price: i64,
    product: u8,
}

/// An emitted result: key, start, end, revision, values rendered exactly.
type Out = (String, i64, i64, u32, Vec<String>);

fn render(values: &[Value]) -> Vec<String> {
    values.iter().map(|v| format!("{v:?}")).collect()
}

fn layout(require_sides: bool) -> AccLayout {
    let both = vec![Some(Input::Price), Some(Input::Price)];
    AccLayout::new(
        vec![
            (AggregateOp::Count, vec![Some(Input::Price), None]),
            (AggregateOp::Count, vec![None, Some(Input::Price)]),
            (AggregateOp::Sum, both.clone()),
            (AggregateOp::Min, both.clone()),
            (AggregateOp::Max, both.clone()),
            (AggregateOp::Avg, both),
            (
                AggregateOp::DistinctCount,
                vec![Some(Input::Product), Some(Input::Product)],
            ),
        ],
        vec![(1, 0)],
        2,
        require_sides,
    )
}

fn event(ev: &Ev) -> Event<'static> {
    Event {
        time: ev.time,
        user: Cow::Owned(format!("u{}", ev.key)),
        product: Some(Cow::Owned(format!("p{}", ev.product))),
        event_type: None,
        category: None,
        price: Some(ev.price as f64),
        extra: Vec::new(),
    }
}

/// Values of the oracle: same order as `layout`.
fn oracle_values(events: &[&Ev]) -> Vec<Value> {
    let left = events.iter().filter(|e| e.source == 0).count() as u64;
    let right = events.iter().filter(|e| e.source == 1).count() as u64;
    let prices: Vec<f64> = events.iter().map(|e| e.price as f64).collect();
    let sum: f64 = prices.iter().sum();
    let mut products: Vec<u8> = events.iter().map(|e| e.product).collect();
    products.sort_unstable();
    products.dedup();
    let ratio = if left == 0 {
        0.0
    } else {
        right as f64 / left as f64
    };
    vec![
        Value::Int(left),
        Value::Int(right),
        Value::Float(sum),
        Value::Float(prices.iter().copied().fold(f64::INFINITY, f64::min)),
        Value::Float(prices.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        Value::Float(sum / prices.len() as f64),
        Value::Int(products.len() as u64),
        Value::Float(ratio),
    ]
}

/// Runs the engine: each event is added at the watermark before it, then the watermark moves to
/// max time - bound and due results are emitted; at the end the watermark goes to +inf.
fn run_engine(
    kind: WindowKind,
    lateness: i64,
    bound: i64,
    require: Vec<usize>,
    events: &[Ev],
) -> (Vec<Out>, Vec<usize>) {
    run_engine_cut(kind, lateness, bound, require, events, None)
}

/// Like [`run_engine_cut`], with windows starting `offset` past the epoch alignment.
fn run_engine_offset(
    kind: WindowKind,
    offset: i64,
    lateness: i64,
    bound: i64,
    events: &[Ev],
    cut: Option<(usize, Format)>,
) -> (Vec<Out>, Vec<usize>) {
    run_engine_with(kind, offset, lateness, bound, vec![], events, cut)
}

/// Snapshot formats.
#[derive(Clone, Copy, Debug)]
enum Format {
    /// Postcard of the logical snapshot, read for compatibility.
    V1,
    /// Columns encoded from a capture.
    V2,
}

/// Encodes `windows` in format 2 through a capture.
fn encode(windows: &Windows) -> Vec<u8> {
    let mut w = super::codec::Writer::default();
    windows.capture().encode(&mut w);
    w.finish()
}

/// Like [`run_engine`], but before event `cut` the state is snapshotted, encoded, decoded and
/// restored into a fresh instance, as a restart from a checkpoint does.
fn run_engine_cut(
    kind: WindowKind,
    lateness: i64,
    bound: i64,
    require: Vec<usize>,
    events: &[Ev],
    cut: Option<(usize, Format)>,
) -> (Vec<Out>, Vec<usize>) {
    run_engine_with(kind, 0, lateness, bound, require, events, cut)
}

fn run_engine_with(
    kind: WindowKind,
    offset: i64,
    lateness: i64,
    bound: i64,
    require: Vec<usize>,
    events: &[Ev],
    cut: Option<(usize, Format)>,
) -> (Vec<Out>, Vec<usize>) {
    let fresh = || {
        let mut windows =
            Windows::new(kind, lateness, layout(!require.is_empty()), require.clone());
        if offset != 0 {
            assert!(windows.set_offset(offset));
        }
        windows
    };
    let mut windows = fresh();
    let mut out = Vec::new();
    let mut late = Vec::new();
    let mut wm = i64::MIN;
    let mut max = i64::MIN;
    let mut sink = |e: &Emission<'_>| {
        out.push((
            e.key.to_owned(),
            e.start,
            e.end,
            e.revision,
            render(e.values),
        ))
    };
    for (i, ev) in events.iter().enumerate() {
        match cut {
            Some((at, Format::V1)) if at == i => {
                let bytes = postcard::to_allocvec(&windows.snapshot()).unwrap();
                let snapshot: super::snapshot::WindowsSnapshot =
                    postcard::from_bytes(&bytes).unwrap();
                windows = fresh();
                windows.restore(&snapshot).unwrap();
                assert_eq!(
                    windows.snapshot(),
                    snapshot,
                    "restore then snapshot is the identity"
                );
            }
            Some((at, Format::V2)) if at == i => {
                let mut capture = windows.capture();
                let v1 = windows.snapshot();
                let bytes = {
                    let mut w = super::codec::Writer::default();
                    capture.encode(&mut w);
                    w.finish()
                };
                windows = fresh();
                windows
                    .restore_from(&mut super::codec::Reader::new(&bytes))
                    .unwrap();
                assert_eq!(
                    encode(&windows),
                    bytes,
                    "restore then encode is the identity"
                );
                assert_eq!(windows.snapshot(), v1, "both formats hold the same state");
            }
            _ => {}
        }
        let key = format!("u{}", ev.key);
        if !windows.add(&key, ev.source, &event(ev), wm, &mut sink) {
            late.push(i);
        }
        max = max.max(ev.time);
        if max - bound > wm {
            wm = max - bound;
            windows.advance(wm, &mut sink);
        }
    }
    windows.advance(i64::MAX, &mut sink);
    assert_eq!(
        windows.stats().windows,
        0,
        "all state is dropped at the end"
    );
    assert_eq!(windows.stats().keys, 0, "all keys are released at the end");
    out.sort();
    (out, late)
}

/// Brute-force oracle of tumbling and sliding windows: every window containing an event is
/// enumerated from scratch at every step.
fn oracle_panes(
    size: i64,
    slide: i64,
    lateness: i64,
    bound: i64,
    require: &[usize],
    events: &[Ev],
) -> (Vec<Out>, Vec<usize>) {
    oracle_panes_offset(size, slide, 0, lateness, bound, require, events)
}

/// [`oracle_panes`] of windows starting at `offset + n * slide`.
fn oracle_panes_offset(
    size: i64,
    slide: i64,
    offset: i64,
    lateness: i64,
    bound: i64,
    require: &[usize],
    events: &[Ev],
) -> (Vec<Out>, Vec<usize>) {
    let windows_of = |t: i64| {
        // The newest start at or before t: offset + n * slide.
        let last_start = offset + (t - offset).div_euclid(slide) * slide;
        (0..)
            .map(move |i| last_start - i * slide)
            .take_while(move |s| s + size > t)
            .collect::<Vec<i64>>()
    };
    let mut accepted: Vec<&Ev> = Vec::new();
    let mut emitted: BTreeMap<(u8, i64), u32> = BTreeMap::new();
    let mut out = Vec::new();
    let mut late = Vec::new();
    let mut wm = i64::MIN;
    let mut max = i64::MIN;
    let emit = |key: u8,
                start: i64,
                accepted: &[&Ev],
                emitted: &mut BTreeMap<(u8, i64), u32>,
                out: &mut Vec<Out>| {
        let inside: Vec<&Ev> = accepted
            .iter()
            .copied()
            .filter(|e| e.key == key && e.time >= start && e.time < start + size)
            .collect();
        if inside.is_empty()
            || require
                .iter()
                .any(|&s| !inside.iter().any(|e| e.source == s))
        {
            return;
        }
        let revision = emitted.get(&(key, start)).map_or(0, |r| r + 1);
        emitted.insert((key, start), revision);
        out.push((
            format!("u{key}"),
            start,
            start + size,
            revision,
            render(&oracle_values(&inside)),
        ));
    };
    for (i, ev) in events.iter().enumerate() {
        let starts = windows_of(ev.time);
        if starts
            .iter()
            .all(|s| (s + size).saturating_add(lateness) <= wm)
        {
            late.push(i);
        } else {
            accepted.push(ev);
            for s in starts {
                let end = s + size;
                if end <= wm && end.saturating_add(lateness) > wm {
                    emit(ev.key, s, &accepted, &mut emitted, &mut out);
                }
            }
        }
        max = max.max(ev.time);
        let new_wm = (max - bound).max(wm);
        fire_between(wm, new_wm, &accepted, &windows_of, size, &mut |key, s| {
            emit(key, s, &accepted, &mut emitted, &mut out)
        });
        wm = new_wm;
    }
    fire_between(wm, i64::MAX, &accepted, &windows_of, size, &mut |key, s| {
        emit(key, s, &accepted, &mut emitted, &mut out)
    });
    out.sort();
    (out, late)
}

/// Calls `fire` for every (key, window start) with an accepted event whose end is in (from, to].
fn fire_between(
    from: i64,
    to: i64,
    accepted: &[&Ev],
    windows_of: &dyn Fn(i64) -> Vec<i64>,
    size: i64,
    fire: &mut dyn FnMut(u8, i64),
) {
    let mut due: Vec<(u8, i64)> = accepted
        .iter()
        .flat_map(|e| windows_of(e.time).into_iter().map(move |s| (e.key, s)))
        .filter(|(_, s)| s + size > from && s + size <= to)
        .collect();
    due.sort();
    due.dedup();
    for (key, s) in due {
        fire(key, s);
    }
}

/// Sessions (start, end) of one key among the open events.
type Components<'a> = dyn Fn(&[&Ev], u8) -> Vec<(i64, i64)> + 'a;

/// Brute-force oracle of session windows without lateness: open sessions are recomputed from
/// the open events as connected components at every step.
fn oracle_sessions(gap: i64, bound: i64, events: &[Ev]) -> (Vec<Out>, Vec<usize>) {
    let components = |open: &[&Ev], key: u8| -> Vec<(i64, i64)> {
        let mut spans: Vec<(i64, i64)> = open
            .iter()
            .filter(|e| e.key == key)
            .map(|e| (e.time, e.time + gap))
            .collect();
        spans.sort();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s < last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    };
    let mut open: Vec<&Ev> = Vec::new();
    let mut out = Vec::new();
    let mut late = Vec::new();
    let mut wm = i64::MIN;
    let mut max = i64::MIN;
    for (i, ev) in events.iter().enumerate() {
        let overlaps = components(&open, ev.key)
            .iter()
            .any(|&(s, e)| s < ev.time + gap && ev.time < e);
        if !overlaps && ev.time + gap <= wm {
            late.push(i);
        } else {
            open.push(ev);
        }
        max = max.max(ev.time);
        wm = wm.max(max - bound);
        close(&mut open, &mut out, wm, &components);
    }
    close(&mut open, &mut out, i64::MAX, &components);
    out.sort();
    (out, late)
}

fn close(open: &mut Vec<&Ev>, out: &mut Vec<Out>, wm: i64, components: &Components<'_>) {
    for key in 0..=u8::MAX {
        for (s, e) in components(open, key) {
            if e <= wm {
                let inside: Vec<&Ev> = open
                    .iter()
                    .copied()
                    .filter(|x| x.key == key && x.time >= s && x.time < e)
                    .collect();
                out.push((format!("u{key}"), s, e, 0, render(&oracle_values(&inside))));
                open.retain(|x| !(x.key == key && x.time >= s && x.time < e));
            }
        }
    }
}

/// Event sequences whose times mostly advance with jitter up to `bound`, with some events far
/// behind (late) and some ahead.
fn events(bound: i64) -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec(
        (
            0u8..4,
            0i64..40,
            -3i64..3,
            0usize..2,
            0i64..50,
            0u8..5,
            0u8..20,
        ),
        1..120,
    )
    .prop_map(move |raw| {
        let mut clock = 1_000i64;
        raw.into_iter()
            .map(|(key, step, jitter, source, price, product, far)| {
                clock += step;
                let time = match far {
                    0 => clock - bound * 4, // far behind: usually late
                    1 => clock + bound,     // ahead: drags the watermark
                    _ => clock - jitter.abs() * bound / 3,
                };
                Ev {
                    key,
                    time,
                    source,
                    price,
                    product,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn tumbling_windows_match_the_oracle(evs in events(30), size in 1i64..120, lateness in prop_oneof![Just(0i64), 1i64..100]) {
        let engine = run_engine(WindowKind::Tumbling { size }, lateness, 30, vec![], &evs);
        prop_assert_eq!(engine, oracle_panes(size, size, lateness, 30, &[], &evs));
    }

    #[test]
    fn sliding_windows_match_the_oracle(evs in events(30), slide in 1i64..60, factor in 1i64..5, extra in 0i64..3, lateness in prop_oneof![Just(0i64), 1i64..100]) {
        let size = slide * factor + extra.min(slide - 1);
        let engine = run_engine(WindowKind::Sliding { size, slide }, lateness, 30, vec![], &evs);
        prop_assert_eq!(engine, oracle_panes(size, slide, lateness, 30, &[], &evs));
    }

    #[test]
    fn inner_and_left_joins_emit_only_windows_with_the_required_sides(evs in events(20), size in 5i64..80, lateness in prop_oneof![Just(0i64), 1i64..60], inner in any::<bool>()) {
        let require = if inner { vec![0, 1] } else { vec![0] };
        let engine = run_engine(WindowKind::Tumbling { size }, lateness, 20, require.clone(), &evs);
        prop_assert_eq!(engine, oracle_panes(size, size, lateness, 20, &require, &evs));
    }

    #[test]
    fn windows_with_an_offset_match_the_oracle(evs in events(30), slide in 2i64..60, factor in 1i64..4, offset_part in 1i64..1000, lateness in prop_oneof![Just(0i64), 1i64..100], cut in proptest::option::of(0usize..120)) {
        let size = slide * factor;
        let offset = 1 + offset_part % (slide - 1);
        let kind = if factor == 1 { WindowKind::Tumbling { size } } else { WindowKind::Sliding { size, slide } };
        let cut = cut.map(|c| (c % evs.len(), Format::V2));
        let engine = run_engine_offset(kind, offset, lateness, 30, &evs, cut);
        prop_assert_eq!(engine, oracle_panes_offset(size, slide, offset, lateness, 30, &[], &evs));
    }

    #[test]
    fn session_windows_match_the_oracle(evs in events(25), gap in 1i64..60) {
        let engine = run_engine(WindowKind::Session { gap }, 0, 25, vec![], &evs);
        prop_assert_eq!(engine, oracle_sessions(gap, 25, &evs));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn restoring_a_snapshot_mid_stream_changes_no_result(
        evs in events(30),
        cut in 0usize..120,
        kind in prop_oneof![
            (1i64..120).prop_map(|size| WindowKind::Tumbling { size }),
            (1i64..40, 1i64..4).prop_map(|(slide, f)| WindowKind::Sliding { size: slide * f, slide }),
            (1i64..60).prop_map(|gap| WindowKind::Session { gap }),
        ],
        lateness in prop_oneof![Just(0i64), 1i64..100],
        inner in any::<bool>(),
    ) {
        let require = if inner { vec![0, 1] } else { vec![] };
        let whole = run_engine_cut(kind, lateness, 30, require.clone(), &evs, None);
        let cut = cut % evs.len();
        let restarted = run_engine_cut(kind, lateness, 30, require.clone(), &evs, Some((cut, Format::V2)));
        prop_assert_eq!(&whole, &restarted);
        let from_v1 = run_engine_cut(kind, lateness, 30, require, &evs, Some((cut, Format::V1)));
        prop_assert_eq!(whole, from_v1);
    }
}

#[test]
fn a_late_event_within_lateness_emits_the_window_again_with_a_higher_revision() {
    let evs = [
        Ev {
            key: 1,
            time: 10,
            source: 0,
            price: 5,
            product: 1,
        },
        Ev {
            key: 1,
            time: 200,
            source: 0,
            price: 1,
            product: 1,
        }, // closes [0,100)
        Ev {
            key: 1,
            time: 20,
            source: 1,
            price: 7,
            product: 2,
        }, // late, within lateness 150
        Ev {
            key: 1,
            time: 30,
            source: 1,
            price: 7,
            product: 2,
        }, // late, within lateness
        Ev {
            key: 1,
            time: 400,
            source: 0,
            price: 1,
            product: 1,
        }, // purges [0,100)
        Ev {
            key: 1,
            time: 40,
            source: 1,
            price: 7,
            product: 2,
        }, // past lateness
    ];
    let (out, late) = run_engine(WindowKind::Tumbling { size: 100 }, 150, 0, vec![], &evs);
    let first: Vec<(u32, String)> = out
        .iter()
        .filter(|o| o.1 == 0)
        .map(|o| (o.3, o.4[2].clone()))
        .collect();
    assert_eq!(
        first,
        vec![
            (0, "Float(5.0)".into()),
            (1, "Float(12.0)".into()),
            (2, "Float(19.0)".into())
        ]
    );
    assert_eq!(late, vec![5]);
}

#[test]
fn session_events_exactly_gap_apart_are_separate_sessions() {
    let evs = [
        Ev {
            key: 0,
            time: 0,
            source: 0,
            price: 1,
            product: 1,
        },
        Ev {
            key: 0,
            time: 10,
            source: 0,
            price: 1,
            product: 1,
        },
        Ev {
            key: 0,
            time: 19,
            source: 0,
            price: 1,
            product: 1,
        },
    ];
    let (out, _) = run_engine(WindowKind::Session { gap: 10 }, 0, 0, vec![], &evs);
    let spans: Vec<(i64, i64)> = out.iter().map(|o| (o.1, o.2)).collect();
    assert_eq!(spans, vec![(0, 10), (10, 29)]);
}

#[test]
fn corrupt_window_state_is_refused_without_panicking() {
    let mut seed = 7u64;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let evs: Vec<Ev> = (0..200)
        .map(|i| Ev {
            key: next(6) as u8,
            time: 1_000 + i * 3 - next(20) as i64,
            source: next(2) as usize,
            price: next(50) as i64,
            product: next(5) as u8,
        })
        .collect();
    for kind in [
        WindowKind::Tumbling { size: 40 },
        WindowKind::Sliding {
            size: 60,
            slide: 20,
        },
        WindowKind::Session { gap: 15 },
    ] {
        let fresh = || Windows::new(kind, 50, layout(true), vec![0]);
        let mut windows = fresh();
        let (mut wm, mut max) = (i64::MIN, i64::MIN);
        let mut sink = |_: &Emission<'_>| {};
        for ev in &evs {
            windows.add(
                &format!("u{}", ev.key),
                ev.source,
                &event(ev),
                wm,
                &mut sink,
            );
            max = max.max(ev.time);
            if max - 20 > wm {
                wm = max - 20;
                windows.advance(wm, &mut sink);
            }
        }
        assert!(windows.stats().windows > 3, "{kind:?}");
        let bytes = encode(&windows);
        let restore = |bytes: &[u8]| {
            let mut target = fresh();
            let mut r = super::codec::Reader::new(bytes);
            target.restore_from(&mut r).map(|()| target)
        };
        for cut in 0..bytes.len() {
            assert!(restore(&bytes[..cut]).is_err(), "{kind:?} cut at {cut}");
        }
        for at in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[at / 8] ^= 1 << (at % 8);
            let _ = restore(&flipped);
        }
        let restored = restore(&bytes).unwrap();
        assert_eq!(encode(&restored), bytes);
        let other = match kind {
            WindowKind::Session { .. } => WindowKind::Tumbling { size: 40 },
            _ => WindowKind::Session { gap: 15 },
        };
        let mut wrong = Windows::new(other, 50, layout(true), vec![0]);
        let refused = wrong.restore_from(&mut super::codec::Reader::new(&bytes));
        assert!(matches!(refused, Err(super::Refused::Kind)), "{kind:?}");
        let mut wrong = Windows::new(kind, 50, layout(false), vec![0]);
        let refused = wrong.restore_from(&mut super::codec::Reader::new(&bytes));
        assert!(matches!(refused, Err(super::Refused::Layout)), "{kind:?}");
    }
}

#[test]
fn a_snapshot_is_refused_by_windows_of_another_offset() {
    let kind = WindowKind::Tumbling { size: 10 };
    let with_offset = |offset: i64| {
        let mut windows = Windows::new(kind, 0, layout(false), vec![]);
        assert!(windows.set_offset(offset));
        windows
    };
    let ev = Ev {
        key: 1,
        time: 7,
        source: 0,
        price: 3,
        product: 1,
    };
    for (from, to) in [(3, 0), (0, 3), (3, 4)] {
        let mut windows = with_offset(from);
        assert!(windows.add("u1", 0, &event(&ev), i64::MIN, &mut |_| {}));
        let bytes = encode(&windows);
        let refused = with_offset(to).restore_from(&mut super::codec::Reader::new(&bytes));
        assert!(
            matches!(refused, Err(super::Refused::Kind)),
            "offset {from} restored into offset {to}: {refused:?}"
        );
    }
    let mut same = with_offset(3);
    let mut windows = with_offset(3);
    windows.add("u1", 0, &event(&ev), i64::MIN, &mut |_| {});
    let bytes = encode(&windows);
    same.restore_from(&mut super::codec::Reader::new(&bytes))
        .expect("the same offset restores");
    let mut out = Vec::new();
    same.advance(i64::MAX, &mut |e| out.push((e.start, e.end)));
    assert_eq!(
        out,
        vec![(3, 13)],
        "7 lies in the window [3, 13) of offset 3"
    );
}
