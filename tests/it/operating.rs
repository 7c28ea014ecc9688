//! The operator's tools: a deploy freeze (`lock` / `unlock`), a `--revision`
//! that must look like a commit id, `watch` refusing a REPOS_DIR it cannot
//! write.

use std::fs;

use crate::support::report::code;
use crate::support::sandbox::Sandbox;

const ITEM: &str = "ORCH-90";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_locked_repo_refuses_approvals_with_the_message_and_who_until_unlocked() {
    let mut sb = Sandbox::new();
    sb.set("USER", "carol".into());
    sb.request_approve(ITEM);
    let out = sb.run(&[
        "lock",
        "--repo",
        "Orchestrator",
        "--message",
        "release week: no deploys until Monday",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("orchestrator: locked by carol"),
        "{}",
        stdout(&out)
    );
    let frozen = sb.state_root().join(".selfdeploy/freeze/orchestrator.json");
    assert!(frozen.is_file());

    // A second lock names the first.
    let again = sb.run(&["lock", "--repo", "orchestrator", "--message", "other"]);
    assert_eq!(code(&again), 1);
    assert!(
        stderr(&again).contains("already locked by carol"),
        "{}",
        stderr(&again)
    );

    // Refused, nothing written or run, even with --force.
    for extra in [&[][..], &["--force"][..]] {
        let before = sb.disk_but_own();
        let (c, r) = sb.approve_with(ITEM, extra);
        assert_eq!((c, r["outcome"].as_str()), (3, Some("refused")), "{r}");
        assert_eq!(r["condition"], "repo locked", "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("locked by carol"), "{reason}");
        assert!(
            reason.contains("release week: no deploys until Monday"),
            "{reason}"
        );
        assert!(
            reason.contains("selfdeploy unlock --repo orchestrator"),
            "{reason}"
        );
        assert_eq!(before, sb.disk_but_own());
    }
    sb.assert_no_hook_run("a locked repo dispatches nothing");

    // explain shows the guard.
    let out = sb.run(&[
        "explain",
        "approved",
        "--repo",
        "orchestrator",
        "--work-item",
        ITEM,
        "--json",
    ]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let x: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let guard = x["guards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["guard"] == "freeze")
        .unwrap_or_else(|| panic!("a freeze guard: {x}"));
    assert_eq!(guard["passes"], false, "{guard}");

    // status shows the freeze, in text and JSON.
    let out = sb.run(&["status"]);
    assert!(
        stdout(&out).contains("LOCKED orchestrator: by carol"),
        "{}",
        stdout(&out)
    );
    let out = sb.run(&["status", "--json"]);
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["freeze"]["actor"], "carol", "{row}");
    assert_eq!(
        row["freeze"]["message"], "release week: no deploys until Monday",
        "{row}"
    );

    // Unlocked: the same approval dispatches; the trail keeps both.
    sb.set("USER", "dave".into());
    let out = sb.run(&["unlock", "--repo", "orchestrator"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("unlocked by dave"),
        "{}",
        stdout(&out)
    );
    assert!(!frozen.exists());
    let out = sb.run(&["unlock", "--repo", "orchestrator"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not locked"), "{}", stderr(&out));
    let (c, r) = sb.approve(ITEM);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let out = sb.run(&["status", "--json"]);
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(row["freeze"].is_null(), "{row}");
    let out = sb.run(&["history", "--repo", "orchestrator", "--work-item", ITEM]);
    let text = stdout(&out);
    assert!(
        text.contains("deploy freezes of repo orchestrator"),
        "{text}"
    );
    assert!(text.contains("carol") && text.contains("dave"), "{text}");
    assert!(text.contains("unlock"), "{text}");
}

#[test]
fn a_freeze_does_not_stop_a_deploy_in_flight() {
    let sb = Sandbox::new();
    sb.request_approve(ITEM);
    let (c, r) = sb.approve(ITEM);
    assert_eq!(c, 0, "{r}");
    let out = sb.run(&["lock", "--repo", "orchestrator", "--message", "incident"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
}

#[test]
fn a_damaged_freeze_refuses_and_unlock_clears_it() {
    let sb = Sandbox::new();
    sb.request_approve(ITEM);
    let dir = sb.state_root().join(".selfdeploy/freeze");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("orchestrator.json"), "{not json").unwrap();
    let (c, r) = sb.approve(ITEM);
    assert_eq!((c, r["outcome"].as_str()), (3, Some("refused")), "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("cannot be read"),
        "{r}"
    );
    let out = sb.run(&["unlock", "--repo", "orchestrator"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (c, r) = sb.approve(ITEM);
    assert_eq!(c, 0, "{r}");
}

#[test]
fn lock_is_an_acting_command() {
    let sb = Sandbox::new();
    // An empty message says nothing to whoever approves.
    let out = sb.run(&["lock", "--repo", "orchestrator", "--message", " "]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--message"), "{}", stderr(&out));
    // A bad repo name, before anything.
    let out = sb.run(&["lock", "--repo", "../x", "--message", "m"]);
    assert_eq!(code(&out), 1);
    // A REPOS_DIR without its identity (an unmounted share): refused.
    let mut sb = Sandbox::new();
    let bare = sb.root().join("bare");
    fs::create_dir_all(&bare).unwrap();
    sb.set("REPOS_DIR", bare.clone().into_os_string());
    let out = sb.run(&["lock", "--repo", "orchestrator", "--message", "m"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(!bare.join(".selfdeploy/freeze").exists());
}

#[test]
fn revision_must_look_like_a_commit_id() {
    let sb = Sandbox::new();
    sb.request_approve(ITEM);
    for bad in [
        "abc",
        "main",
        "HEAD~1",
        "g123456",
        "0123456789abcdef; rm -rf x",
    ] {
        let out = sb.event(
            "approved",
            ITEM,
            &[
                "--worktree",
                sb.worktree().to_str().unwrap(),
                "--revision",
                bad,
            ],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{bad}: {err}");
        assert!(err.contains("--revision"), "{bad}: {err}");
        assert!(err.contains("7 to 64 hexadecimal"), "{bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    sb.assert_no_hook_run("a bad revision dispatches nothing");
    let tip = sb.tip();
    let (c, r) = sb.approve_with(ITEM, &["--revision", &tip[..7]]);
    assert_eq!(c, 0, "{r}");
}

#[test]
fn watch_refuses_a_repos_dir_it_cannot_write() {
    let sb = Sandbox::new();
    let own = sb.state_root().join(".selfdeploy");
    // A read-only directory stops even root: make the probe's place a file.
    let probe_parent = own.join("probe");
    fs::write(&probe_parent, "").unwrap();
    let out = sb.run(&["watch", "--once"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("cannot write"), "{err}");
    assert!(err.contains(&own.display().to_string()), "{err}");
    fs::remove_file(&probe_parent).unwrap();
    let out = sb.run(&["watch", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
