//! Benchmark of the seed job on one core: 1 M generated events (100 k users) from a JSON-lines
//! file through the quickstart pipeline into a results file, plus sliding windows of growing
//! size/slide to show that the cost per event does not grow with it; then the checkpoint of a
//! task holding 1 M live key-windows: the capture (the pause on the task thread), its encoding,
//! and the restore.
//!
//! `cargo bench -p tidemark-worker --bench quickstart` prints Markdown tables for
//! docs/performance.md; `… --bench quickstart -- checkpoint` runs only the checkpoint part,
//! `… -- privacy` only the quickstart with and without pseudonymised user ids, `… -- decode`
//! only the decoder and a compiled and an interpreted CEL filter, in memory, `… -- dedup` only
//! the deduplication check over the 1 M events' ids, in memory. Each
//! figure is the median of several runs in this process, on one thread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tidemark_api::{parse_manifest, GeneratorSpec};
use tidemark_worker::local::{run_local, LocalOptions, RunSummary};
use tidemark_worker::source::generator::Generator;

const EVENTS: u64 = 1_000_000;
const USERS: u64 = 100_000;
const RUNS: usize = 3;

fn events_file(dir: &Path) -> PathBuf {
    let path = dir.join(format!("events-{EVENTS}-{USERS}.jsonl"));
    if !path.exists() {
        let spec = GeneratorSpec {
            events: Some(EVENTS),
            users: USERS,
            products: 10_000,
            ..GeneratorSpec::default()
        };
        let mut generator = Generator::new(&spec);
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(&path).expect("create the events file"));
        let mut line = Vec::new();
        while generator.next_into(&mut line).is_some() {
            line.push(b'\n');
            out.write_all(&line).expect("write events");
            line.clear();
        }
        out.flush().expect("write events");
    }
    path
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn run(manifest: &str, input: &Path, output: &Path) -> (f64, RunSummary) {
    run_with_key(manifest, input, output, None)
}

/// [`run`] with the pseudonymisation key file `key` (for a manifest with `spec.privacy`).
fn run_with_key(
    manifest: &str,
    input: &Path,
    output: &Path,
    key: Option<&Path>,
) -> (f64, RunSummary) {
    let pipeline = parse_manifest(manifest).expect("benchmark manifest is valid");
    let opts = LocalOptions {
        input: Some(input.to_owned()),
        output: Some(output.to_owned()),
        dead_letter: Some(output.with_extension("dead.jsonl")),
        privacy_key_file: key.map(Path::to_owned),
        ..LocalOptions::default()
    };
    let mut rates = Vec::new();
    let mut last = RunSummary::default();
    for _ in 0..RUNS {
        let started = Instant::now();
        last =
            run_local(&pipeline, &opts, Arc::new(AtomicBool::new(false))).expect("benchmark run");
        rates.push(last.records as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    // Results of the sliding runs are gigabytes: keep the disk free.
    let _ = std::fs::remove_file(output);
    (rates[RUNS / 2], last)
}

fn main() {
    let quickstart = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.yaml"),
    )
    .expect("read the quickstart manifest");
    if std::env::args().any(|a| a == "dedup") {
        return deduplication();
    }
    if std::env::args().any(|a| a == "decode") {
        return decode_and_filter();
    }
    if std::env::args().any(|a| a == "privacy") {
        // Only the quickstart with and without pseudonymised user ids.
        return throughput(&quickstart, false);
    }
    if !std::env::args().any(|a| a == "checkpoint") {
        throughput(&quickstart, true);
    }
    // Checkpoint cost of 1 M live key-windows: one click per user in the same hour.
    println!("\n| state of one task: 1 M live key-windows | first capture (task-thread pause) | later captures (task-thread pause) | encode (writer thread) | snapshot() on one thread | snapshot bytes | restore |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let session = quickstart.replace(
        "{ type: tumbling, size: 1h }",
        "{ type: session, gap: 30m }",
    );
    let distinct = quickstart.replace(
        "          - { name: revenue, op: sum, field: price, source: purchases }",
        "          - { name: revenue, op: sum, field: price, source: purchases }\n          - { name: products, op: distinctCount, field: product, source: clicks }",
    );
    for (label, manifest) in [
        ("quickstart report (1 h tumbling)", &quickstart),
        ("same report, session windows (gap 30 m)", &session),
        (
            "quickstart report + exact distinct count of products",
            &distinct,
        ),
    ] {
        checkpoint(label, manifest);
    }
    println!(
        "\npeak RSS of the benchmark process: {} MiB",
        peak_rss_kib() / 1024
    );
}

/// Events per second of the quickstart, of the quickstart with pseudonymised user ids, and
/// (with `all`) of the sliding variants and of decoding alone.
fn throughput(quickstart: &str, all: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&root).expect("create target/bench");
    let input = events_file(&root);
    println!("| job | events/s (one core) | results | peak live key-windows | state bytes per live key-window |");
    println!("|---|---:|---:|---:|---:|");
    let (rate, summary) = run(quickstart, &input, &root.join("quickstart.jsonl"));
    println!(
        "| quickstart (1 h tumbling click⋈purchase report) | {:.0} | {} | {} | {:.1} |",
        rate,
        summary.results,
        summary.peak_windows,
        summary.peak_state_bytes as f64 / summary.peak_windows.max(1) as f64
    );
    let key = root.join("privacy.key");
    std::fs::write(&key, b"a benchmark key of thirty-two bytes.").expect("write the key file");
    let private = format!("{quickstart}  privacy: {{ pseudonymizeKeySecret: bench }}\n");
    let (rate, summary) = run_with_key(&private, &input, &root.join("private.jsonl"), Some(&key));
    println!(
        "| same report, user ids pseudonymised (HMAC-SHA256) | {:.0} | {} | {} | {:.1} |",
        rate,
        summary.results,
        summary.peak_windows,
        summary.peak_state_bytes as f64 / summary.peak_windows.max(1) as f64
    );
    if !all {
        return;
    }
    for slide in ["60m", "10m", "1m"] {
        let manifest = quickstart.replace(
            "{ type: tumbling, size: 1h }",
            &format!("{{ type: sliding, size: 1h, slide: {slide} }}"),
        );
        let (rate, summary) = run(&manifest, &input, &root.join("sliding.jsonl"));
        println!(
            "| same report, sliding 1 h every {slide} | {:.0} | {} | {} | {:.1} |",
            rate,
            summary.results,
            summary.peak_windows,
            summary.peak_state_bytes as f64 / summary.peak_windows.max(1) as f64
        );
    }
    let data = std::fs::read(&input).expect("read events");
    let decoder = tidemark_worker::decode::Decoder::new(&tidemark_api::FieldMapping::default());
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut ok = 0u64;
        for line in tidemark_worker::source::lines::records(&data) {
            ok += u64::from(decoder.decode(line).is_ok());
        }
        assert_eq!(ok, EVENTS);
        rates.push(EVENTS as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "| decoding only (JSON line → event, in memory) | {:.0} | - | - | - |",
        rates[RUNS / 2]
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times the checkpoint of a task of `manifest` holding 1 M live key-windows (one click per user
/// in one hour): the capture on the task thread (the first one, into fresh memory, then
/// [`RUNS`] more), its encoding on another thread, `snapshot()` (both on one thread) and the
/// restore into a new task; medians of the [`RUNS`] later runs.
fn checkpoint(label: &str, manifest: &str) {
    use tidemark_worker::engine::Task;
    let pipeline = parse_manifest(manifest).expect("benchmark manifest is valid");
    let plan = || tidemark_worker::plan::Plan::compile("quickstart", &pipeline.spec).expect("plan");
    let mut task = Task::new(plan(), 0);
    let mut out = tidemark_worker::result::Output::default();
    let mut line = String::new();
    for user in 0..1_000_000u32 {
        use std::fmt::Write as _;
        line.clear();
        write!(
            line,
            r#"{{"type":"click","user_id":"u{user}","product_id":"p{}","price":1.5,"ts":{}}}"#,
            user % 10_000,
            1_767_225_600_000i64 + i64::from(user % 1000)
        )
        .expect("write to a String");
        task.process(0, line.as_bytes(), 0, &mut out);
    }
    assert_eq!(task.stats().windows, 1_000_000);
    let mut first_ms = 0.0;
    let (mut capture_ms, mut encode_ms, mut snapshot_ms, mut restore_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut size = 0;
    for run in 0..=RUNS {
        // As the worker loop does it: capture on the task thread, encode and drop on another.
        // The first capture copies into fresh memory; later ones into the buffers the previous
        // one left when it was dropped.
        let started = Instant::now();
        let capture = task.capture();
        let pause = started.elapsed().as_secs_f64() * 1e3;
        let (bytes, encode) = std::thread::spawn(move || {
            let started = Instant::now();
            let bytes = capture.encode();
            (bytes, started.elapsed())
        })
        .join()
        .expect("encoding does not panic");
        if run == 0 {
            first_ms = pause;
            continue;
        }
        capture_ms.push(pause);
        encode_ms.push(encode.as_secs_f64() * 1e3);
        let started = Instant::now();
        let again = task.snapshot();
        snapshot_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(again, bytes);
        drop(again);
        size = bytes.len();
        let mut restored = Task::new(plan(), 0);
        let started = Instant::now();
        restored.restore(&bytes).expect("restore");
        restore_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(restored.stats().windows, 1_000_000);
    }
    println!(
        "| {label} | {first_ms:.1} ms | {:.1} ms (max {:.1}) | {:.0} ms | {:.0} ms | {:.1} MB | {:.0} ms |",
        median(capture_ms.clone()),
        capture_ms.iter().copied().fold(0.0, f64::max),
        median(encode_ms),
        median(snapshot_ms),
        size as f64 / 1e6,
        median(restore_ms)
    );
}

/// Nanoseconds this thread has run on a CPU (the first field of Linux's schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .expect("Linux schedstat of this thread")
}

/// Nanoseconds per record of decoding alone and of a CEL filter on decoded events (compiled,
/// then interpreted), over the benchmark's file in memory; medians of [`RUNS`] passes, in CPU time of the thread.
fn decode_and_filter() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&root).expect("create target/bench");
    let data = std::fs::read(events_file(&root)).expect("read events");
    let lines: Vec<&[u8]> = tidemark_worker::source::lines::records(&data).collect();
    let decoder = tidemark_worker::decode::Decoder::new(&tidemark_api::FieldMapping::default());
    // CPU time of this thread, not wall time: the figures hold on a machine shared with others.
    let time = |f: &mut dyn FnMut() -> u64| {
        let mut ns = Vec::new();
        for _ in 0..RUNS {
            let started = thread_cpu_ns();
            let n = f();
            ns.push((thread_cpu_ns() - started) as f64 / n as f64);
        }
        median(ns)
    };
    let decode = time(&mut || {
        let mut ok = 0u64;
        for line in &lines {
            ok += u64::from(decoder.decode(line).is_ok());
        }
        assert_eq!(ok, EVENTS);
        ok
    });
    println!("| decoding (JSON line → event, in memory) | {decode:.1} ns per record |");
    let reference = time(&mut || {
        let mut ok = 0u64;
        for line in &lines {
            ok += u64::from(decoder.decode_with_serde(line).is_ok());
        }
        ok
    });
    println!("| decoding with serde_json alone | {reference:.1} ns per record |");
    let block = &lines[..4_096];
    for (label, serde) in [
        ("decoding a block in cache", false),
        ("the same with serde_json alone", true),
    ] {
        let ns = time(&mut || {
            let mut ok = 0u64;
            for _ in 0..100 {
                for line in block {
                    let event = if serde {
                        decoder.decode_with_serde(line)
                    } else {
                        decoder.decode(line)
                    };
                    ok += u64::from(event.is_ok());
                }
            }
            ok
        });
        println!("| {label} | {ns:.1} ns per record |");
    }
    // A block's worth of events, filtered again and again: in the pipeline the filter sees an
    // event just decoded, in cache, not one of a million events spread over 200 MB.
    let events: Vec<_> = lines[..4_096]
        .iter()
        .map(|line| decoder.decode(line).expect("generated events decode"))
        .collect();
    let filter = tidemark_worker::expr::Expr::compile(r#"event.type == "view""#, Arc::from([]))
        .expect("the filter compiles");
    assert!(filter.is_compiled());
    let count = |interpreted: bool| {
        time(&mut || {
            let mut passed = 0u64;
            let rounds = if interpreted { 20 } else { 250 };
            for _ in 0..rounds {
                for event in &events {
                    let matched = if interpreted {
                        filter.matches_interpreted(event)
                    } else {
                        filter.matches(event)
                    };
                    passed += u64::from(matched.expect("the filter evaluates"));
                }
            }
            assert!(passed > 0);
            (rounds * events.len()) as u64
        })
    };
    let compiled = count(false);
    let interpreted = count(true);
    println!("| CEL filter `event.type == \"view\"`, compiled | {compiled:.1} ns per event |");
    println!("| the same filter, interpreted | {interpreted:.1} ns per event |");
}

/// The deduplication check alone (`spec.dataQuality.deduplicate` on `event_id`, 10-minute
/// horizon) over the 1 M events decoded in memory, in their order, with the watermark 10 s
/// behind the newest event time as in the quickstart: CPU time per event.
fn deduplication() {
    use tidemark_worker::quality::Deduplicator;
    use tidemark_worker::window::accumulate::Input;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&root).expect("create target/bench");
    let data = std::fs::read(events_file(&root)).expect("read events");
    let mapping = tidemark_api::FieldMapping {
        extra: vec!["event_id".to_owned()],
        ..tidemark_api::FieldMapping::default()
    };
    let decoder = tidemark_worker::decode::Decoder::new(&mapping);
    let events: Vec<_> = tidemark_worker::source::lines::records(&data)
        .map(|line| decoder.decode(line).expect("generated events decode"))
        .collect();
    let mut watermarks = Vec::with_capacity(events.len());
    let mut newest = i64::MIN;
    for event in &events {
        watermarks.push(newest.saturating_sub(10_000));
        newest = newest.max(event.time);
    }
    let mut ns = Vec::new();
    for _ in 0..RUNS {
        let mut dedup = Deduplicator::new(600_000);
        let started = thread_cpu_ns();
        let mut dropped = 0u64;
        for (event, &wm) in events.iter().zip(&watermarks) {
            dropped += u64::from(dedup.is_duplicate(Input::Extra(0), event, wm));
        }
        ns.push((thread_cpu_ns() - started) as f64 / events.len() as f64);
        println!(
            "(ids held at the end: {}, {} bytes; {dropped} duplicates)",
            dedup.len(),
            dedup.bytes()
        );
    }
    // The same walk over the events reading and hashing each id, without the table: what
    // reaching 1 M events spread over memory costs by itself (in the pipeline the event was
    // just decoded and is in cache).
    let mut walk = Vec::new();
    for _ in 0..RUNS {
        let started = thread_cpu_ns();
        let mut sum = 0u64;
        for event in &events {
            if let tidemark_worker::event::FieldValue::Str(id) = Input::Extra(0).read(event) {
                sum = sum.wrapping_add(std::hash::BuildHasher::hash_one(
                    &rustc_hash::FxBuildHasher,
                    id.as_bytes(),
                ));
            }
        }
        std::hint::black_box(sum);
        walk.push((thread_cpu_ns() - started) as f64 / events.len() as f64);
    }
    let (check, walk) = (median(ns), median(walk));
    println!(
        "| deduplication check (10 m horizon, {} events in memory) | {check:.1} ns per event |",
        events.len()
    );
    println!("| the same walk reading and hashing each id, no table | {walk:.1} ns per event |");
    println!("| the table's share | {:.1} ns per event |", check - walk);
}
