//! The record of a deploy survives what a tired operator and a full disk do
//! to it: Ctrl-C and kill -9 during an event, a full disk at each write, the
//! wrong user, a claim landing during a forced reset. Each case drives the
//! binary against real files, git and bash.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::record::*;
use crate::support::report::*;
use crate::support::sandbox::*;

const REPO: &str = "orchestrator";

/// Ctrl-C while ssh runs: the launch is never cut short silently. The
/// event finishes, is recorded, and the CLI says a signal came.
#[test]
fn sigint_during_the_launch_finishes_and_records_the_dispatch() {
    let mut sb = Sandbox::new();
    let item = "SIG-1";
    sb.request_approve(item);
    let gate = sb.root().join("gate");
    fs::write(&gate, "").unwrap();
    slow_bash(&mut sb, &gate);
    let child = spawn_approve(&sb, item);
    let id = wait_for_ticket(&sb, item);
    signal(&child, libc::SIGINT);
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    fs::remove_file(&gate).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["outcome"].as_str(), r["to"].as_str()),
        (Some("transitioned"), Some("initiated")),
        "{r}"
    );
    assert!(
        stderr.contains("SIGINT and SIGTERM arrived while the event acted: it was finished"),
        "{stderr}"
    );
    let h = history(&sb, item);
    let last = h.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["outcome"].as_str()),
        (Some("approved"), Some("transitioned")),
        "{h:?}"
    );
    assert!(!pending(&sb, item).exists());
    sb.wait_for_result(item);
    assert!(sb.item_dir(item).join(format!("claimed-{id}")).exists());
    assert_eq!(sb.hook_runs(), 1);
}

/// Ctrl-C before the event acts (here: while it waits for the item's
/// lock): it stops there, with nothing done, and says so (exit 130).
#[test]
fn sigint_before_the_event_acts_stops_it_with_nothing_done() {
    let sb = Sandbox::new();
    let item = "SIG-2";
    sb.request_approve(item);
    let lock = sb
        .state_root()
        .join(format!(".selfdeploy/locks/{REPO}/{item}.lock"));
    let mut holder = Command::new(tool("flock"))
        .arg(&lock)
        .args(["-c", "sleep 1.5"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = sb.disk();
    let child = spawn_approve(&sb, item);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    holder.wait().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 130, "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGINT before the event acted; nothing done"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let after = sb.disk();
    let state: Vec<_> = after
        .keys()
        .filter(|p| p.starts_with(sb.item_dir(item)))
        .collect();
    assert_eq!(
        state,
        before
            .keys()
            .filter(|p| p.starts_with(sb.item_dir(item)))
            .collect::<Vec<_>>(),
        "no state file written"
    );
    assert!(!pending(&sb, item).exists());
    // The refusal itself is in the history, as every event is.
    let last = history(&sb, item).pop().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["outcome"].as_str()),
        (Some("approved"), Some("error")),
        "{last}"
    );
    sb.assert_no_hook_run("interrupted before the dispatch");
}

/// kill -9 of the engine mid-launch: its intent is in place, and the next
/// event (here the watch's pass, then a poll) writes the approval's entry
/// first, saying what is known and what is not.
#[test]
fn kill_9_mid_launch_leaves_an_intent_the_next_pass_records() {
    let mut sb = Sandbox::new();
    let item = "KILL-1";
    sb.request_approve(item);
    let gate = sb.root().join("gate");
    fs::write(&gate, "").unwrap();
    slow_bash(&mut sb, &gate);
    let mut child = spawn_approve(&sb, item);
    let id = wait_for_ticket(&sb, item);
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let intent: Value = serde_json::from_slice(&fs::read(pending(&sb, item)).unwrap()).unwrap();
    assert_eq!(intent["finished"], false, "{intent}");
    assert_eq!(intent["dispatch_id"], id.as_str(), "{intent}");
    assert_eq!(intent["entry"]["event"], "approved", "{intent}");
    // The history lacks the approval for now; status still shows the truth.
    assert!(history(&sb, item).iter().all(|e| e["event"] != "approved"));

    // The watch's pass records it, with the dispatch's fate as the files
    // show it (the ticket is still unclaimed: the launch is unknown).
    let out = sb.run(&["watch", "--once"]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(
        text(&out.stdout).contains("recorded an earlier approved"),
        "{out:?}"
    );
    assert!(!pending(&sb, item).exists());
    let h = history(&sb, item);
    let approved: Vec<&Value> = h.iter().filter(|e| e["event"] == "approved").collect();
    assert_eq!(approved.len(), 1, "{h:?}");
    let e = approved[0];
    assert_eq!(
        (e["outcome"].as_str(), e["to"].as_str()),
        (Some("interrupted"), Some("initiated")),
        "{e}"
    );
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "dispatch {id} was written, and whether its launch reached the host is not known"
        )),
        "{reason}"
    );
    // The launch goes on (its process group survived the engine); the
    // deploy is finalized once, and nothing is recorded twice.
    fs::remove_file(&gate).unwrap();
    sb.wait_for_result(item);
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let h = history(&sb, item);
    assert_eq!(
        h.iter().filter(|e| e["event"] == "approved").count(),
        1,
        "{h:?}"
    );
    assert_eq!(sb.hook_runs(), 1);
}

/// A full disk at every write of the event: nothing acts unless its record
/// can be kept; once space returns, everything works and the history has
/// every event that acted.
#[test]
fn a_full_disk_never_acts_unrecorded() {
    let mut sb = Sandbox::new();
    let item = "FULL-1";
    let mount = Tmpfs::mount(&sb.root().join("tmpfs"), "512k");
    let state = mount.0.join("state");
    fs::create_dir(&state).unwrap();
    sb.set("REPOS_DIR", state.clone().into_os_string());
    sb.set("HOST_REPOS_DIR", state.clone().into_os_string());
    sb.init_repos_dir();

    // Full before request-approve: refused with nothing written.
    let filler = mount.fill();
    let out = sb.event("request-approve", item, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("cannot record the event before it acts"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing done"), "{stderr}");
    assert!(
        !state
            .join(format!(".deploy-state-{REPO}/{item}/approve-requested"))
            .exists()
    );
    fs::remove_file(&filler).unwrap();
    sb.request_approve(item);

    // Full before the approval: nothing is dispatched.
    let filler = mount.fill();
    let args = sb.approve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sb.event("approved", item, &args);
    assert_eq!(code(&out), 1, "{out:?}");
    assert!(sb.dispatch_id(item).is_none(), "no dispatch on a full disk");
    sb.assert_no_hook_run("the disk was full before the approval");
    fs::remove_file(&filler).unwrap();

    // Space returns: the deploy goes through, and the history holds every
    // event that acted, in order, and no intent is left.
    let (c, r) = sb.approve(item);
    assert_eq!(c, 0, "{r}");
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let h = history(&sb, item);
    let acted: Vec<(&str, &str)> = h
        .iter()
        .filter(|e| e["outcome"] == "transitioned")
        .map(|e| (e["event"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        acted,
        [
            ("request-approve", "approve_requested"),
            ("approved", "initiated"),
            ("poll", "finalized_success")
        ],
        "{h:?}"
    );
    assert!(
        !state
            .join(format!(".selfdeploy/pending/{REPO}/{item}.json"))
            .exists()
    );
}

/// An operator who runs an acting command as root (or anyone but the owner
/// of REPOS_DIR) is refused before anything is written, with the fix named;
/// reading works for anyone who can read; the owner acts as usual.
#[test]
fn only_the_owner_of_repos_dir_acts() {
    let sb = Sandbox::new();
    let item = "OWN-1";
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    assert_eq!(
        me, 0,
        "this test changes a directory's owner, which needs root (CI runs as root)"
    );
    let owner = 65534u32; // nobody
    // The whole sandbox is handed to the owner, so that it can act there.
    let chown = |path: &Path| {
        let status = Command::new(tool("chown"))
            .args(["-R", &format!("{owner}:{owner}")])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    };
    chown(sb.root());
    fs::set_permissions(
        sb.root(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let before = sb.disk();

    // root: refused, exit 1, one line naming the owner and the fix; nothing written.
    for args in [
        vec![
            "event",
            "request-approve",
            "--repo",
            REPO,
            "--work-item",
            item,
        ],
        vec!["watch", "--once"],
    ] {
        let out = sb.run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("belongs to nobody (uid 65534) but this command runs as root (uid 0)")
                && stderr.contains("sudo -u nobody selfdeploy"),
            "{stderr}"
        );
    }
    // doctor names it as a failure and writes nothing either.
    let out = sb.run(&["doctor", "--json"]);
    assert_eq!(code(&out), 1, "{out:?}");
    let owner_check = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|c| c["name"] == "REPOS_DIR owner")
        .expect("an owner check");
    assert_eq!(owner_check["status"], "fail", "{owner_check}");
    assert!(
        owner_check["detail"]
            .as_str()
            .unwrap()
            .contains("belongs to nobody"),
        "{owner_check}"
    );
    assert_eq!(sb.disk(), before, "nothing written as root");
    // Reading works as root.
    let out = sb.run(&["status", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let out = sb.run(&[
        "event",
        "request-approve",
        "--repo",
        REPO,
        "--work-item",
        item,
        "--dry-run",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");

    // The owner acts, and every file it creates is its own. The binary is
    // copied where the owner can run it, whatever the build directory's modes.
    let binary = sb.root().join("selfdeploy");
    fs::copy(env!("CARGO_BIN_EXE_selfdeploy"), &binary).unwrap();
    let out = Command::new(tool("setpriv"))
        .args([
            &format!("--reuid={owner}"),
            &format!("--regid={owner}"),
            "--clear-groups",
        ])
        .arg(&binary)
        .args([
            "event",
            "request-approve",
            "--repo",
            REPO,
            "--work-item",
            item,
            "--json",
        ])
        .current_dir(sb.root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", sb.home())
        .envs(&sb.env)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    let before: std::collections::BTreeMap<_, _> =
        before.into_iter().chain([(binary, Vec::new())]).collect();
    use std::os::unix::fs::MetadataExt;
    let created: Vec<PathBuf> = sb
        .disk()
        .into_keys()
        .filter(|p| !before.contains_key(p))
        .collect();
    assert!(created.len() >= 3, "state, lock and history: {created:?}");
    for path in &created {
        let meta = fs::symlink_metadata(path).unwrap();
        assert_eq!(meta.uid(), owner, "{} is not the owner's", path.display());
    }
    assert!(sb.item_dir(item).join("approve-requested").exists());
}

/// A poller asking again and again while the hook runs: the deferred poll
/// is recorded once per state, with a count of its repeats and the last
/// time; the next change is a new entry; a signed history still verifies.
#[test]
fn a_deferred_poll_is_recorded_once_per_state_with_a_count() {
    let mut sb = Sandbox::new();
    let key = "489759cf3eed9c0624e0433b1b608088b256266255f273e173838963365cda23";
    sb.set("HISTORY_HMAC_KEY", key.into());
    let item = "REP-1";
    fs::write(sb.host_repo().join("hold"), "").unwrap();
    sb.request_approve(item);
    let (c, r) = sb.approve(item);
    assert_eq!(c, 0, "{r}");
    assert!(
        wait_for(Duration::from_secs(10), || sb
            .protocol_files(item)
            .iter()
            .any(|f| f.starts_with("claimed-"))),
        "the host never claimed"
    );
    for _ in 0..12 {
        let (c, r) = sb.event_json("poll", item, &[]);
        assert_eq!((c, r["outcome"].as_str()), (0, Some("deferred")), "{r}");
    }
    let h = history(&sb, item);
    let deferred: Vec<&Value> = h.iter().filter(|e| e["outcome"] == "deferred").collect();
    assert_eq!(deferred.len(), 1, "{h:#?}");
    assert_eq!(deferred[0]["repeats"]["count"], 11, "{h:#?}");
    assert!(deferred[0]["repeats"]["last"].is_string(), "{h:#?}");
    let table = text(
        &sb.run(&["history", "--repo", REPO, "--work-item", item])
            .stdout,
    );
    assert!(table.contains("(again 11 times, the last at "), "{table}");
    // The hook ends: the next poll is news.
    fs::remove_file(sb.host_repo().join("hold")).unwrap();
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let h = history(&sb, item);
    assert_eq!(h.last().unwrap()["to"], "finalized_success", "{h:#?}");
    assert_eq!(
        h.iter().filter(|e| e["outcome"] == "deferred").count(),
        1,
        "{h:#?}"
    );
    let out = sb.run(&["history", "--repo", REPO, "--work-item", item, "--verify"]);
    assert_eq!(code(&out), 0, "{out:?}");
}

/// A bind mount of `dir` on itself, read-only (even for root), undone when
/// dropped.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> ReadOnly {
        for args in [
            &["--bind", path_str(dir), path_str(dir)][..],
            &["-o", "remount,ro,bind", path_str(dir)],
        ] {
            let out = Command::new(tool("mount")).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "this test bind-mounts a directory read-only, which needs root (CI runs as root): {}",
                text(&out.stderr)
            );
        }
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new(tool("umount")).arg(&self.0).status();
    }
}

/// Issue 18.9: exit 1 means nothing changed. A poll whose deploy log was
/// written into the worktree and whose `finalized` cannot then be written
/// (the state directory turned read-only) has changed something: it exits 5,
/// and its one line says what was done and where the item is; the history
/// records it. Once the directory is writable, the next poll finalizes. An
/// event whose first effect fails changed nothing and still exits 1.
#[test]
fn an_error_after_a_change_is_exit_5_and_says_what_was_done() {
    let sb = Sandbox::new();
    let item = "AFTER-1";
    sb.approve_item(item);
    sb.wait_for_result(item);
    let log = sb.deploy_log(item);
    {
        let _ro = ReadOnly::mount(&sb.item_dir(item));
        let out = sb.event("poll", item, &[]);
        let err = text(&out.stderr);
        assert_eq!(code(&out), 5, "{out:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("the event had already acted"), "{err}");
        assert!(err.contains("write_deploy_log"), "{err}");
        assert!(err.contains("initiated -> initiated on disk"), "{err}");
        assert!(log.exists(), "the log the error names is there");
    }
    let h = history(&sb, item);
    let last = h.last().unwrap();
    assert_eq!(last["outcome"], "error", "{last}");
    assert!(
        last["reason"].as_str().unwrap().contains("already acted"),
        "{last}"
    );
    let done = sb.poll_until_final(item, &[]);
    assert_eq!(done["to"], "finalized_success", "{done}");

    let repo_dir = sb.state_root().join(format!(".deploy-state-{REPO}"));
    let _ro = ReadOnly::mount(&repo_dir);
    let out = sb.event("request-approve", "AFTER-2", &[]);
    assert_eq!(code(&out), 1, "{out:?}");
    assert!(!text(&out.stderr).contains("already acted"), "{out:?}");
}
