//! Cost of checkpointing a 100 MB state: write (temp + fsync + rename + directory fsync) and
//! validated read. Ignored by default (it writes 300 MB); run it with
//! `cargo test --release -p tidemark-worker --test checkpoint_perf -- --ignored --nocapture`,
//! optionally with `TIDEMARK_CHECKPOINT_BENCH_DIR` pointing at the volume to measure.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use tidemark_worker::checkpoint::{CheckpointStore, Metadata};

#[test]
#[ignore = "writes 300 MB; run explicitly to measure"]
fn a_100_mb_state_is_checkpointed_and_recovered_within_seconds() {
    let base = std::env::var_os("TIDEMARK_CHECKPOINT_BENCH_DIR");
    let dir = match &base {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let store = CheckpointStore::new(dir.path(), 3);
    // Not all zeros, so no layer below can shortcut it.
    let state: Vec<u8> = (0..100 * 1024 * 1024u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for id in 1..=3 {
        let meta = Metadata {
            task: 0,
            checkpoint_id: id,
            ..Metadata::default()
        };
        let written = store.write(&meta, &state).unwrap();
        println!(
            "write {id}: {} bytes in {:.3} s ({:.0} MB/s)",
            written.bytes,
            written.duration.as_secs_f64(),
            written.bytes as f64 / 1e6 / written.duration.as_secs_f64()
        );
    }
    let started = Instant::now();
    let recovery = store.latest_valid(0).unwrap();
    let elapsed = started.elapsed();
    let checkpoint = recovery.checkpoint.unwrap();
    println!(
        "read+validate: {} bytes in {:.3} s",
        checkpoint.as_bytes().len(),
        elapsed.as_secs_f64()
    );
    assert_eq!(checkpoint.state().len(), state.len());
    assert!(elapsed.as_secs() < 30);
}
