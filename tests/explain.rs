//! `selfdeploy explain` shows each guard and what would happen, writing nothing.

mod support;

use support::sandbox::Sandbox;

#[test]
fn explain_names_the_failing_guard_and_writes_nothing() {
    let mut sb = Sandbox::new();
    let (code, _) = sb.event_json("request-approve", "ORCH-7", &[]);
    assert_eq!(code, 0);
    sb.set("STAGING_PORT", "8500".into());
    let before = sb.disk();
    let wt = sb.worktree();
    let out = sb.run(&[
        "explain",
        "approved",
        "--repo",
        "orchestrator",
        "--work-item",
        "ORCH-7",
        "--worktree",
        wt.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("state on disk: approve_requested"), "{text}");
    assert!(text.contains("applies            pass"), "{text}");
    assert!(
        text.contains("staging_port       FAIL  staging port guard"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "freshness          pass  validated revision {}",
            sb.tip()
        )),
        "{text}"
    );
    assert!(
        text.contains("condition: staging port = prod port"),
        "{text}"
    );
    assert!(text.contains("refused (dry run)"), "{text}");
    assert_eq!(sb.disk(), before, "explain wrote something");
}

#[test]
fn explain_json_shows_what_a_dispatch_would_run() {
    let sb = Sandbox::new();
    sb.event_json("request-approve", "ORCH-8", &[]);
    let out = sb.run(&[
        "explain",
        "approved",
        "--repo",
        "orchestrator",
        "--work-item",
        "ORCH-8",
        "--revision",
        "feed",
        "--json",
    ]);
    let x = support::sandbox::parse_json(&out);
    assert_eq!(x["report"]["outcome"], "transitioned");
    assert_eq!(x["report"]["condition"], "guards pass, dispatched");
    assert_eq!(x["report"]["effects"][1]["kind"], "local");
    assert!(
        x["guards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["passes"] == true),
        "{x}"
    );
    assert_eq!(sb.hook_runs(), 0);
    assert!(!sb.item_dir("ORCH-8").join("initiated").exists());
}
