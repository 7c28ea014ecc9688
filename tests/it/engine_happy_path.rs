//! A whole deploy through the binary, local transport.

use std::fs;

use crate::support::report::effect_kinds;
use crate::support::sandbox::{BRANCH, Sandbox, git};

#[test]
fn request_approve_dispatch_poll_finalize_stamp() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    let wt = wt.to_str().unwrap();
    let (code, r) = sb.event_json("request-approve", "ORCH-7", &[]);
    assert_eq!(
        (code, r["outcome"].as_str()),
        (0, Some("transitioned")),
        "{r}"
    );
    assert_eq!(r["to"], "approve_requested");

    let (code, r) = sb.event_json(
        "approved",
        "ORCH-7",
        &["--branch", BRANCH, "--worktree", wt, "--actor", "alice"],
    );
    assert_eq!(
        (code, r["outcome"].as_str()),
        (0, Some("transitioned")),
        "{r}"
    );
    assert_eq!(r["to"], "initiated");
    assert_eq!(effect_kinds(&r), ["write_marker", "write_ticket", "local"]);
    assert_eq!(r["effects"][0]["marker"], "initiated", "{r}");
    let id = r["effects"][1]["dispatch_id"].as_str().unwrap().to_owned();
    assert_eq!(sb.dispatch_id("ORCH-7").as_deref(), Some(id.as_str()));
    let argv = &r["effects"][2]["argv"];
    assert_eq!(argv[0], "bash");
    let command = argv[2].as_str().unwrap();
    assert!(
        command.contains(&format!("EXPECTED_REVISION={}", sb.tip())),
        "{argv}"
    );
    assert!(command.contains(&format!("/dispatch-{id} ")), "{argv}");
    assert!(command.contains(&format!("/result-{id}'")), "{argv}");

    // Poll needs no more than the repo and the work item: the rest was recorded.
    let r = sb.poll_until_final("ORCH-7", &[]);
    assert_eq!(r["outcome"], "transitioned", "{r}");
    assert_eq!(r["to"], "finalized_success");
    assert_eq!(sb.hook_runs(), 1);
    assert_eq!(
        fs::read_to_string(sb.result_file("ORCH-7")).unwrap(),
        "0\n",
        "the result of this dispatch"
    );
    assert!(
        sb.item_dir("ORCH-7")
            .join(format!("claimed-{id}"))
            .is_file(),
        "the host claimed the ticket"
    );
    assert!(
        !sb.item_dir("ORCH-7")
            .join(format!("dispatch-{id}"))
            .exists()
    );

    sb.assert_deploy_log("ORCH-7", "SUCCESS", "0");
    let pushed = git(
        &sb.remote(),
        &["log", "-1", "--format=%an|%ae|%cn|%ce|%s", BRANCH],
    );
    assert_eq!(
        pushed.trim(),
        "deploy-finalizer|deploy-finalizer@example.test|deploy-finalizer|deploy-finalizer@example.test|deploy(ORCH-036): finalize SUCCESS for ORCH-7"
    );

    let (code, r) = sb.event_json("poll", "ORCH-7", &[]);
    assert_eq!((code, r["outcome"].as_str()), (0, Some("unchanged")));
    let (code, r) = sb.event_json("merge-verified", "ORCH-7", &["--merged", "true"]);
    assert_eq!((code, r["outcome"].as_str()), (0, Some("unchanged")), "{r}");
    let log = fs::read_to_string(sb.deploy_log("ORCH-7")).unwrap();
    assert!(log.starts_with("---\ndeploy_status: SUCCESS\nwork_item: ORCH-7\nhook_exit_code: 0\ndeployed_by: deploy-finalizer\nmerged_to_main: true\n---\n"), "{log}");

    let (code, r) = sb.event_json("reset", "ORCH-7", &[]);
    assert_eq!((code, r["to"].as_str()), (0, Some("idle")));
    assert!(!sb.item_dir("ORCH-7").exists());
    let hist = sb.run(&[
        "history",
        "--repo",
        "orchestrator",
        "--work-item",
        "ORCH-7",
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&hist.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<_> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert!(
        events.starts_with(&["request-approve", "approved", "poll"]),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&"reset"));
    assert!(lines.iter().any(|l| l["actor"] == "alice"));
}
