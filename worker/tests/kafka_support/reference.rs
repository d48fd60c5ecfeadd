//! The reference of the end-to-end tests: the same events through one in-process task,
//! uninterrupted, and result records compared without their `emitted_at` (wall clock).

use tidemark_worker::engine::Task;
use tidemark_worker::plan::Plan;
use tidemark_worker::result::Output;

use super::quickstart::Event;

/// The result values (JSON text) of `events` through one task of the pipeline `manifest`
/// (named `pipeline`); `finish`: end its input (else it stays open, as a worker's does).
pub fn results(manifest: &str, pipeline: &str, events: &[Event], finish: bool) -> Vec<String> {
    let spec = tidemark_api::parse_manifest(manifest).unwrap().spec;
    let plan = Plan::compile(pipeline, &spec)
        .unwrap()
        .for_tasks(1)
        .unwrap();
    let mut task = Task::new(plan, 0);
    let mut out = Output::default();
    for e in events {
        task.route(e.value.as_bytes(), 0, &mut out);
    }
    if finish {
        task.finish(0, &mut out);
    }
    out.results
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect()
}

/// A result record without `emitted_at`, as text.
pub fn without_emitted_at(value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(value).unwrap();
    v.as_object_mut().unwrap().remove("emitted_at");
    v.to_string()
}
