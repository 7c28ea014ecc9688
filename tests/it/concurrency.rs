//! Several processes deliver the same event to the same work item at once:
//! the per-item lock makes exactly one of them act.

use std::fs;
use std::process::Output;
use std::sync::Barrier;

use serde_json::Value;

use crate::support::report::*;
use crate::support::sandbox::*;

const ITEM: &str = "ORCH-7";
const N: usize = 8;

/// Runs `event <event> ...` in N processes started together; returns
/// (exit code, report) for each.
fn at_once(sb: &Sandbox, event: &str, extra: &[&str]) -> Vec<(i32, Value)> {
    let barrier = Barrier::new(N);
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let actor = format!("caller-{i}");
                    let mut cmd = sb.event_cmd(event, ITEM);
                    cmd.args(extra).args(["--actor", &actor]);
                    barrier.wait();
                    cmd.output().expect("run selfdeploy")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    outputs
        .iter()
        .map(|out| {
            assert!(
                out.stderr.is_empty(),
                "stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code().unwrap_or(-1), parse_json(out))
        })
        .collect()
}

fn count(reports: &[(i32, Value)], outcome: &str) -> usize {
    reports
        .iter()
        .filter(|(_, r)| r["outcome"] == outcome)
        .count()
}

fn history_outcomes(sb: &Sandbox, event: &str) -> Vec<String> {
    let out = sb.run(&["history", "--repo", REPO, "--work-item", ITEM, "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == event)
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn eight_concurrent_approvals_dispatch_exactly_once() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    let (code, r) = sb.event_json("request-approve", ITEM, &[]);
    assert_eq!(code, 0, "{r}");

    let reports = at_once(
        &sb,
        "approved",
        &["--worktree", wt.to_str().unwrap(), "--branch", BRANCH],
    );
    assert!(reports.iter().all(|(code, _)| *code == 0), "{reports:?}");
    assert_eq!(count(&reports, "transitioned"), 1, "{reports:?}");
    assert_eq!(count(&reports, "unchanged"), N - 1, "{reports:?}");
    let launches: usize = reports
        .iter()
        .map(|(_, r)| {
            r["effects"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "local")
                .count()
        })
        .sum();
    assert_eq!(launches, 1, "{reports:?}");
    let mut history = history_outcomes(&sb, "approved");
    history.sort();
    assert_eq!(history.len(), N, "{history:?}");
    assert_eq!(history.iter().filter(|o| *o == "transitioned").count(), 1);

    // Wait until the deploy is over before counting the hook's runs.
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1);
    // One dispatch on disk: its ticket claimed, its result, nothing else.
    let id = sb
        .dispatch_id(ITEM)
        .expect("initiated records the dispatch");
    assert_eq!(
        sb.protocol_files(ITEM),
        [format!("claimed-{id}"), format!("result-{id}")]
    );
}

#[test]
fn eight_concurrent_polls_finalize_exactly_once() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    sb.event_json("request-approve", ITEM, &[]);
    let (code, r) = sb.event_json(
        "approved",
        ITEM,
        &["--worktree", wt.to_str().unwrap(), "--branch", BRANCH],
    );
    assert_eq!(
        (code, r["outcome"].as_str()),
        (0, Some("transitioned")),
        "{r}"
    );

    // Wait (bounded) for the host wrapper's result, without polling through
    // the engine.
    assert_eq!(sb.wait_for_result(ITEM).trim(), "0");

    let reports = at_once(&sb, "poll", &[]);
    assert!(reports.iter().all(|(code, _)| *code == 0), "{reports:?}");
    assert_eq!(count(&reports, "transitioned"), 1, "{reports:?}");
    assert_eq!(count(&reports, "unchanged"), N - 1, "{reports:?}");
    assert!(
        reports.iter().all(|(_, r)| r["to"] == "finalized_success"),
        "{reports:?}"
    );
    assert_eq!(sb.finalizer_commits().len(), 1);
    let log = fs::read_to_string(sb.deploy_log(ITEM)).unwrap();
    assert!(log.starts_with("---\ndeploy_status: SUCCESS\n"), "{log}");
    assert_eq!(sb.hook_runs(), 1);
    let id = sb
        .dispatch_id(ITEM)
        .expect("initiated records the dispatch");
    assert_eq!(
        sb.protocol_files(ITEM),
        [format!("claimed-{id}"), format!("result-{id}")]
    );
}
