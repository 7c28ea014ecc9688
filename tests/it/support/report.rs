//! Reading what a `selfdeploy` run returned: its exit code and output, and
//! the JSON report of an event (its outcome and its effects).

use std::process::Output;

use serde_json::Value;

/// A command's exit code (-1 when a signal ended it).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Bytes of output as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's exit code, stdout and stderr (lossy).
pub fn code_out_err(out: &Output) -> (i32, String, String) {
    (code(out), text(&out.stdout), text(&out.stderr))
}

/// The one JSON line of a `--json` run's stdout, parsed.
pub fn parse_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().unwrap_or_else(|| {
        panic!(
            "no JSON on stdout (exit {:?}); stderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// The report's `outcome` (`<none>` when it has none).
pub fn outcome(r: &Value) -> &str {
    r["outcome"].as_str().unwrap_or("<none>")
}

/// The kinds of the report's effects, in order.
pub fn effect_kinds(report: &Value) -> Vec<String> {
    report["effects"]
        .as_array()
        .unwrap_or_else(|| panic!("no effects list: {report}"))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The dispatch ids of the report's effects of `kind` (`write_ticket`,
/// `revoke_ticket`); none when the report has no effects list.
pub fn effect_ids(report: &Value, kind: &str) -> Vec<String> {
    report["effects"]
        .as_array()
        .map(|effects| {
            effects
                .iter()
                .filter(|e| e["kind"] == kind)
                .map(|e| e["dispatch_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The dispatch id of the report's one `write_ticket` effect, checked to be
/// a dispatch id.
pub fn ticket_id(report: &Value) -> String {
    let tickets = effect_ids(report, "write_ticket");
    assert_eq!(tickets.len(), 1, "exactly one ticket: {report}");
    let id = tickets.into_iter().next().unwrap();
    assert!(is_dispatch_id(&id), "dispatch id {id:?}");
    id
}

/// Whether `id` has the form of a dispatch id: 16 lower-case hex digits.
pub fn is_dispatch_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
