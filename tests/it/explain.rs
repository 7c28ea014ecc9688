//! `selfdeploy explain` shows each guard and what would happen, writing nothing.

use crate::support::report::effect_kinds;
use crate::support::sandbox::Sandbox;

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
    // Refused, as `event approved --dry-run` would be: exit 3.
    assert_eq!(out.status.code(), Some(3), "{text}");
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
        text.contains(&format!(
            "worktree           pass  {} is a git work tree",
            wt.display()
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
    let before = sb.disk();
    let wt = sb.worktree();
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "approved",
            "--repo",
            "orchestrator",
            "--work-item",
            "ORCH-8",
            "--revision",
            "feed123",
            "--json",
        ];
        args.extend_from_slice(extra);
        crate::support::report::parse_json(&sb.run(&args))
    };
    let x = explain(&["--worktree", wt.to_str().unwrap()]);
    assert_eq!(x["report"]["outcome"], "transitioned", "{x}");
    assert_eq!(x["report"]["condition"], "guards pass, dispatch sent");
    assert_eq!(
        effect_kinds(&x["report"]),
        ["write_marker", "write_ticket", "local"],
        "{x}"
    );
    let id = x["report"]["effects"][1]["dispatch_id"].as_str().unwrap();
    let command = x["report"]["effects"][2]["argv"][2].as_str().unwrap();
    assert!(
        command.contains(&format!("/dispatch-{id} "))
            && command.contains(" EXPECTED_REVISION=feed123 "),
        "{command}"
    );
    assert!(
        x["guards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["passes"] == true),
        "{x}"
    );

    // Without a worktree there (the default path does not exist), the
    // worktree guard fails and names the path.
    let x = explain(&[]);
    assert_eq!(x["report"]["outcome"], "refused", "{x}");
    assert_eq!(x["report"]["condition"], "no worktree", "{x}");
    assert_eq!(x["report"]["effects"], serde_json::json!([]), "{x}");
    let failing: Vec<&str> = x["guards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["passes"] == false)
        .map(|g| g["guard"].as_str().unwrap())
        .collect();
    assert_eq!(failing, ["worktree"], "{x}");

    // Neither explain wrote or launched anything: no ticket, no hook.
    assert_eq!(sb.disk(), before, "explain wrote something");
    assert!(!sb.item_dir("ORCH-8").join("initiated").exists());
    sb.assert_no_hook_run("explain launches nothing");
}
