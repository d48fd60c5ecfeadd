//! Text the operator shows users: errors as one readable line, and cuts to the limits the API
//! server puts on event notes and condition messages.
//!
//! kube's API error prints the whole `Status` with `Debug` next to its message; put into an
//! event note that is ≈ 2 KB, which kube-apiserver rejects (notes have at most 1024 bytes), and
//! in a condition it is unreadable. Here an API error contributes only the API server's own
//! `message`, the one line `kubectl` would print.

/// Longest event note kube-apiserver accepts, in bytes (`NoteLengthLimit`).
pub const EVENT_NOTE_LIMIT: usize = 1024;
/// Longest condition message of `metav1.Condition`, in bytes.
pub const CONDITION_MESSAGE_LIMIT: usize = 32 * 1024;

/// `err` and its sources as one line (`failed to X: failed to Y: cause`). An API server answer
/// ends the chain with its `message` (not kube's debug dump of the whole `Status`).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(kube::Error::Api(status)) = error.downcast_ref::<kube::Error>() {
            parts.push(if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                status.message.clone()
            });
            break;
        }
        parts.push(error.to_string());
        current = error.source();
    }
    one_line(&parts.join(": "))
}

/// `n worker` or `n workers`.
pub fn workers(n: impl Into<i64>) -> String {
    let n = n.into();
    if n == 1 {
        "1 worker".to_owned()
    } else {
        format!("{n} workers")
    }
}

/// `text` with every run of whitespace (line breaks included) as one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to at most `limit` bytes at a character boundary, ending in `…` when cut.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = limit.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to apply StatefulSet clicks")]
    struct Outer(#[source] kube::Error);

    fn api_error(message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": message,
            "details": {"name": "clicks", "kind": "StatefulSet", "causes": [
                {"reason": "FieldValueForbidden", "message": "Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden", "field": "spec"}
            ]}
        }))
        .expect("status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn an_api_error_reads_as_the_api_servers_message_on_one_line() {
        let message = "StatefulSet.apps \"clicks\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden";
        let chain = error_chain(&Outer(api_error(message)));
        assert_eq!(
            chain,
            format!("failed to apply StatefulSet clicks: {message}")
        );
        assert!(!chain.contains("Status {"), "no debug dump: {chain}");
    }

    #[test]
    fn truncation_keeps_whole_characters_and_marks_the_cut() {
        let text = "é".repeat(600); // 1200 bytes
        let cut = truncate(&text, EVENT_NOTE_LIMIT);
        assert!(cut.len() <= EVENT_NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", EVENT_NOTE_LIMIT), "short");
    }

    #[test]
    fn one_worker_is_singular() {
        assert_eq!(workers(1), "1 worker");
        assert_eq!(workers(0), "0 workers");
        assert_eq!(workers(4), "4 workers");
    }

    #[test]
    fn line_breaks_become_spaces() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
