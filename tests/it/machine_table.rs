//! The reviewed table, the running machine and docs/MACHINE.md cannot drift
//! apart: each is compared with the table derived from the machine itself.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use selfdeploy::table::{self, Row};

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn reviewed_table_equals_the_running_machine() {
    let reviewed = table::parse_ron(&repo_file("machines/self_deploy.ron"))
        .unwrap_or_else(|e| panic!("machines/self_deploy.ron: {e}"));
    let derived = table::derive();
    let diff = table::diff(&reviewed, &derived);
    assert!(
        diff.is_empty(),
        "machines/self_deploy.ron differs from the machine; review the change, then regenerate it:\n{}",
        diff.join("\n")
    );
    assert_eq!(reviewed, derived, "same rows, different order");
}

#[test]
fn a_changed_row_is_reported_readably() {
    let mut reviewed = table::derive();
    reviewed[0].to = "initiated".into();
    let diff = table::diff(&reviewed, &table::derive());
    assert_eq!(diff.len(), 2, "{diff:?}");
    assert!(
        diff[0].starts_with("- reviewed only: idle --request-approve [applicable]--> initiated")
    );
    assert!(
        diff[1].starts_with(
            "+ code only:     idle --request-approve [applicable]--> approve_requested"
        )
    );
}

#[test]
fn ron_errors_carry_positions_and_unknown_fields_are_errors() {
    let err = table::parse_ron("[\n  (from: \"idle\", oops: 1)\n]").unwrap_err();
    assert!(err.starts_with("2:"), "{err}");
    assert!(err.contains("oops"), "{err}");
}

#[test]
fn contract_rows_are_in_the_table() {
    let rows = table::derive();
    let has = |from: &str, event: &str, to: &str, outcome: &str| {
        rows.iter()
            .any(|r: &Row| r.from == from && r.event == event && r.to == to && r.outcome == outcome)
    };
    assert!(has(
        "idle",
        "request-approve",
        "approve_requested",
        "transitioned"
    ));
    assert!(has(
        "approve_requested",
        "approved",
        "initiated",
        "transitioned"
    ));
    assert!(has(
        "approve_requested",
        "approved",
        "approve_requested",
        "dispatch_failed"
    ));
    assert!(has("initiated", "approved", "initiated", "unchanged"));
    assert!(has("initiated", "poll", "initiated", "deferred"));
    assert!(has("initiated", "poll", "finalized_failed", "transitioned"));
    assert!(has("initiated", "reset", "initiated", "refused"));
    assert!(has(
        "finalized_success",
        "merge-verified",
        "finalized_success",
        "unchanged"
    ));
    // Every pair appears at least once.
    assert_eq!(
        rows.iter()
            .map(|r| (&r.from, &r.event))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        25
    );
}

#[test]
fn machine_doc_is_current() {
    let expected = table::to_markdown(&table::derive());
    assert!(
        repo_file("docs/MACHINE.md") == expected,
        "docs/MACHINE.md is stale: run `cargo run -q -- machine --format markdown > docs/MACHINE.md`"
    );
}

#[test]
fn dot_output_renders_with_graphviz() {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graphviz `dot` is needed (apt-get install -y graphviz)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(table::to_dot(&table::derive()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(svg.contains("<svg") && svg.contains("finalized_success"));
}

#[test]
fn json_and_mermaid_shapes() {
    let out = Command::new(env!("CARGO_BIN_EXE_selfdeploy"))
        .args(["machine", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), table::derive().len());
    for key in ["from", "event", "condition", "to", "outcome", "effects"] {
        assert!(rows[0].get(key).is_some(), "{key}");
    }
    let mermaid = table::to_mermaid(&table::derive());
    assert!(mermaid.starts_with("stateDiagram-v2\n    [*] --> idle\n"));
    assert!(!mermaid.contains("illegal"));
}
