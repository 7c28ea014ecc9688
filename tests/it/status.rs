//! `selfdeploy status` through the binary, on real files: each kind of
//! trouble is said (in the table and in `--json`), never papered over by a
//! "waiting" note; the last event and its age; filters and sorting.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::report::{code, code_out_err, parse_json};
use crate::support::sandbox::{Hold, REPO, Sandbox, wait_for, write};

/// `status <args> --json`: every line, parsed; asserts exit 0.
fn rows(sb: &Sandbox, args: &[&str]) -> Vec<Value> {
    let out = sb
        .cmd()
        .arg("status")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let (code, stdout, stderr) = code_out_err(&out);
    assert_eq!(code, 0, "{stdout} {stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `status --repo orchestrator --work-item W --json`, parsed.
fn one(sb: &Sandbox, item: &str) -> Value {
    let all = rows(sb, &["--repo", REPO, "--work-item", item]);
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

/// The table line of `item` in `status <args>` (asserts exit 0).
fn table_line(sb: &Sandbox, args: &[&str], item: &str) -> String {
    let out = sb.cmd().arg("status").args(args).output().unwrap();
    let (code, stdout, stderr) = code_out_err(&out);
    assert_eq!(code, 0, "{stdout} {stderr}");
    let header = stdout.lines().next().unwrap_or_default();
    for column in ["STATE", "DISPATCH", "PUSH", "LAST EVENT", "NOTE"] {
        assert!(header.contains(column), "{header}");
    }
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(item))
        .unwrap_or_else(|| panic!("no line for {item}: {stdout}"))
        .to_owned()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {v}"))
}

/// The last event is `event` with `outcome`, written moments ago.
fn assert_last_event(row: &Value, event: &str, outcome: &str) {
    let last = &row["last_event"];
    assert_eq!(
        (last["event"].as_str(), last["outcome"].as_str()),
        (Some(event), Some(outcome)),
        "{row}"
    );
    assert_eq!(last["actor"], "selfdeploy", "{row}");
    assert!(
        humantime::parse_rfc3339(str_of(last, "time")).is_ok(),
        "{row}"
    );
    let age = last["age_secs"].as_u64().expect("an age in seconds");
    assert!(age < 120, "written moments ago, not {age} s: {row}");
}

#[test]
fn status_after_a_failed_dispatch_says_it_failed_not_waiting_for_approval() {
    let mut sb = Sandbox::new();
    sb.ssh_refused();
    let item = "ORCH-901";
    sb.request_approve(item);
    let (c, r) = sb.approve(item);
    assert_eq!(
        (c, r["outcome"].as_str()),
        (3, Some("dispatch_failed")),
        "{r}"
    );
    let reason = str_of(&r, "reason").to_owned();

    let s = one(&sb, item);
    assert_eq!(s["state"], "approve_requested", "{s}");
    assert_eq!(
        s["problem"],
        format!("dispatch failed: {reason}; approve again to retry").as_str(),
        "{s}"
    );
    assert!(str_of(&s, "problem").contains("255"), "{s}");
    assert!(!str_of(&s, "note").contains("waiting for approval"), "{s}");
    assert_eq!(s["last_event"]["reason"], reason.as_str(), "{s}");
    assert_last_event(&s, "approved", "dispatch_failed");

    let line = table_line(&sb, &[], item);
    assert!(line.contains("approved dispatch_failed "), "{line}");
    assert!(line.contains("PROBLEM: dispatch failed: "), "{line}");
    assert!(line.contains("approve again to retry"), "{line}");
    assert!(!line.contains("waiting for approval"), "{line}");

    // A plain request for approval since: no problem, and the revoked
    // dispatch is still mentioned.
    let (c, r) = sb.event_json("request-approve", item, &[]);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("unchanged")), "{r}");
    let s = one(&sb, item);
    assert!(s["problem"].is_null(), "{s}");
    let note = str_of(&s, "note");
    assert!(
        note.starts_with("waiting for approval; earlier dispatch "),
        "{s}"
    );
    assert!(note.contains("revoked (it never ran)"), "{s}");
}

#[test]
fn status_shows_a_missing_worktree_before_and_after_the_poll_that_fails() {
    let sb = Sandbox::new();
    let item = "ORCH-902";
    sb.approve_item(item);
    sb.wait_for_result(item);
    let away = sb.root().join("worktree.away");
    fs::rename(sb.worktree(), &away).unwrap();
    let wt = sb.worktree().display().to_string();

    // Before any poll: the result waits, but a poll could not record it.
    let s = one(&sb, item);
    assert_eq!(
        (s["state"].as_str(), s["result"].as_str()),
        (Some("initiated"), Some("0")),
        "{s}"
    );
    let problem = str_of(&s, "problem");
    assert!(
        problem.starts_with(&format!(
            "worktree {wt} does not exist: a poll cannot write the deploy log"
        )),
        "{s}"
    );
    assert!(
        !str_of(&s, "note").contains("waiting to be finalized"),
        "{s}"
    );

    let (c, _, stderr) = code_out_err(&sb.event("poll", item, &[]));
    assert_eq!(c, 1, "{stderr}");
    let s = one(&sb, item);
    assert_eq!(s["state"], "initiated", "{s}");
    assert_last_event(&s, "poll", "error");
    assert!(str_of(&s["last_event"], "reason").contains(&wt), "{s}");
    // Said once: the failed poll is the same missing worktree.
    assert_eq!(s["problem"].as_str(), Some(problem), "{s}");
    assert_eq!(
        str_of(&s, "note"),
        format!("PROBLEM: {problem}; result 0 not finalized")
    );
    let line = table_line(&sb, &[], item);
    assert!(line.contains("poll error "), "{line}");
    assert!(
        line.contains(&format!("PROBLEM: worktree {wt} does not exist")),
        "{line}"
    );
    assert!(!line.contains("waiting to be finalized"), "{line}");

    // Back in place: the failed poll is still the last event, and says so.
    fs::rename(&away, sb.worktree()).unwrap();
    let s = one(&sb, item);
    let problem = str_of(&s, "problem");
    assert!(
        problem.starts_with(&format!("last poll failed: worktree {wt} does not exist")),
        "{s}"
    );
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["to"].as_str()), (0, Some("finalized_success")), "{r}");
    let s = one(&sb, item);
    assert!(s["problem"].is_null(), "{s}");
    assert_eq!(
        (s["note"].as_str(), s["push"].as_str()),
        (Some("deploy succeeded (hook exit code 0)"), Some("pushed")),
        "{s}"
    );
}

#[test]
fn status_after_a_failed_push_says_the_deploy_succeeded_and_the_log_is_not_pushed() {
    let sb = Sandbox::new();
    let item = "ORCH-903";
    sb.approve_item(item);
    sb.wait_for_result(item);
    let away = sb.root().join("remote.git.away");
    fs::rename(sb.remote(), &away).unwrap();
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["to"].as_str()), (0, Some("finalized_success")), "{r}");

    let s = one(&sb, item);
    assert_eq!(s["state"], "finalized_success", "{s}");
    assert_eq!(
        (s["pushed"].as_bool(), s["push"].as_str()),
        (Some(false), Some("pending")),
        "{s}"
    );
    let err = str_of(&s, "push_error");
    assert!(err.starts_with("git push failed"), "{s}");
    assert_eq!(
        s["problem"],
        format!("the deploy succeeded, but its log was not pushed: {err}; every poll (and watch) retries").as_str(),
        "{s}"
    );
    assert!(!str_of(&s, "note").contains("hook exit code 0;"), "{s}");
    assert_last_event(&s, "poll", "transitioned");

    let line = table_line(&sb, &[], item);
    assert!(line.contains(" pending "), "{line}");
    assert!(
        line.contains("PROBLEM: the deploy succeeded, but its log was not pushed: git push failed"),
        "{line}"
    );
}

#[test]
fn status_shows_a_late_result_after_a_deadline_failure_with_its_exit_code() {
    let mut sb = Sandbox::new();
    let item = "ORCH-904";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || sb
            .item_dir(item)
            .join(format!("claimed-{id}"))
            .exists()),
        "the host never claimed the ticket"
    );
    // The dispatch happened two hours ago, as far as the record and the
    // file's time say.
    sb.backdate_dispatch(item, 7200);
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "3600".into());
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["to"].as_str()), (0, Some("finalized_failed")), "{r}");
    assert_eq!(sb.finalized_json(item)["hook_exit_code"], "timeout");

    // Before the late result: a plain deadline failure, nothing blocked.
    let s = one(&sb, item);
    assert!(s["problem"].is_null(), "{s}");
    assert!(s["late_result"].is_null(), "{s}");
    assert_eq!(
        s["note"], "deploy failed: no result before the result deadline",
        "{s}"
    );

    // The hook ends after all, and succeeds.
    hold.release();
    assert_eq!(sb.wait_for_result(item).trim(), "0");
    let s = one(&sb, item);
    assert_eq!(s["state"], "finalized_failed", "{s}");
    assert_eq!(
        (s["late_result"].as_str(), s["result"].as_str()),
        (Some("0"), Some("0")),
        "{s}"
    );
    let problem = str_of(&s, "problem");
    assert!(
        problem.starts_with(
            "late result: hook exit code 0 arrived after the result deadline had failed this deploy (the verdict stays FAILED)"
        ),
        "{s}"
    );
    assert!(problem.contains("it may run the new version"), "{s}");
    let line = table_line(&sb, &[], item);
    assert!(
        line.contains("PROBLEM: late result: hook exit code 0 arrived"),
        "{line}"
    );
    assert!(line.contains(&format!("claimed {id}")), "{line}");
    // The verdict stands: a poll changes nothing.
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("unchanged")), "{r}");
    assert_eq!(sb.finalized_json(item)["deploy_status"], "FAILED");
}

/// Rewrites the time of every entry of a history to `ago` before now.
fn backdate_history(history: &Path, ago: Duration) {
    let when = humantime::format_rfc3339_seconds(SystemTime::now() - ago).to_string();
    let text = fs::read_to_string(history).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let mut entry: Value = serde_json::from_str(line).unwrap();
        entry["time"] = when.clone().into();
        out.push_str(&serde_json::to_string(&entry).unwrap());
        out.push('\n');
    }
    fs::write(history, out).unwrap();
}

/// A sandbox where `orchestrator` and `other` apply.
fn two_repos() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_REPOS", "orchestrator,other".into());
    sb
}

fn request_approve_in(sb: &Sandbox, repo: &str, item: &str) {
    let out = sb.run(&[
        "event",
        "request-approve",
        "--repo",
        repo,
        "--work-item",
        item,
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", parse_json(&out));
}

fn items_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{}/{}", str_of(r, "repo"), str_of(r, "work_item")))
        .collect()
}

#[test]
fn status_filters_by_state_and_by_repo_alone() {
    let sb = two_repos();
    request_approve_in(&sb, REPO, "ORCH-911");
    request_approve_in(&sb, "Other", "OTH-1");
    sb.approve_item("ORCH-912");
    sb.wait_for_result("ORCH-912");
    let (c, r) = sb.event_json("poll", "ORCH-912", &[]);
    assert_eq!((c, r["to"].as_str()), (0, Some("finalized_success")), "{r}");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    let all = rows(&sb, &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    let waiting = rows(&sb, &["--state", "approve_requested"]);
    assert_eq!(
        sorted(items_of(&waiting)),
        ["orchestrator/ORCH-911", "other/OTH-1"]
    );
    for args in [
        &["--state", "finalized_success,initiated"][..],
        &["--state", "finalized_success", "--state", "idle"],
    ] {
        assert_eq!(
            items_of(&rows(&sb, args)),
            ["orchestrator/ORCH-912"],
            "{args:?}"
        );
    }
    assert!(rows(&sb, &["--state", "finalized_failed"]).is_empty());
    let out = sb.run(&["status", "--state", "finalized_failed"]);
    let (c, stdout, _) = code_out_err(&out);
    assert_eq!(c, 0);
    assert!(
        stdout.starts_with("no work items under ") && stdout.trim_end().ends_with(" match"),
        "{stdout}"
    );

    // --repo alone: every item of that repo, whatever its spelling.
    let other = rows(&sb, &["--repo", "OTHER"]);
    assert_eq!(items_of(&other), ["other/OTH-1"]);
    let ours = rows(&sb, &["--repo", "Orchestrator"]);
    assert_eq!(
        sorted(items_of(&ours)),
        ["orchestrator/ORCH-911", "orchestrator/ORCH-912"]
    );
    let both = rows(
        &sb,
        &["--repo", "orchestrator", "--state", "approve_requested"],
    );
    assert_eq!(items_of(&both), ["orchestrator/ORCH-911"]);
    // With --work-item, still one item.
    let single = rows(&sb, &["--repo", "ORCHESTRATOR", "--work-item", "ORCH-912"]);
    assert_eq!(items_of(&single), ["orchestrator/ORCH-912"]);

    // A state the machine does not have is a usage error naming the valid ones.
    let (c, stdout, stderr) = code_out_err(&sb.run(&["status", "--state", "finalized"]));
    assert_eq!(c, 2, "{stdout} {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("finalized")
            && stderr.contains(
                "idle, approve_requested, initiated, finalized_success, finalized_failed"
            ),
        "{stderr}"
    );
    // --work-item alone is a usage error too; a bad repo name is exit 1.
    let (c, _, stderr) = code_out_err(&sb.run(&["status", "--work-item", "ORCH-911"]));
    assert_eq!(c, 2, "{stderr}");
    let (c, _, stderr) = code_out_err(&sb.run(&["status", "--repo", "../x"]));
    assert_eq!(c, 1, "{stderr}");

    // Every option has its help, and the subcommand an example.
    let (c, help, _) = code_out_err(&sb.run(&["status", "--help"]));
    assert_eq!(c, 0);
    for (option, text) in [
        ("--repo <REPO>", "Only this repo's work items"),
        ("--work-item <WORK_ITEM>", "Only this work item of --repo"),
        ("--state <STATE>", "Only items in this state"),
    ] {
        let line = help.lines().find(|l| l.trim_start().starts_with(option));
        assert!(
            line.is_some_and(|l| l.contains(text)),
            "{option}: {text:?} in {help}"
        );
    }
    assert!(help.contains("Examples:\n  selfdeploy status"), "{help}");
}

#[test]
fn status_sorts_by_last_activity_and_shows_its_age() {
    let sb = two_repos();
    for item in ["ORCH-923", "ORCH-922", "ORCH-921"] {
        sb.request_approve(item);
    }
    request_approve_in(&sb, "other", "OTH-2");
    // An item with no history at all (written by hand): last.
    write(&sb.item_dir("ORCH-920").join("approve-requested"), b"");
    let hours = Duration::from_secs(2 * 3600 + 30);
    backdate_history(&sb.history_path("ORCH-923"), Duration::from_secs(300));
    backdate_history(&sb.history_path("ORCH-922"), hours);
    backdate_history(&sb.history_path("ORCH-921"), hours);
    let other = sb
        .state_root()
        .join(".selfdeploy/history/other/OTH-2.jsonl");
    backdate_history(&other, hours);

    // JSON Lines come as the directories list them: every item once; the
    // reader sorts. The table (below) sorts by last activity.
    let mut all = rows(&sb, &[]);
    let mut streamed = items_of(&all);
    streamed.sort();
    assert_eq!(
        streamed,
        [
            "orchestrator/ORCH-920",
            "orchestrator/ORCH-921",
            "orchestrator/ORCH-922",
            "orchestrator/ORCH-923",
            "other/OTH-2",
        ]
    );
    all.sort_by_key(|r| {
        let age = r["last_event"]["age_secs"].as_u64();
        (
            age.is_none(),
            age,
            r["repo"].as_str().unwrap().to_owned(),
            r["work_item"].as_str().unwrap().to_owned(),
        )
    });
    assert_eq!(
        items_of(&all),
        [
            "orchestrator/ORCH-923",
            // Equal ages: by repo, then work item.
            "orchestrator/ORCH-921",
            "orchestrator/ORCH-922",
            "other/OTH-2",
            "orchestrator/ORCH-920",
        ]
    );
    let age = |i: usize| all[i]["last_event"]["age_secs"].as_u64().unwrap();
    assert!((300..360).contains(&age(0)), "{}", all[0]);
    assert!((7230..7290).contains(&age(1)), "{}", all[1]);
    assert!(all[4]["last_event"].is_null(), "{}", all[4]);
    assert_eq!(all[0]["last_event"]["event"], "request-approve");
    assert_eq!(all[0]["last_event"]["outcome"], "transitioned");
    assert_eq!(all[4]["note"], "waiting for approval", "{}", all[4]);

    let out = sb.run(&["status"]);
    let (c, stdout, _) = code_out_err(&out);
    assert_eq!(c, 0);
    let order: Vec<&str> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        order,
        ["ORCH-923", "ORCH-921", "ORCH-922", "OTH-2", "ORCH-920"]
    );
    assert!(
        table_line(&sb, &[], "ORCH-923").contains("request-approve transitioned 5m ago"),
        "{stdout}"
    );
    assert!(
        table_line(&sb, &[], "ORCH-922").contains("request-approve transitioned 2h ago"),
        "{stdout}"
    );
}

#[test]
fn status_shows_an_unreadable_state_file_as_the_problem_and_never_waits_on_it() {
    let sb = Sandbox::new();
    let item = "ORCH-905";
    sb.approve_item(item);
    sb.wait_for_result(item);
    let result = sb.result_file(item);
    fs::remove_file(&result).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&result)
        .status()
        .unwrap();
    assert!(made.success());
    let name = result.file_name().unwrap().to_str().unwrap().to_owned();

    let s = one(&sb, item);
    assert_eq!(s["state"], "initiated", "{s}");
    let problem = format!(
        "poll blocked: {name} is unreadable: it is a FIFO, not a regular file; reset --force clears it"
    );
    assert_eq!(s["problem"], problem.as_str(), "{s}");
    // Nothing guessed beside it: no "running, no result yet".
    assert_eq!(s["note"], format!("PROBLEM: {problem}").as_str(), "{s}");
    assert!(table_line(&sb, &[], item).contains(&format!("PROBLEM: {problem}")));

    // An `initiated` that is a symbolic link is not the original engine's.
    let other = "ORCH-906";
    sb.request_approve(other);
    std::os::unix::fs::symlink("approve-requested", sb.item_dir(other).join("initiated")).unwrap();
    let s = one(&sb, other);
    assert_eq!(
        (s["state"].as_str(), s["legacy"].as_bool()),
        (Some("initiated"), Some(false)),
        "{s}"
    );
    assert_eq!(
        s["problem"],
        "poll blocked: initiated is unreadable: it is a symbolic link (never followed); reset --force clears it",
        "{s}"
    );
    assert!(!str_of(&s, "note").contains("original engine"), "{s}");
}

/// Runs `cmd` to its end, or kills it after `limit`: its output, or `None`
/// when it was still running.
fn bounded(mut cmd: std::process::Command, limit: Duration) -> Option<std::process::Output> {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if wait_for(limit, || child.try_wait().unwrap().is_some()) {
        Some(child.wait_with_output().unwrap())
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// The history lives on the shared mount too: a FIFO in its place (left by
/// a broken copy, or put there by anyone who can write the share) must be
/// named, never waited on. `status` is what an operator runs when something
/// is stuck; it must not be stuck itself.
#[test]
fn status_never_waits_on_a_history_that_is_a_fifo() {
    let sb = Sandbox::new();
    let item = "ORCH-930";
    sb.approve_item(item);
    sb.wait_for_result(item);
    let history = sb.history_path(item);
    fs::remove_file(&history).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&history)
        .status()
        .unwrap();
    assert!(made.success());

    for args in [
        vec!["status", "--json"],
        vec!["status", "--repo", REPO, "--work-item", item, "--json"],
        vec!["status"],
    ] {
        let mut cmd = sb.cmd();
        cmd.args(&args);
        let out = bounded(cmd, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!("`selfdeploy {}` waited on the FIFO history", args.join(" "))
        });
        let (code, stdout, stderr) = code_out_err(&out);
        assert_eq!(code, 0, "{args:?}: {stdout} {stderr}");
        assert!(stdout.contains(item), "{args:?}: {stdout}");
        assert!(
            stdout.contains("history") && stdout.contains("FIFO"),
            "{args:?}: the history is not named as unreadable: {stdout}"
        );
    }
}

/// A state directory of a repo moved to a bigger disk and linked back
/// (`ln -s /big/.deploy-state-orchestrator`): events follow the link and
/// dispatch there. Whatever the engine does with such a link, `status` and
/// `watch --once` must not then report "nothing in flight" while a deploy
/// runs and its result waits to be finalized.
#[test]
fn a_symlinked_repo_state_directory_never_hides_a_deploy_in_flight() {
    let sb = Sandbox::new();
    let item = "ORCH-931";
    let moved = sb.root().join("big").join(format!(".deploy-state-{REPO}"));
    fs::create_dir_all(&moved).unwrap();
    std::os::unix::fs::symlink(
        &moved,
        sb.state_root().join(format!(".deploy-state-{REPO}")),
    )
    .unwrap();

    // Events refuse the link, naming it, and write nothing behind it.
    let out = sb.event("request-approve", item, &[]);
    let (code, _, stderr) = code_out_err(&out);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            ".deploy-state-{REPO} exists but is not a directory"
        )),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(&moved).unwrap().count(), 0);
    // An item that was already behind it (an earlier release followed such
    // links) is shown, as unreadable, by status and by the watch.
    let behind = moved.join(item);
    fs::create_dir_all(&behind).unwrap();
    fs::write(behind.join("initiated"), "").unwrap();
    fs::write(behind.join("result"), "0\n").unwrap();
    let out = sb.run(&["status", "--json"]);
    let (code, stdout, stderr) = code_out_err(&out);
    assert!(
        stdout.contains(item) || (code == 1 && stderr.contains(".deploy-state-")),
        "status lists nothing while {item} is initiated with a result waiting: exit {code}, {stdout:?} {stderr}"
    );
    let out = sb.run(&["status"]);
    let (code, stdout, stderr) = code_out_err(&out);
    assert!(
        !stdout.starts_with("no work items"),
        "status says no work items while {item} is in flight: exit {code}, {stdout:?} {stderr}"
    );

    let out = sb.run(&["watch", "--once"]);
    let (code, stdout, stderr) = code_out_err(&out);
    assert!(
        code == 1
            && stdout.contains(&format!("orchestrator/{item}: poll failed: "))
            && stdout.contains("not a directory"),
        "watch --once did not report {item}: exit {code}, {stdout:?} {stderr}"
    );
}

/// A refused approval's reason quotes the worktree it was given; a line
/// break in that path must not start a line of the status table that reads
/// as another work item.
#[test]
fn a_line_break_in_a_recorded_reason_cannot_forge_a_row_of_the_status_table() {
    let sb = Sandbox::new();
    let item = "ORCH-932";
    sb.request_approve(item);
    let forged = "orchestrator  ORCH-999  finalized_success  -  pushed  poll transitioned 1s ago  deploy succeeded";
    let out = sb.event(
        "approved",
        item,
        &[
            "--branch",
            "deploy/ORCH-7",
            "--worktree",
            &format!("/nonexistent\n{forged}"),
        ],
    );
    assert_eq!(code(&out), 3, "{out:?}");
    let out = sb.run(&["status"]);
    let (code, table, stderr) = code_out_err(&out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        table.lines().count(),
        2,
        "a header and one line per item:\n{table}"
    );
    assert!(
        !table
            .lines()
            .any(|l| l.starts_with("orchestrator  ORCH-999")),
        "a reason's line break reads as another item:\n{table}"
    );
}

/// An item whose only trace is an event's pending record (a reset killed
/// after removing the state directory, before its history entry) is listed
/// by `status --all`, text and JSON, as the watch lists it: what the
/// history still lacks is seen.
#[test]
fn status_all_lists_an_item_whose_only_trace_is_a_pending_record() {
    let sb = Sandbox::new();
    sb.request_approve("LIVE-1");
    let pending = sb
        .state_root()
        .join(format!(".selfdeploy/pending/{REPO}/GONE-1.json"));
    fs::create_dir_all(pending.parent().unwrap()).unwrap();
    fs::write(&pending, "{ not a record").unwrap();
    for json in [true, false] {
        let mut args = vec!["status", "--all"];
        if json {
            args.push("--json");
        }
        let out = sb.run(&args);
        let (code, stdout, stderr) = code_out_err(&out);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("GONE-1"), "{stdout}");
        assert!(stdout.contains("LIVE-1"), "{stdout}");
        assert!(
            stdout.contains("an earlier event is not in the history yet"),
            "{stdout}"
        );
    }
    let rows = rows(&sb, &["--repo", REPO]);
    let gone: Vec<&Value> = rows.iter().filter(|r| r["work_item"] == "GONE-1").collect();
    assert_eq!(gone.len(), 1, "listed once: {rows:?}");
    assert_eq!(gone[0]["state"], "idle", "{rows:?}");
}
