use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::checkpoint::Metadata;
use crate::http::{self, AppState};
use crate::metrics::Metrics;

fn plan(ordinal: u32, workers: u32, epoch: u64, previous: &[u32], release: bool) -> HandoffPlan {
    HandoffPlan::new(ordinal, workers, epoch, previous.to_vec(), release, false).unwrap()
}

#[test]
fn scale_down_by_half_moves_the_odd_tasks_to_worker_zero() {
    let zero = plan(0, 1, 2, &[2], false);
    assert_eq!(zero.tasks(4), vec![0, 1, 2, 3]);
    assert_eq!(zero.previous_owners(0), Vec::<u32>::new());
    assert_eq!(zero.previous_owners(1), vec![1]);
    assert_eq!(zero.previous_owners(3), vec![1]);
    let surplus = plan(1, 1, 2, &[2], false);
    assert!(surplus.is_surplus());
    assert!(surplus.tasks(4).is_empty());
}

#[test]
fn a_release_step_runs_only_tasks_owned_under_every_assignment() {
    // 1 → 2: worker 0 keeps 0 and 2, worker 1 (new) runs nothing yet.
    assert_eq!(plan(0, 2, 2, &[1], true).tasks(4), vec![0, 2]);
    let one = plan(1, 2, 2, &[1], true);
    assert!(one.tasks(4).is_empty());
    assert_eq!(one.withheld(4), vec![1, 3]);
    assert!(
        one.previous_owners(1).is_empty(),
        "nothing is fetched in a release step"
    );
    // 2 → 3 over 6 tasks: worker 1 owned 1, 3, 5 and will own 1, 4; it keeps 1 only.
    let p = plan(1, 3, 5, &[2], true);
    assert_eq!(p.tasks(6), vec![1]);
    assert_eq!(p.withheld(6), vec![4]);
    // The acquire step after it: task 4 comes from worker 0.
    assert_eq!(plan(1, 3, 6, &[2], false).previous_owners(4), vec![0]);
}

#[test]
fn after_an_interrupted_rescale_every_owner_since_the_settled_one_is_asked() {
    // Settled at 3, interrupted at 2, now 4: task 5 was on worker 2, then perhaps on worker 1.
    let p = plan(1, 4, 9, &[3, 2], false);
    assert_eq!(p.previous_owners(5), vec![2]);
    let p = plan(3, 4, 9, &[3, 2], false);
    assert_eq!(p.previous_owners(7), vec![1]);
    assert_eq!(plan(0, 4, 9, &[3, 2], false).previous_owners(4), vec![1]);
    assert!(HandoffPlan::new(0, 1, 1, vec![0], false, false).is_err());
}

#[test]
fn checkpoints_order_by_epoch_then_id() {
    assert!(
        newer((2, 1), (1, 50)),
        "a later epoch wins over a higher id"
    );
    assert!(newer((2, 8), (2, 7)));
    assert!(!newer((2, 7), (2, 7)), "a tie keeps the local copy");
}

#[test]
fn peer_urls_come_from_overrides_then_the_flag_then_the_runtime_file() {
    let mut opts = PeerOptions::default();
    let default = Peers::new(&opts, None, "shop", "prod");
    assert_eq!(
        default.url(3),
        "http://shop-3.shop-workers.prod.svc:9102".to_owned()
    );
    let runtime = Peers::new(&opts, Some("http://w{ordinal}:1"), "shop", "prod");
    assert_eq!(runtime.url(2), "http://w2:1");
    opts.url_template = Some("http://{pipeline}.{namespace}:{ordinal}".into());
    opts.peers = BTreeMap::from([(1, "http://127.0.0.1:5".to_owned())]);
    let flags = Peers::new(&opts, Some("http://w{ordinal}:1"), "shop", "prod");
    assert_eq!(flags.url(0), "http://shop.prod:0");
    assert_eq!(flags.url(1), "http://127.0.0.1:5");
}

/// A worker's HTTP server over `store` on a free loopback port.
struct Peer {
    url: String,
    health: Arc<Health>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn start(store: &CheckpointStore) -> Peer {
        Self::start_at(store, "127.0.0.1:0".parse().unwrap())
    }

    fn start_at(store: &CheckpointStore, addr: SocketAddr) -> Peer {
        Self::start_with(store, addr, Arc::new(http::SnapshotAuth::open()))
    }

    fn start_with(
        store: &CheckpointStore,
        addr: SocketAddr,
        auth: Arc<http::SnapshotAuth>,
    ) -> Peer {
        let health = Arc::new(Health::new(http::DEFAULT_STALE_AFTER));
        let state = AppState {
            metrics: Metrics::new("p").unwrap(),
            health: health.clone(),
            store: store.clone(),
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (bound, server) = http::serve_with(addr, state, auth, stopped).await.unwrap();
                bound_tx.send(bound).unwrap();
                server.await.unwrap();
            });
        });
        let bound = bound_rx.recv().unwrap();
        Peer {
            url: format!("http://{bound}"),
            health,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write(store: &CheckpointStore, task: u32, id: u64, epoch: u64, state: &[u8]) {
    let meta = Metadata {
        task,
        checkpoint_id: id,
        epoch,
        offsets: BTreeMap::from([(
            "clicks".to_owned(),
            BTreeMap::from([(task as i32, 10 * id as i64)]),
        )]),
        watermark: 0,
        created_at_ms: 0,
    };
    store.write(&meta, state).unwrap();
}

fn peers_at(ordinal: u32, url: &str) -> Peers {
    let opts = PeerOptions {
        peers: BTreeMap::from([(ordinal, url.to_owned())]),
        ..PeerOptions::default()
    };
    Peers::new(&opts, Some("http://127.0.0.1:9/none-{ordinal}"), "p", "ns")
}

fn wait_with<'a>(health: &'a Health, stop: &'a AtomicBool) -> Wait<'a> {
    Wait { health, stop }
}

/// `prepare` then `install`, as the worker loop does.
fn hand_off(
    store: &CheckpointStore,
    task: u32,
    plan: &HandoffPlan,
    peers: &Peers,
    committed: Option<u64>,
) -> String {
    let health = Health::new(http::DEFAULT_STALE_AFTER);
    let stop = AtomicBool::new(false);
    let wait = wait_with(&health, &stop);
    // A failing test stops instead of waiting for its peer forever.
    let done = AtomicBool::new(false);
    let prepared = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        });
        let prepared = prepare(store, task, plan, peers, wait).unwrap();
        done.store(true, Ordering::Relaxed);
        prepared.unwrap_or_else(|| panic!("still waiting after 30 s: {:?}", health.readiness()))
    });
    stop.store(false, Ordering::Relaxed);
    let what = format!("{prepared:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap()
        .to_owned();
    install(store, task, plan, peers, prepared, committed, wait)
        .unwrap()
        .unwrap();
    what
}

#[test]
fn the_earlier_owners_newer_checkpoint_is_validated_and_written_here_then_never_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = CheckpointStore::new(dir.path().join("worker-1"), 3);
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    write(&theirs, 1, 6, 1, b"old");
    write(&theirs, 1, 7, 1, b"newest of epoch 1");
    // This worker owned task 1 long ago (epoch 0) with higher ids: the epoch decides.
    write(&mine, 1, 9, 0, b"stale");
    let peer = Peer::start(&theirs);
    let p = plan(0, 1, 2, &[2], false);
    let peers = peers_at(1, &peer.url);
    assert_eq!(hand_off(&mine, 1, &p, &peers, None), "Remote");
    let restored = mine.latest_valid(1).unwrap().checkpoint.unwrap();
    assert_eq!(restored.state(), b"newest of epoch 1");
    assert_eq!(
        (restored.meta.checkpoint_id, restored.meta.epoch),
        (7, 1),
        "the copy keeps its id and epoch"
    );
    assert_eq!(mine.next_id(1).unwrap(), 8, "ids continue after the copy");
    assert_eq!(acquired_epoch(&mine, 1), Some(2));
    // A restart in the same epoch: the peer may be gone; it is not asked.
    drop(peer);
    assert_eq!(hand_off(&mine, 1, &p, &peers, None), "Acquired");
    // Not moved: nobody is asked.
    assert_eq!(hand_off(&mine, 0, &p, &peers, None), "NotMoved");
}

#[test]
fn a_peer_serves_a_snapshot_only_with_the_pipelines_token_and_counts_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = CheckpointStore::new(dir.path().join("worker-1"), 3);
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    write(&theirs, 1, 7, 1, b"user ids and revenue");
    let auth = Arc::new(http::SnapshotAuth::with_token("t0k3n"));
    let peer = Peer::start_with(&theirs, "127.0.0.1:0".parse().unwrap(), auth);
    let path = "/v1/tasks/1/snapshot";

    let anonymous = client::get(&peer.url, path).unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert!(!String::from_utf8_lossy(&anonymous.body).contains("revenue"));
    let wrong = client::get_with(&peer.url, path, Some("Bearer t0k3m")).unwrap();
    assert_eq!(wrong.status, 401);
    let metrics = String::from_utf8(client::get(&peer.url, "/metrics").unwrap().body).unwrap();
    assert!(metrics.contains("tidemark_handoff_refused_total{reason=\"missing_token\"} 1\n"));
    assert!(metrics.contains("tidemark_handoff_refused_total{reason=\"wrong_token\"} 1\n"));

    // A worker of the same pipeline presents the token and gets the state.
    let peers = peers_at(1, &peer.url).with_token(Some("t0k3n"));
    assert_eq!(
        hand_off(&mine, 1, &plan(0, 1, 2, &[2], false), &peers, None),
        "Remote"
    );
    assert_eq!(
        mine.latest_valid(1).unwrap().checkpoint.unwrap().state(),
        b"user ids and revenue"
    );
}

#[test]
fn a_newer_local_checkpoint_or_a_peer_without_one_keeps_the_local_state() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = CheckpointStore::new(dir.path().join("worker-1"), 3);
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    write(&theirs, 1, 3, 1, b"older epoch");
    write(&mine, 1, 2, 2, b"mine, epoch 2");
    write(&mine, 3, 2, 2, b"task 3");
    let peer = Peer::start(&theirs);
    let p = plan(0, 1, 3, &[2], false);
    let peers = peers_at(1, &peer.url);
    assert_eq!(hand_off(&mine, 1, &p, &peers, None), "LocalNewest");
    assert_eq!(
        mine.latest_valid(1).unwrap().checkpoint.unwrap().state(),
        b"mine, epoch 2"
    );
    // The peer has nothing of task 3 (404).
    assert_eq!(hand_off(&mine, 3, &p, &peers, None), "LocalNewest");
    assert_eq!(acquired_epoch(&mine, 3), Some(3));
}

#[test]
fn a_peer_that_still_runs_the_task_or_is_down_is_waited_for_and_readyz_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = CheckpointStore::new(dir.path().join("worker-1"), 3);
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    write(&theirs, 1, 4, 1, b"final");
    let peer = Peer::start(&theirs);
    peer.health.claim(1);
    let p = plan(0, 1, 2, &[2], false);
    let peers = peers_at(1, &peer.url);
    let health = Health::new(http::DEFAULT_STALE_AFTER);
    let stop = AtomicBool::new(false);
    let waiter_health = peer.health.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        waiter_health.release(1);
    });
    let mut reasons = Vec::new();
    let prepared = std::thread::scope(|s| {
        let worker = s.spawn(|| prepare(&mine, 1, &p, &peers, wait_with(&health, &stop)));
        while !worker.is_finished() {
            if let Err(reason) = health.readiness() {
                reasons.push(reason);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        worker.join().unwrap().unwrap().unwrap()
    });
    releaser.join().unwrap();
    assert!(matches!(prepared, Prepared::Remote { ordinal: 1, .. }));
    assert!(
        reasons.iter().any(
            |r| r.contains("waiting for the state of task 1 from worker 1")
                && r.contains("still runs task 1")
        ),
        "{reasons:?}"
    );

    // Down, then up on the same port.
    let addr: SocketAddr = peer.url.trim_start_matches("http://").parse().unwrap();
    drop(peer);
    let mine = CheckpointStore::new(dir.path().join("worker-0b"), 3);
    let theirs_again = theirs.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        Peer::start_at(&theirs_again, addr)
    });
    let prepared = prepare(&mine, 1, &p, &peers, wait_with(&health, &stop))
        .unwrap()
        .unwrap();
    assert!(matches!(prepared, Prepared::Remote { ordinal: 1, .. }));
    drop(starter.join().unwrap());
}

#[test]
fn a_stop_while_waiting_returns_without_installing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    let p = plan(0, 1, 2, &[2], false);
    let peers = Peers::new(
        &PeerOptions::default(),
        Some("http://127.0.0.1:9"),
        "p",
        "n",
    );
    let health = Health::new(http::DEFAULT_STALE_AFTER);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let outcome = std::thread::scope(|s| {
        let worker = s.spawn(|| prepare(&mine, 1, &p, &peers, wait_with(&health, &stop)));
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap().unwrap()
    });
    assert!(outcome.is_none());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(acquired_epoch(&mine, 1), None);
    assert!(health.readiness().unwrap_err().contains("task 1"));
}

#[test]
fn under_exactly_once_the_committed_checkpoint_before_the_newest_is_fetched_too() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = CheckpointStore::new(dir.path().join("worker-1"), 3);
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    write(&theirs, 1, 5, 1, b"five");
    write(&theirs, 1, 6, 1, b"six, transaction not committed");
    let peer = Peer::start(&theirs);
    let p = plan(0, 1, 2, &[2], false);
    let peers = peers_at(1, &peer.url);
    assert_eq!(hand_off(&mine, 1, &p, &peers, Some(5)), "Remote");
    let scan = mine.scan(1).unwrap();
    assert_eq!(scan.valid, vec![6, 5]);
    assert_eq!(mine.read(1, 5).unwrap().unwrap().state(), b"five");
    assert_eq!(
        crate::kafka::restore_point(&scan.valid, Some(5), true).unwrap(),
        crate::kafka::RestorePoint::Checkpoint { id: 5, exact: true }
    );
}

#[test]
fn a_corrupt_answer_is_retried_not_installed() {
    // A server that sends a checkpoint with a flipped bit once, then the good one.
    let dir = tempfile::tempdir().unwrap();
    let theirs = CheckpointStore::new(dir.path().join("worker-1"), 3);
    write(&theirs, 1, 2, 1, b"good state");
    let good = theirs
        .latest_valid(1)
        .unwrap()
        .checkpoint
        .unwrap()
        .into_bytes();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for body in [bad, good] {
            let (mut stream, _) = listener.accept().unwrap();
            // The whole request, or closing with unread bytes resets the connection.
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if std::io::Read::read(&mut stream, &mut byte).unwrap() == 0 {
                    break;
                }
                request.push(byte[0]);
            }
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-tidemark-checkpoint-id: 2\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(&body).unwrap();
        }
    });
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    let p = plan(0, 1, 2, &[2], false);
    assert_eq!(hand_off(&mine, 1, &p, &peers_at(1, &url), None), "Remote");
    server.join().unwrap();
    assert_eq!(
        mine.latest_valid(1).unwrap().checkpoint.unwrap().state(),
        b"good state"
    );
}

#[test]
fn skipping_the_hand_off_asks_nobody_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mine = CheckpointStore::new(dir.path().join("worker-0"), 3);
    let p = HandoffPlan::new(0, 1, 2, vec![2], false, true).unwrap();
    let peers = Peers::new(
        &PeerOptions::default(),
        Some("http://127.0.0.1:9"),
        "p",
        "n",
    );
    assert_eq!(hand_off(&mine, 1, &p, &peers, None), "Skipped");
    assert_eq!(acquired_epoch(&mine, 1), Some(2));
}
