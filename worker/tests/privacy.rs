//! Pseudonymised user ids (`spec.privacy`), through the real binary: results are keyed by the
//! keyed hash an independent HMAC-SHA256 computes, no raw id reaches a result or a log line, the
//! dead-letter output keeps the raw record, the embedded Kafka path pseudonymises as a file run
//! does, and a key file that cannot be used stops the run with one line.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod cli_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cli_support::{embedded_four_partitions, example, generate, stderr, tidemark};
use sha2::{Digest, Sha256};

const KEY: &[u8] = b"a pseudonymisation key of 39 bytes.....";

fn quickstart() -> String {
    std::fs::read_to_string(example("quickstart.yaml")).unwrap()
}

/// The quickstart with `spec.privacy` set, written to `dir`.
fn private_manifest(dir: &Path) -> PathBuf {
    let path = dir.join("private.yaml");
    let text = quickstart() + "  privacy: { pseudonymizeKeySecret: tidemark-privacy }\n";
    std::fs::write(&path, text).unwrap();
    path
}

fn key_file(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("key");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// HMAC-SHA256 as RFC 2104 defines it, written out over SHA-256 (not the worker's code).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// Unpadded base64url (RFC 4648 §5), as a bit stream.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut bits, mut held, mut text) = (0u32, 0, String::new());
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        held += 8;
        while held >= 6 {
            held -= 6;
            text.push(ALPHABET[((bits >> held) & 63) as usize] as char);
        }
    }
    if held > 0 {
        text.push(ALPHABET[((bits << (6 - held)) & 63) as usize] as char);
    }
    text
}

/// The documented pseudonym: the first 16 bytes of the HMAC, unpadded base64url.
fn pseudonym(id: &str) -> String {
    base64url(&hmac_sha256(KEY, id.as_bytes())[..16])
}

/// (analytic, key, window start) of a report.
type Id = (String, String, String);

/// Reports by (analytic, key, window start), without `emitted_at`.
fn reports(text: &str) -> BTreeMap<Id, serde_json::Value> {
    text.lines()
        .map(|line| {
            let mut report: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = report.as_object_mut().unwrap();
            object.remove("emitted_at");
            let id = (
                object["analytic"].as_str().unwrap().to_owned(),
                object["key"].as_str().unwrap().to_owned(),
                object["window"]["start"].as_str().unwrap().to_owned(),
            );
            (id, report)
        })
        .collect()
}

/// The raw reports with each key replaced by the pseudonym of the raw key.
fn pseudonymised(raw: &BTreeMap<Id, serde_json::Value>) -> BTreeMap<Id, serde_json::Value> {
    raw.iter()
        .map(|((analytic, key, start), report)| {
            let mut report = report.clone();
            report["key"] = pseudonym(key).into();
            ((analytic.clone(), pseudonym(key), start.clone()), report)
        })
        .collect()
}

/// Runs `manifest` over `input` to files; returns (results, dead letters, stderr).
fn file_run(dir: &Path, manifest: &Path, input: &Path, flags: &[&str]) -> (String, String, String) {
    let output = dir.join("out.jsonl");
    let dead = dir.join("dead.jsonl");
    let args = [
        "run",
        "-f",
        manifest.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
    ];
    let out = tidemark(&[&args[..], flags].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    (read(&output), read(&dead), stderr(&out))
}

#[test]
fn results_are_keyed_by_the_documented_pseudonyms_and_hold_no_raw_id() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("generated.jsonl");
    let generator = [
        "--events",
        "20000",
        "--users",
        "300",
        "--time-step",
        "500ms",
    ];
    generate(&generated, &generator);
    // Ids with a '.', which no pseudonym (base64url) contains: a raw id cannot hide in one.
    let mut events = std::fs::read_to_string(&generated)
        .unwrap()
        .replace(r#""user_id":"u"#, r#""user_id":"person."#);
    events.push_str("{\"type\":\"click\",\"user_id\":\"person.broken\",\n");
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, &events).unwrap();

    let plain = example("quickstart.yaml");
    let (raw, _, _) = file_run(dir.path(), &plain, &input, &[]);
    let raw = reports(&raw);
    assert!(raw.len() > 500, "{}", raw.len());
    assert!(raw.keys().all(|(_, key, _)| key.starts_with("person.")));

    let key = key_file(dir.path(), KEY);
    let manifest = private_manifest(dir.path());
    let flags = ["--privacy-key-file", key.to_str().unwrap()];
    let (results, dead, log) = file_run(dir.path(), &manifest, &input, &flags);
    // Every report of the raw run, under the pseudonym of its key, and nothing else: values,
    // windows and revisions are untouched, and the same key gives the same pseudonym in every
    // window (one user's reports stay one key).
    assert_eq!(reports(&results), pseudonymised(&raw));
    assert!(!results.contains("person."), "a raw id reached a result");
    for line in results.lines() {
        let report: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = report["key"].as_str().unwrap();
        assert_eq!(key.len(), 22, "{key}");
    }
    // The dead letter keeps the raw record (bad input loses nothing); no log line quotes an
    // id or the key.
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["reason"], "malformed_json");
    assert_eq!(
        dead[0]["raw"],
        "{\"type\":\"click\",\"user_id\":\"person.broken\","
    );
    let key_text = std::str::from_utf8(KEY).unwrap();
    assert!(!log.contains("person.") && !log.contains(key_text), "{log}");
}

#[test]
fn the_embedded_kafka_path_pseudonymises_as_a_file_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let generator = [
        "--events",
        "20000",
        "--users",
        "200",
        "--time-step",
        "500ms",
        "--seed",
        "5",
    ];
    let events = dir.path().join("events.jsonl");
    generate(&events, &generator);
    let key = key_file(dir.path(), KEY);
    // Plus distinct users per category: global over four tasks, so the stage merges the
    // tasks' sets of pseudonyms, which match only if every task hashes a user alike.
    let manifest = private_manifest(dir.path());
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "  analytics:\n",
        "  analytics:\n    - name: users_by_category\n      aggregate:\n        sources: [clicks, purchases]\n        keyBy: category\n        window: { type: tumbling, size: 1h }\n        aggregates:\n          - { name: users, op: distinctCount, field: user }\n",
    );
    std::fs::write(&manifest, text).unwrap();
    let flags = ["-q", "--privacy-key-file", key.to_str().unwrap()];
    let (expected, _, _) = file_run(dir.path(), &manifest, &events, &flags);
    let expected = reports(&expected);
    assert!(expected.len() > 300, "{}", expected.len());
    let users: std::collections::BTreeSet<String> =
        (1..=200).map(|u| pseudonym(&format!("u{u}"))).collect();
    let (by_user, by_category): (Vec<_>, Vec<_>) = expected
        .values()
        .partition(|r| r["analytic"] == "marketing_report");
    assert!(
        by_user
            .iter()
            .all(|r| users.contains(r["key"].as_str().unwrap())),
        "keys are pseudonyms of the generator's users"
    );
    assert!(by_category.len() >= 8, "{}", by_category.len());
    assert!(by_category.iter().all(|r| r["users"].as_u64() > Some(1)));

    // Four tasks over the embedded Kafka: each computes the pseudonyms of its users itself.
    let flags = [&flags[1..], &generator].concat();
    assert_eq!(
        reports(&embedded_four_partitions(&manifest, &flags)),
        expected
    );
}

#[test]
fn a_key_file_that_cannot_be_used_is_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "{\"type\":\"click\",\"user_id\":\"u1\",\"ts\":1}\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let manifest = private_manifest(dir.path());
    let plain = example("quickstart.yaml");
    let missing = dir.path().join("absent");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "hunter2\n").unwrap();
    let good = key_file(dir.path(), KEY);
    let cases: [(&Path, Option<&Path>, String); 5] = [
        (&manifest, Some(&missing), format!("failed to read the pseudonymisation key file {}: No such file", missing.display())),
        (&manifest, Some(&empty), format!("failed to use the pseudonymisation key file {}: it is empty", empty.display())),
        (&manifest, Some(&short), format!("failed to use the pseudonymisation key file {}: the key is 7 bytes", short.display())),
        // Without the flag the worker reads where the operator mounts the Secret.
        (&manifest, None, "failed to read the pseudonymisation key file /etc/tidemark/privacy/key".into()),
        (&plain, Some(&good), format!("failed to use the pseudonymisation key file {}: the manifest does not set spec.privacy.pseudonymizeKeySecret", good.display())),
    ];
    for (manifest, key, expected) in &cases {
        let mut args = vec!["run", "-q", "-f", manifest.to_str().unwrap()];
        if let Some(key) = key {
            args.extend(["--privacy-key-file", key.to_str().unwrap()]);
        }
        // A file run, and a worker on Kafka, which refuses before it connects anywhere.
        let file = [
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        let kafka = [
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--http-addr",
            "127.0.0.1:0",
            "--checkpoint-dir",
            dir.path().to_str().unwrap(),
        ];
        for extra in [&file[..], &kafka[..]] {
            let out = tidemark(&[&args[..], extra].concat());
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with(&format!("error: {expected}")), "{err}");
            assert!(
                !err.contains("hunter2") && !err.contains("pseudonymisation key of"),
                "{err}"
            );
            assert!(!output.exists(), "no run started");
        }
    }
}
