//! Findings of a hostile review of issue 18 ("the verdict tells the truth,
//! whatever the disk, the clock or the worktree do"): each test reproduces
//! one way around it with the real binary, `git` and `bash`.

use std::fs;

use crate::support::sandbox::*;

use crate::worktree_config::{ITEM, assert_never_ran, deploy, planted};

/// A local remote with alternates runs its `core.alternateRefsCommand`
/// when receive-pack advertises its refs.
#[test]
fn a_local_remote_s_alternate_refs_command_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let program = planted(&sb, "alternate-refs", &marker);
    let other = sb.root().join("other.git");
    git(sb.root(), &["init", "-q", "--bare", path_str(&other)]);
    fs::write(
        sb.remote().join("objects/info/alternates"),
        format!("{}\n", other.join("objects").display()),
    )
    .unwrap();
    git(
        &sb.remote(),
        &["config", "core.alternateRefsCommand", path_str(&program)],
    );
    let r = deploy(&sb);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_never_ran(&marker);
    assert_eq!(sb.finalized_json(ITEM)["pushed"], true);
}

/// A local non-bare remote with `receive.denyCurrentBranch=updateInstead`
/// checks the pushed commit out there: that remote's smudge filter runs.
/// The push to a checked-out branch is refused instead (recorded as not
/// pushed: the safe side).
#[test]
fn a_local_checked_out_remote_s_filter_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let program = planted(&sb, "smudge", &marker);
    let other = sb.root().join("checkout");
    git(
        sb.root(),
        &["clone", "-q", path_str(&sb.remote()), path_str(&other)],
    );
    git(&other, &["checkout", "-q", BRANCH]);
    git(
        &other,
        &["config", "receive.denyCurrentBranch", "updateInstead"],
    );
    git(&other, &["config", "filter.x.smudge", path_str(&program)]);
    fs::write(other.join(".git/info/attributes"), "* filter=x\n").unwrap();
    git(
        &sb.worktree(),
        &["config", "remote.origin.url", path_str(&other)],
    );
    let r = deploy(&sb);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_never_ran(&marker);
    assert_eq!(sb.finalized_json(ITEM)["pushed"], false);
}

/// Two `init` at once on a new state directory: each drew its own id and
/// renamed its record into place, so all but the last reported "created" an
/// identity that is not the one on disk (and replaced one that was there).
/// Exactly one creates it; every other reports the one on disk.
#[test]
fn concurrent_inits_create_one_identity_and_all_report_it() {
    let mut sb = Sandbox::new();
    for round in 0..5 {
        let fresh = sb.root().join(format!("fresh-{round}"));
        fs::create_dir(&fresh).unwrap();
        sb.set("REPOS_DIR", fresh.clone().into_os_string());
        let children: Vec<_> = (0..6)
            .map(|_| {
                let mut cmd = sb.cmd();
                cmd.args(["init", "--json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().expect("spawn init")
            })
            .collect();
        let reports: Vec<serde_json::Value> = children
            .into_iter()
            .map(|child| {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "{out:?}");
                serde_json::from_slice(&out.stdout).unwrap()
            })
            .collect();
        let on_disk: serde_json::Value =
            serde_json::from_slice(&fs::read(fresh.join(".selfdeploy/identity.json")).unwrap())
                .unwrap();
        let created = reports.iter().filter(|r| r["created"] == true).count();
        assert_eq!(created, 1, "one init creates the identity: {reports:?}");
        for r in &reports {
            assert_eq!(r["id"], on_disk["id"], "each reports the one on disk: {r}");
        }
    }
}

/// A stdout that cannot be written (a full disk) never panics: each command
/// that only prints exits 1 with one line saying the output is incomplete.
/// `completions` handed stdout to `clap_complete`, which panics (exit 101)
/// when its write fails.
#[test]
fn printing_commands_on_a_full_stdout_fail_in_one_line_and_never_panic() {
    let sb = Sandbox::new();
    let commands: &[&[&str]] = &[
        &["completions", "bash"],
        &["completions", "zsh"],
        &["completions", "fish"],
        &["completions", "elvish"],
        &["completions", "powershell"],
        &["man"],
        &["machine", "--format", "dot"],
        &["config"],
        &["status"],
    ];
    for args in commands {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = sb
            .cmd()
            .args(*args)
            .stdout(full)
            .output()
            .expect("run selfdeploy");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

/// The result deadline failed the deploy, then the hook ended (its result
/// is there), then the item was reset: the reset said the run "has no
/// verdict yet ... its result and hook.log still land there", the history
/// recorded it as a run that "ran on after a reset of the item" and
/// `status` as "reset while it ran": it had ended before the reset.
#[test]
fn a_run_that_ended_before_the_reset_is_never_said_to_run_on_after_it() {
    use crate::support::record::{count, history};
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "1".into());
    let hold = Hold::hook(&sb);
    sb.approve_item(ITEM);
    let id = sb.dispatch_id(ITEM).unwrap();
    assert!(wait_for(std::time::Duration::from_secs(10), || sb
        .item_dir(ITEM)
        .join(format!("claimed-{id}"))
        .exists()));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_failed", "{r}");
    hold.release();
    sb.wait_for_result(ITEM);

    let (code, r) = sb.event_json("reset", ITEM, &[]);
    assert_eq!((code, r["to"].as_str()), (0, Some("idle")), "{r}");
    let notes = r["notes"].to_string();
    assert!(!notes.contains("still land there"), "{notes}");
    assert!(notes.contains(&format!("result-{id} is there")), "{notes}");

    // Status shows the kept run with its result: ended, not running.
    let status = sb.status_json(ITEM);
    let kept = &status["kept_runs"];
    assert_eq!(kept[0]["dispatch_id"], id.as_str(), "{status}");
    assert!(kept[0]["result"].is_string(), "{status}");
    assert!(
        !status.to_string().contains("may still be running"),
        "{status}"
    );
    sb.event_json("poll", ITEM, &[]);
    let h = history(&sb, ITEM);
    assert_eq!(count(&h, "late-result"), 1, "{h:#?}");
    let late = h.iter().find(|e| e["event"] == "late-result").unwrap();
    let reason = late["reason"].as_str().unwrap();
    assert!(!reason.contains("ran on after a reset"), "{reason}");
    assert!(reason.contains("exit code 0: SUCCESS"), "{reason}");
}

/// HISTORY_HMAC_KEY needs 32 bytes of entropy: a key that repeats a short
/// string (64 times `a`, `ab` 32 times, one 16-digit block four times) has
/// the length of one that does, and was taken for it. A real key is taken.
#[test]
fn a_history_key_that_repeats_a_short_string_is_refused() {
    let sb = Sandbox::new();
    let weak = [
        "a".repeat(64),
        "ab".repeat(32),
        "0123456789abcdef".repeat(4),
        "Zm9vYmFyYmF6cXV4".repeat(4),
    ];
    for key in &weak {
        let out = sb
            .cmd()
            .args(["config", "--check"])
            .env("HISTORY_HMAC_KEY", key)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
        assert!(err.contains("entropy"), "{key}: {err}");
        let (code, r) = {
            let out = sb
                .event_cmd("request-approve", ITEM)
                .env("HISTORY_HMAC_KEY", key)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        assert_eq!(code, Some(1), "{key}: {r}");
    }
    let out = sb.run(&["gen-secrets"]);
    let generated = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = generated
        .lines()
        .find_map(|l| l.strip_prefix("HISTORY_HMAC_KEY="))
        .expect("gen-secrets writes a history key")
        .to_owned();
    let out = sb
        .cmd()
        .args(["config", "--check"])
        .env("HISTORY_HMAC_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
