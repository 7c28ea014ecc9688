//! A result deadline, through the binary: measured from the approval time in
//! `initiated`, so a restarted engine does not reset it.

use std::fs;

use crate::support::sandbox::{BRANCH, Sandbox};

#[test]
fn silence_past_the_deadline_finalizes_as_failed_timeout() {
    let mut sb = Sandbox::new();
    fs::write(sb.host_repo().join("hold"), "").unwrap();
    let wt = sb.worktree();
    sb.event_json("request-approve", "ORCH-40", &[]);
    let (code, r) = sb.event_json(
        "approved",
        "ORCH-40",
        &["--branch", BRANCH, "--worktree", wt.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{r}");

    // The host claims in the background: wait for it, so that the poll
    // below meets a claimed ticket (an unclaimed one is revoked instead).
    assert!(
        crate::support::sandbox::wait_for(std::time::Duration::from_secs(10), || {
            sb.protocol_files("ORCH-40")
                .iter()
                .any(|f| f.starts_with("claimed-"))
        }),
        "the host never claimed: {:?}",
        sb.protocol_files("ORCH-40")
    );
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "3600".into());
    let (_, r) = sb.event_json("poll", "ORCH-40", &[]);
    assert_eq!(r["outcome"], "deferred", "{r}");

    // The dispatch happened two hours ago, as far as the record and the
    // file's time say.
    sb.backdate_dispatch("ORCH-40", 7200);

    let (code, r) = sb.event_json("poll", "ORCH-40", &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (r["to"].as_str(), r["condition"].as_str()),
        (
            Some("finalized_failed"),
            Some("no result, deadline passed, pushed")
        ),
        "{r}"
    );
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("the result deadline is 3600 s"),
        "{r}"
    );
    sb.assert_deploy_log("ORCH-40", "FAILED", "timeout");
    let history = sb.run(&[
        "history",
        "--repo",
        "orchestrator",
        "--work-item",
        "ORCH-40",
        "--json",
    ]);
    let last = String::from_utf8_lossy(&history.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    assert!(last.contains("deadline"), "{last}");
    fs::remove_file(sb.host_repo().join("hold")).unwrap();
}
