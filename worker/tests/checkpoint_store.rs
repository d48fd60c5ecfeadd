//! The checkpoint store against a real file system (a temp directory): round trips, retention,
//! corruption fallback, crash leftovers, unwritable volumes and a concurrent reader.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tidemark_worker::checkpoint::{CheckpointError, CheckpointStore, Corruption, Metadata};

fn meta(task: u32, id: u64) -> Metadata {
    Metadata {
        task,
        checkpoint_id: id,
        epoch: 4,
        offsets: BTreeMap::from([
            (
                "clicks".to_owned(),
                BTreeMap::from([(task as i32, 100 * id as i64)]),
            ),
            (
                "purchases".to_owned(),
                BTreeMap::from([(task as i32, 7 * id as i64)]),
            ),
        ]),
        watermark: 1_767_225_600_000 + id as i64,
        created_at_ms: 1_767_225_700_000,
    }
}

/// State whose bytes say which checkpoint they belong to.
fn state(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64 ^ id) as u8).collect()
}

fn write(store: &CheckpointStore, task: u32, id: u64) {
    store.write(&meta(task, id), &state(id, 4096)).unwrap();
}

fn flip_bit(path: &Path, byte: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[byte] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_written_checkpoint_reads_back_with_its_metadata_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    let written = store.write(&meta(2, 1), &state(1, 10_000)).unwrap();
    assert!(written.path.starts_with(dir.path().join("task-2")));
    assert_eq!(written.bytes, fs::metadata(&written.path).unwrap().len());

    let recovery = store.latest_valid(2).unwrap();
    assert!(recovery.skipped.is_empty());
    let checkpoint = recovery.checkpoint.unwrap();
    assert_eq!(checkpoint.meta, meta(2, 1));
    assert_eq!(checkpoint.state(), state(1, 10_000).as_slice());
    assert_eq!(store.tasks().unwrap(), vec![2]);
}

#[test]
fn a_task_without_checkpoints_recovers_nothing_and_starts_at_id_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path().join("not-yet-created"), 3);
    let recovery = store.latest_valid(0).unwrap();
    assert!(recovery.checkpoint.is_none() && recovery.skipped.is_empty());
    assert_eq!(store.next_id(0).unwrap(), 1);
}

#[test]
fn only_the_newest_retain_checkpoints_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    for id in 1..=5 {
        write(&store, 0, id);
    }
    let ids: Vec<u64> = store.list(0).unwrap().iter().map(|f| f.id).collect();
    assert_eq!(ids, vec![5, 4, 3]);
    let written = store.write(&meta(0, 6), b"x").unwrap();
    assert_eq!(written.pruned, vec![3]);
    assert!(written.prune_error.is_none());
}

#[test]
fn a_flipped_bit_in_the_newest_checkpoint_falls_back_to_the_previous_one_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    for id in 1..=3 {
        write(&store, 1, id);
    }
    let newest = store.list(1).unwrap()[0].path.clone();
    flip_bit(&newest, 2000);

    let recovery = store.latest_valid(1).unwrap();
    assert_eq!(recovery.checkpoint.unwrap().meta.checkpoint_id, 2);
    assert_eq!(recovery.skipped.len(), 1);
    assert_eq!(recovery.skipped[0].id, 3);
    assert_eq!(recovery.skipped[0].path, newest);
    assert!(matches!(
        recovery.skipped[0].problem,
        Corruption::BodyChecksum { .. }
    ));
    // The corrupt file stays for inspection and the next id goes past it.
    assert_eq!(store.next_id(1).unwrap(), 4);
}

#[test]
fn a_flipped_bit_in_a_header_is_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    write(&store, 1, 1);
    write(&store, 1, 2);
    flip_bit(&store.list(1).unwrap()[0].path, 17);
    let recovery = store.latest_valid(1).unwrap();
    assert_eq!(recovery.checkpoint.unwrap().meta.checkpoint_id, 1);
    assert_eq!(recovery.skipped[0].problem, Corruption::HeaderChecksum);
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    write(&store, 0, 1);
    write(&store, 0, 2);
    let newest = store.list(0).unwrap()[0].path.clone();
    let bytes = fs::read(&newest).unwrap();
    fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();

    let recovery = store.latest_valid(0).unwrap();
    assert_eq!(recovery.checkpoint.unwrap().meta.checkpoint_id, 1);
    assert!(matches!(
        recovery.skipped[0].problem,
        Corruption::Length { .. }
    ));
}

#[test]
fn when_every_checkpoint_is_corrupt_recovery_reports_them_all_and_finds_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    write(&store, 0, 1);
    write(&store, 0, 2);
    for file in store.list(0).unwrap() {
        fs::write(&file.path, b"garbage").unwrap();
    }
    let recovery = store.latest_valid(0).unwrap();
    assert!(recovery.checkpoint.is_none());
    let ids: Vec<u64> = recovery.skipped.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![2, 1]);
}

#[test]
fn temp_files_left_by_a_crash_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    write(&store, 0, 1);
    // A crash between create and rename leaves a half-written temp file behind.
    let task_dir = store.task_dir(0);
    fs::write(task_dir.join(".ckpt-2.tmp-999"), b"TDMKCKPT half").unwrap();
    fs::write(task_dir.join(".ckpt-3.tmp-998"), b"").unwrap();

    let recovery = store.latest_valid(0).unwrap();
    assert_eq!(recovery.checkpoint.unwrap().meta.checkpoint_id, 1);
    assert!(recovery.skipped.is_empty());
    assert_eq!(store.next_id(0).unwrap(), 2);
    assert_eq!(store.clean_temp(0).unwrap(), 2);
    assert_eq!(fs::read_dir(&task_dir).unwrap().count(), 1);

    // A write also clears leftovers of a crashed predecessor.
    fs::write(task_dir.join(".ckpt-2.tmp-997"), b"x").unwrap();
    write(&store, 0, 2);
    let names: Vec<String> = fs::read_dir(&task_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("ckpt-")), "{names:?}");
}

#[test]
fn an_unwritable_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the root should be: no process, not even root, can create under it.
    let blocker = dir.path().join("volume");
    fs::write(&blocker, b"not a directory").unwrap();
    let store = CheckpointStore::new(blocker.join("checkpoints"), 3);
    let err = store.write(&meta(0, 1), b"state").unwrap_err();
    assert!(matches!(err, CheckpointError::CreateDir { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("failed to create checkpoint directory"));
    // Reads fail cleanly too, and the caller can retry later.
    assert!(store.latest_valid(0).is_err());
}

#[test]
fn a_checkpoint_id_not_above_the_newest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    write(&store, 0, 5);
    let err = store.write(&meta(0, 5), b"again").unwrap_err();
    assert!(matches!(
        err,
        CheckpointError::NotMonotonic { newest: 5, .. }
    ));
    assert_eq!(
        store.latest_valid(0).unwrap().checkpoint.unwrap().state(),
        state(5, 4096)
    );
}

#[test]
fn a_checkpoint_of_another_task_in_the_directory_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    write(&store, 0, 1);
    write(&store, 1, 2);
    fs::copy(
        &store.list(1).unwrap()[0].path,
        store.task_dir(0).join("ckpt-00000000000000000002.tdmk"),
    )
    .unwrap();
    let recovery = store.latest_valid(0).unwrap();
    assert_eq!(recovery.checkpoint.unwrap().meta.checkpoint_id, 1);
    assert_eq!(
        recovery.skipped[0].problem,
        Corruption::WrongTask {
            expected: 0,
            found: 1
        }
    );
}

#[test]
fn a_concurrent_reader_sees_only_complete_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 2);
    let big_state = |id: u64| state(id, 64 * 1024 + id as usize);
    store.write(&meta(0, 1), &big_state(1)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            let mut last_id = 0;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let recovery = store.latest_valid(0).unwrap();
                assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
                let checkpoint = recovery.checkpoint.unwrap();
                let id = checkpoint.meta.checkpoint_id;
                assert!(id >= last_id, "went back from {last_id} to {id}");
                assert!(checkpoint.state() == big_state(id), "state of {id} differs");
                last_id = id;
                reads += 1;
            }
            reads
        })
    };
    for id in 2..=60 {
        store.write(&meta(0, id), &big_state(id)).unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn a_checkpoint_chosen_by_id_reads_back_and_a_corrupt_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    for id in 1..=3 {
        write(&store, 0, id);
    }
    flip_bit(&store.list(0).unwrap()[0].path, 100);
    assert_eq!(store.read(0, 2).unwrap().unwrap().meta, meta(0, 2));
    assert!(store.read(0, 9).unwrap().is_none());
    let err = store.read(0, 3).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err:?}");

    let scan = store.scan(0).unwrap();
    assert_eq!(scan.valid, vec![2, 1]);
    assert_eq!(scan.skipped.len(), 1);
    assert_eq!(scan.skipped[0].id, 3);
}
