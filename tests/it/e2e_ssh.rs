//! Whole deploys over a real ssh: the binary dispatches through `ssh` found on
//! `PATH` (the harness wrapper, which reaches a loopback OpenSSH server), the
//! detached hook claims its ticket on the "host", runs and writes
//! `result-<dispatch id>`, and the finalizer
//! writes and pushes the deploy log. Also the ways a dispatch fails: ssh exits
//! non-zero, ssh hangs, ssh is missing.

use std::ffi::OsString;
use std::fs;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{report::*, sandbox::*, sshd::Sshd};

const SOURCE_IMAGE: &str = "orch:staging-e2e";
const TARGET_SERVICE: &str = "orch-e2e";
const TARGET_PORT: &str = "8500";
const TARGET_IMAGE: &str = "orch:prod-e2e";
const PROFILE: &str = "prod";

/// A sandbox that dispatches over ssh to `deploy-host.test` as the sshd user
/// ([`ssh_sandbox`]). Every value that goes into the remote command is set
/// explicitly, so the expected command does not depend on the caller's
/// environment.
fn pinned_ssh_sandbox(user: &str, path: OsString) -> Sandbox {
    let mut sb = ssh_sandbox(user, path);
    for (key, value) in [
        ("DEPLOY_PROD_SOURCE_IMAGE", SOURCE_IMAGE),
        ("DEPLOY_PROD_TARGET_SERVICE", TARGET_SERVICE),
        ("DEPLOY_PROD_TARGET_PORT", TARGET_PORT),
        ("DEPLOY_PROD_TARGET_IMAGE", TARGET_IMAGE),
        ("DEPLOY_PROD_COMPOSE_PROFILE", PROFILE),
        ("IMAGE_FRESHNESS_ENABLED", "true"),
    ] {
        sb.set(key, value.into());
    }
    sb
}

/// The hand-built expectation below writes paths unquoted: true only when
/// they hold nothing but the characters `shlex.quote` leaves alone.
fn assert_shell_safe(s: &str) {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    assert!(
        !s.is_empty() && s.chars().all(safe),
        "test assumes a shell-safe path, got {s:?} (set TMPDIR to a plain path)"
    );
}

/// The remote command of contract section 6 for this sandbox and dispatch
/// `id`, written out by hand: every value is shell-safe, so only `inner` is
/// quoted (it has spaces and no `'`).
fn expected_remote(sb: &Sandbox, work_item: &str, sha: &str, id: &str) -> String {
    let host_repo = sb.host_repo();
    let host_repo = path_str(&host_repo);
    let prev = sb.root().join("host/prev");
    let prev = path_str(&prev);
    let state = sb.item_dir(work_item);
    let state = path_str(&state);
    for s in [host_repo, prev, state] {
        assert_shell_safe(s);
    }
    format!(
        "setsid bash -c 'mv {state}/dispatch-{id} {state}/claimed-{id} || exit 75; \
         cd {host_repo} && REPO={host_repo} SOURCE_IMAGE={SOURCE_IMAGE} \
         TARGET_SERVICE={TARGET_SERVICE} TARGET_PORT={TARGET_PORT} TARGET_IMAGE={TARGET_IMAGE} \
         COMPOSE_PROFILE={PROFILE} PREV_IMAGE_FILE={prev} EXPECTED_REVISION={sha} \
         bash hook.sh --deploy; echo $? > {state}/result-{id}.part \
         && mv {state}/result-{id}.part {state}/result-{id}' \
         >> {state}/hook.log 2>&1 </dev/null &"
    )
}

/// `approved` as alice.
fn approve(sb: &Sandbox, work_item: &str) -> (i32, Value) {
    sb.approve_with(work_item, &["--actor", "alice"])
}

fn ssh_effect(report: &Value) -> &Value {
    let ssh: Vec<&Value> = report["effects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "ssh")
        .collect();
    assert_eq!(ssh.len(), 1, "exactly one ssh effect: {report}");
    ssh[0]
}

fn git_log_line(sb: &Sandbox) -> String {
    git(
        &sb.remote(),
        &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", BRANCH],
    )
    .trim()
    .to_owned()
}

#[test]
fn deploy_over_ssh_succeeds_and_is_finalized() {
    let started = Instant::now();
    let sshd = Sshd::start();
    let user = sshd.user();
    let sb = pinned_ssh_sandbox(&user, sshd.path_with_wrapper());
    let wi = "ORCH-101";
    let tip = sb.tip();

    sb.request_approve(wi);
    let hold = Hold::hook(&sb);
    let (code, r) = approve(&sb, wi);
    assert_eq!(
        (code, r["outcome"].as_str(), r["to"].as_str()),
        (0, Some("transitioned"), Some("initiated")),
        "{r}"
    );
    assert_eq!(effect_kinds(&r), ["write_marker", "write_ticket", "ssh"]);
    let id = ticket_id(&r);
    assert_eq!(
        sb.dispatch_id(wi).as_deref(),
        Some(id.as_str()),
        "initiated names it"
    );

    // The argv of contract section 6, byte for byte.
    let remote = expected_remote(&sb, wi, &tip, &id);
    let ssh = ssh_effect(&r);
    let got_remote = ssh["argv"][4].as_str().unwrap();
    let state = sb.item_dir(wi);
    assert!(
        got_remote.starts_with(&format!(
            "setsid bash -c 'mv {0}/dispatch-{id} {0}/claimed-{id} || exit 75; cd {1} ",
            state.display(),
            sb.host_repo().display()
        )),
        "{got_remote}"
    );
    assert!(got_remote.ends_with(" 2>&1 </dev/null &"), "{got_remote}");
    assert!(
        got_remote.contains(&format!(" EXPECTED_REVISION={tip} ")),
        "{got_remote}"
    );
    assert_eq!(got_remote, remote);
    assert_eq!(
        ssh,
        &json!({
            "kind": "ssh",
            "argv": ["ssh", "-o", "StrictHostKeyChecking=no", format!("{user}@{SSH_HOST}"), remote],
        })
    );

    // The hook really started on the host, and is held there.
    assert!(
        wait_for(Duration::from_secs(10), || sb.hook_runs() == 1),
        "the hook did not start over ssh; hook.log: {:?}",
        fs::read_to_string(sb.item_dir(wi).join("hook.log")).unwrap_or_default()
    );
    let (code, r) = sb.event_json("poll", wi, &[]);
    assert_eq!(
        (code, r["outcome"].as_str(), r["to"].as_str()),
        (0, Some("deferred"), Some("initiated")),
        "{r}"
    );
    let st = sb.status_json(wi);
    assert_eq!(st["state"], "initiated", "{st}");
    assert_eq!(
        st["dispatch"],
        json!({"id": id, "ticket": "claimed"}),
        "{st}"
    );
    assert!(st["result"].is_null(), "{st}");
    assert_eq!(st["stale_results"], json!([]), "{st}");
    let files = st["files"].as_array().unwrap();
    assert!(files.contains(&json!("initiated")), "{st}");
    assert!(files.contains(&json!(format!("claimed-{id}"))), "{st}");
    assert!(!files.contains(&json!(format!("dispatch-{id}"))), "{st}");
    assert!(!files.contains(&json!(format!("result-{id}"))), "{st}");
    assert!(!files.contains(&json!("result")), "{st}");

    hold.release();
    let r = sb.poll_until_final(wi, &[]);
    assert_eq!(
        (r["outcome"].as_str(), r["to"].as_str()),
        (Some("transitioned"), Some("finalized_success")),
        "{r}"
    );
    assert_eq!(sb.hook_runs(), 1, "dispatched exactly once");
    let runs = fs::read_to_string(sb.host_repo().join("runs")).unwrap();
    assert!(
        runs.trim_end().ends_with(&format!("expected={tip}")),
        "EXPECTED_REVISION reached the hook: {runs:?}"
    );
    assert_eq!(
        sb.result_file(wi),
        sb.item_dir(wi).join(format!("result-{id}"))
    );
    assert_eq!(fs::read_to_string(sb.result_file(wi)).unwrap(), "0\n");
    assert_eq!(
        sb.protocol_files(wi),
        [format!("claimed-{id}"), format!("result-{id}")]
    );

    sb.assert_deploy_log(wi, "SUCCESS", "0");
    assert_eq!(
        fs::read_to_string(sb.item_dir(wi).join("hook.log")).unwrap(),
        format!("hook: deploying {SOURCE_IMAGE} as {TARGET_IMAGE}\n")
    );
    assert_eq!(
        git_log_line(&sb),
        format!(
            "deploy-finalizer <deploy-finalizer@example.test>|\
             deploy-finalizer <deploy-finalizer@example.test>|\
             deploy(ORCH-036): finalize SUCCESS for {wi}"
        )
    );
    eprintln!("ssh deploy (success): {:?}", started.elapsed());
}

#[test]
fn hook_failure_over_ssh_is_finalized_failed() {
    let started = Instant::now();
    let sshd = Sshd::start();
    let sb = pinned_ssh_sandbox(&sshd.user(), sshd.path_with_wrapper());
    let wi = "ORCH-102";
    fs::write(sb.host_repo().join("hook-exit"), "1").unwrap();

    sb.request_approve(wi);
    let (code, approved) = approve(&sb, wi);
    assert_eq!(
        (code, approved["outcome"].as_str(), approved["to"].as_str()),
        (0, Some("transitioned"), Some("initiated")),
        "{approved}"
    );
    let r = sb.poll_until_final(wi, &[]);
    assert_eq!(
        (r["outcome"].as_str(), r["to"].as_str()),
        (Some("transitioned"), Some("finalized_failed")),
        "{r}"
    );
    assert_eq!(sb.hook_runs(), 1);
    let id = ticket_id(&approved);
    assert_eq!(
        sb.result_file(wi),
        sb.item_dir(wi).join(format!("result-{id}"))
    );
    assert_eq!(fs::read_to_string(sb.result_file(wi)).unwrap(), "1\n");
    assert_eq!(
        sb.protocol_files(wi),
        [format!("claimed-{id}"), format!("result-{id}")]
    );
    sb.assert_deploy_log(wi, "FAILED", "1");
    assert_eq!(
        git_log_line(&sb),
        format!(
            "deploy-finalizer <deploy-finalizer@example.test>|\
             deploy-finalizer <deploy-finalizer@example.test>|\
             deploy(ORCH-036): finalize FAILED for {wi}"
        )
    );
    let st = sb.status_json(wi);
    assert_eq!(st["state"], "finalized_failed", "{st}");
    eprintln!("ssh deploy (hook exit 1): {:?}", started.elapsed());
}

#[test]
fn failing_ssh_is_dispatch_failed_and_approval_can_be_repeated() {
    let started = Instant::now();
    let sshd = Sshd::start();
    let fake = tempfile::tempdir().unwrap();
    let called = fake.path().join("called");
    write_script(
        &fake.path().join("bin"),
        "ssh",
        &format!(
            "#!/bin/sh\necho called >> '{}'\necho 'ssh: connect to host: Connection refused' >&2\nexit 255\n",
            called.display()
        ),
    );
    let mut sb = pinned_ssh_sandbox(&sshd.user(), path_with_first_dir(&fake.path().join("bin")));
    let wi = "ORCH-103";

    sb.request_approve(wi);
    let (code, r) = approve(&sb, wi);
    assert_eq!(
        (code, r["outcome"].as_str(), r["to"].as_str()),
        (3, Some("dispatch_failed"), Some("approve_requested")),
        "{r}"
    );
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("255"), "reason names the ssh exit: {r}");
    assert_eq!(
        fs::read_to_string(&called).unwrap(),
        "called\n",
        "the fake ssh ran once"
    );
    // The ticket written before the launch is revoked: this dispatch can
    // never run, whatever the host does later.
    assert_eq!(
        effect_kinds(&r),
        [
            "write_marker",
            "write_ticket",
            "ssh",
            "revoke_ticket",
            "remove_marker"
        ],
        "{r}"
    );
    let failed_id = ticket_id(&r);
    assert_eq!(sb.protocol_files(wi), [format!("revoked-{failed_id}")]);
    assert!(!sb.item_dir(wi).join("initiated").exists());
    assert!(sb.item_dir(wi).join("approve-requested").exists());
    let st = sb.status_json(wi);
    assert_eq!(st["state"], "approve_requested", "{st}");
    assert!(st["dispatch"].is_null(), "{st}");
    sb.assert_no_hook_run("the hook never ran");

    // A human approves again, now with a working ssh.
    sb.set("PATH", sshd.path_with_wrapper());
    let (code, r) = approve(&sb, wi);
    assert_eq!(
        (code, r["outcome"].as_str(), r["to"].as_str()),
        (0, Some("transitioned"), Some("initiated")),
        "{r}"
    );
    let id = ticket_id(&r);
    assert_ne!(id, failed_id, "a new dispatch, a new id");
    let r = sb.poll_until_final(wi, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1);
    assert_eq!(
        sb.protocol_files(wi),
        [
            format!("claimed-{id}"),
            format!("result-{id}"),
            format!("revoked-{failed_id}")
        ]
    );
    eprintln!("ssh exit 255, then approved again: {:?}", started.elapsed());
}

#[test]
fn hanging_ssh_times_out_as_dispatch_failed() {
    let fake = tempfile::tempdir().unwrap();
    let pids = fake.path().join("pids");
    // The script and both of its children write their pids, then sleep.
    write_script(
        &fake.path().join("bin"),
        "ssh",
        &format!(
            "#!/bin/sh\necho $$ >> '{pids}'\nsleep 30 &\necho $! >> '{pids}'\n\
             sh -c 'echo $$ >> \"$1\"; exec sleep 30' child '{pids}' &\nsleep 30\n",
            pids = pids.display()
        ),
    );
    // No server: the fake ssh never connects anywhere.
    let mut sb = pinned_ssh_sandbox("deploy", path_with_first_dir(&fake.path().join("bin")));
    sb.set("SELF_DEPLOY_SSH_TIMEOUT_SECS", "1".into());
    let wi = "ORCH-104";

    sb.request_approve(wi);
    let started = Instant::now();
    let (code, r) = approve(&sb, wi);
    let took = started.elapsed();
    eprintln!("hanging ssh: approved returned after {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {r}");
    assert_eq!(
        (code, r["outcome"].as_str(), r["to"].as_str()),
        (3, Some("dispatch_failed"), Some("approve_requested")),
        "{r}"
    );
    let reason = r["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains("timeout") || reason.contains("timed out") || reason.contains("within 1s"),
        "reason mentions the timeout: {r}"
    );
    assert!(!sb.item_dir(wi).join("initiated").exists());
    assert_eq!(sb.status_json(wi)["state"], "approve_requested");
    let id = ticket_id(&r);
    assert_eq!(
        effect_kinds(&r),
        [
            "write_marker",
            "write_ticket",
            "ssh",
            "revoke_ticket",
            "remove_marker"
        ],
        "{r}"
    );
    assert_eq!(sb.protocol_files(wi), [format!("revoked-{id}")]);

    // The script and every process it spawned were killed.
    let pids: Vec<u32> = fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))),
        "left running: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[test]
fn missing_ssh_binary_is_refused_and_writes_nothing() {
    let bin = tempfile::tempdir().unwrap();
    for name in ["bash", "git", "setsid"] {
        std::os::unix::fs::symlink(tool(name), bin.path().join(name)).unwrap();
    }
    let sb = pinned_ssh_sandbox("deploy", bin.path().as_os_str().to_owned());
    let wi = "ORCH-105";

    sb.request_approve(wi);
    let before = sb.disk_but_own();
    let (code, r) = approve(&sb, wi);
    assert_eq!(
        (code, r["outcome"].as_str(), r["to"].as_str()),
        (3, Some("refused"), Some("approve_requested")),
        "{r}"
    );
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("ssh"), "reason names ssh: {r}");
    assert_eq!(effect_kinds(&r), Vec::<String>::new(), "{r}");
    assert_eq!(
        sb.disk_but_own(),
        before,
        "a refused approval writes nothing"
    );
    sb.assert_no_hook_run("a refused approval launches nothing");

    // The refusal is in the history.
    let hist = sb.run(&["history", "--repo", REPO, "--work-item", wi, "--json"]);
    let last: Value = String::from_utf8_lossy(&hist.stdout)
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no history: {hist:?}"));
    assert_eq!(
        (last["event"].as_str(), last["outcome"].as_str()),
        (Some("approved"), Some("refused")),
        "{last}"
    );
}
