//! The claim protocol of contract section 6, with real processes: real bash
//! wrappers claiming real tickets by `mv`, real engines revoking them by
//! `rename(2)`, over the local transport and over a loopback OpenSSH server.
//! Also the guards and checks that keep a dispatch from starting at all
//! (repo identity, worktree, settings, REPOS_DIR) and the state files that
//! must never be followed or waited on (contract sections 2, 3, 4, 6, 9).
//!
//! Nothing here asserts on a sleep: every wait is bounded and waits for a
//! fact (a file, a process gone, an outcome). What the host did is learnt
//! independently of the engine: a `mv` first on the host's PATH logs every
//! claim attempt and whether it won, and the hook logs the dispatch id it
//! runs for (read from its parent wrapper's command line).

use std::collections::BTreeSet;
use std::ffi::{CString, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::report::*;
use crate::support::sandbox::*;
use crate::support::sshd::Sshd;

/// The counting hook, plus: it logs the dispatch id it runs for (`run <id>`),
/// found in its parent's command line (the wrapper `bash -c 'mv ... claimed-<id>
/// ...'`), and it can be held or given an exit code per dispatch
/// (`hold-<id>`, `hook-exit-<id>`) as well as for all (`hold`, `hook-exit`);
/// `go-<id>` lets one dispatch through a `hold`.
const ID_HOOK: &str = r#"#!/usr/bin/env bash
set -u
[ "${1:-}" = "--deploy" ] || exit 64
id=$(tr '\0' '\n' < "/proc/$PPID/cmdline" | grep -o 'claimed-[0-9a-f]\{16\}' | head -n 1)
id=${id#claimed-}
echo "run ${id:-unknown}" >> runs
echo "hook: deploying ${id:-unknown}"
while { [ -e hold ] && [ ! -e "go-$id" ]; } || [ -e "hold-$id" ]; do sleep 0.02; done
if [ -e "hook-exit-$id" ]; then exit "$(cat "hook-exit-$id")"; fi
exit "$(cat hook-exit 2>/dev/null || echo 0)"
"#;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn install_id_hook(sb: &Sandbox) {
    fs::write(sb.host_repo().join("hook.sh"), ID_HOOK).unwrap();
}

/// Whether `text` names `setting` as a whole word (`REPOS_DIR` is not named
/// by `HOST_REPOS_DIR`).
fn names_setting(text: &str, setting: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(setting).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + setting.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The dispatch ids in the hook's `runs` log, in order.
fn hook_ids(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.host_repo().join("runs"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.strip_prefix("run ").unwrap_or(l).to_owned())
        .collect()
}

fn event_as(sb: &Sandbox, repo: &str, event: &str, wi: &str, extra: &[&str]) -> (i32, Value) {
    let out = sb.run(
        &[
            &["event", event, "--repo", repo, "--work-item", wi, "--json"],
            extra,
        ]
        .concat(),
    );
    (code(&out), parse_json(&out))
}

/// The dispatch id of the item's `initiated` record.
fn initiated_id(sb: &Sandbox, wi: &str) -> String {
    let raw = fs::read_to_string(sb.item_dir(wi).join("initiated")).expect("initiated");
    let record: Value = serde_json::from_str(&raw).expect("initiated is our JSON");
    let id = record["dispatch_id"].as_str().unwrap().to_owned();
    assert!(
        is_dispatch_id(&id),
        "dispatch_id is 16 lower-case hex digits: {id:?}"
    );
    id
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The claim race
// ---------------------------------------------------------------------------

/// Host-side instrumentation for the race: a `mv` that logs every claim
/// attempt (`ok <dest>` / `fail <dest>`; and the rename of each result into
/// place, which the count of claims leaves out) and a `setsid` that starts the
/// wrapper late, so that claims really race the engine's revokes: half of
/// them 0 to `max_delay_ms` late, half just after the next whole second,
/// which is when a poll with SELF_DEPLOY_CLAIM_TIMEOUT_SECS=1 finds a ticket
/// overdue (dispatch times are recorded to the second). Returns (bin dir,
/// claim log).
fn race_bin(root: &Path, max_delay_ms: u32) -> (PathBuf, PathBuf) {
    assert!((1..1000).contains(&max_delay_ms));
    let bin = root.join("race-bin");
    let log = root.join("claims.log");
    write_script(
        &bin,
        "mv",
        &format!(
            "#!/bin/sh\n'{mv}' \"$@\" && {{ echo \"ok $2\" >> '{log}'; exit 0; }}\n\
             rc=$?; echo \"fail $2\" >> '{log}'; exit $rc\n",
            mv = tool("mv"),
            log = log.display()
        ),
    );
    write_script(
        &bin,
        "setsid",
        &format!(
            "#!/bin/bash\n\
             if (( RANDOM % 2 )); then\n\
             \x20 ms=$((RANDOM % {max_delay_ms}))\n\
             else\n\
             \x20 ns=$(date +%N)\n\
             \x20 ms=$(( (1000000000 - 10#$ns) / 1000000 + RANDOM % 60 ))\n\
             fi\n\
             sleep \"$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))\"\n\
             exec '{}' \"$@\"\n",
            tool("setsid")
        ),
    );
    (bin, log)
}

struct Fired {
    event: &'static str,
    out: Output,
}

fn fire(sb: &Sandbox, wi: &str, event: &'static str, actor: &str) -> Fired {
    let mut cmd = sb.event_cmd(event, wi);
    cmd.args(["--actor", actor]);
    match event {
        "approved" => {
            cmd.args(sb.approve_args());
        }
        "reset" => {
            cmd.arg("--force");
        }
        _ => {}
    }
    Fired {
        event,
        out: cmd.output().expect("run selfdeploy"),
    }
}

/// One process of the race: an approver, a poller or a resetter, until the
/// deadline.
fn actor(sb: &Sandbox, wi: &str, i: usize, deadline: Instant) -> Vec<Fired> {
    let name = format!("racer-{i}");
    let mut fired = Vec::new();
    while Instant::now() < deadline {
        match i % 3 {
            0 => {
                fired.push(fire(sb, wi, "approved", &name));
                thread::sleep(Duration::from_millis(100 + 37 * i as u64));
            }
            1 => {
                fired.push(fire(sb, wi, "poll", &name));
                thread::sleep(Duration::from_millis(30));
            }
            _ => {
                thread::sleep(Duration::from_millis(900 + 50 * i as u64));
                fired.push(fire(sb, wi, "reset", &name));
                fired.push(fire(sb, wi, "request-approve", &name));
            }
        }
    }
    fired
}

/// After the race, with nobody else acting: approve if needed, wait for the
/// host's claim (nothing revokes it now), and poll until the item is final.
/// Every round thus ends with at least one real claim and a verdict.
fn settle(sb: &Sandbox, wi: &str) -> Vec<Fired> {
    let mut fired = Vec::new();
    let state = sb.status_json(wi)["state"].as_str().unwrap().to_owned();
    if state == "idle" {
        fired.push(fire(sb, wi, "request-approve", "settle"));
    }
    if matches!(state.as_str(), "idle" | "approve_requested") {
        fired.push(fire(sb, wi, "approved", "settle"));
    }
    let dir = sb.item_dir(wi);
    wait_until(
        Duration::from_secs(20),
        "the host claims the last ticket",
        || !names_in(&dir).iter().any(|f| f.starts_with("dispatch-")),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f = fire(sb, wi, "poll", "settle");
        let done = !String::from_utf8_lossy(&f.out.stdout).contains("\"outcome\":\"deferred\"");
        fired.push(f);
        if done {
            return fired;
        }
        assert!(Instant::now() < deadline, "{wi} never finalized");
        thread::sleep(Duration::from_millis(30));
    }
}

/// What a monitor saw of an item's directories (the item and the
/// `<item>~removed.*` a reset leaves for a moment) while a round ran.
#[derive(Default)]
struct Seen {
    claimed: BTreeSet<String>,
    revoked: BTreeSet<String>,
    both_at_once: Vec<(String, BTreeSet<String>)>,
    scans: usize,
}

fn monitor(base: &Path, wi: &str, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let tomb = format!("{wi}~");
    loop {
        let last = stop.load(Ordering::SeqCst);
        for dir in names_in(base) {
            if dir != wi && !dir.starts_with(&tomb) {
                continue;
            }
            let files = names_in(&base.join(&dir));
            let ids = |prefix: &str| -> BTreeSet<String> {
                files
                    .iter()
                    .filter_map(|f| f.strip_prefix(prefix).map(str::to_owned))
                    .collect()
            };
            let (claimed, revoked) = (ids("claimed-"), ids("revoked-"));
            let both: BTreeSet<String> = claimed.intersection(&revoked).cloned().collect();
            if !both.is_empty() {
                seen.both_at_once.push((dir.clone(), files.clone()));
            }
            seen.claimed.extend(claimed);
            seen.revoked.extend(revoked);
        }
        seen.scans += 1;
        if last {
            return seen;
        }
        thread::sleep(Duration::from_millis(3));
    }
}

#[derive(Default, Debug)]
struct RaceTotals {
    events: usize,
    launched: usize,
    claimed: usize,
    claim_failed: usize,
    poll_revoked: usize,
    poll_revoke_lost: usize,
    reset_revoked: usize,
    reset_revoke_lost: usize,
    finalized: usize,
    scans: usize,
}

/// `procs` engine processes race for `rounds` rounds, each round on its own
/// work item, then every invariant of the claim protocol is checked against
/// what the host really did (the claim log and the hook's own log).
fn claim_race(sb: &Sandbox, claims: &Path, procs: usize, rounds: usize, round: Duration) {
    let started = Instant::now();
    let base = sb.state_root().join(format!(".deploy-state-{REPO}"));
    let mut totals = RaceTotals::default();
    let mut all_claimed = BTreeSet::new();
    for r in 0..rounds {
        let wi = format!("RACE-{r}");
        let dir = sb.item_dir(&wi);
        sb.request_approve(&wi);
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(procs);
        let deadline = Instant::now() + round;
        let (fired, seen) = thread::scope(|scope| {
            let watcher = scope.spawn(|| monitor(&base, &wi, &stop));
            let racers: Vec<_> = (0..procs)
                .map(|i| {
                    let (barrier, wi) = (&barrier, &wi);
                    scope.spawn(move || {
                        barrier.wait();
                        actor(sb, wi, i, deadline)
                    })
                })
                .collect();
            let mut fired: Vec<Fired> =
                racers.into_iter().flat_map(|h| h.join().unwrap()).collect();
            fired.extend(settle(sb, &wi));
            // Every wrapper has claimed (and run the hook) or lost, and
            // written what it writes.
            wait_for_wrappers(&dir, Duration::from_secs(30));
            stop.store(true, Ordering::SeqCst);
            (fired, watcher.join().unwrap())
        });

        // Every event was answered by the machine: never an error.
        let mut launched = Vec::new();
        let (mut won, mut lost) = (BTreeSet::new(), BTreeSet::new());
        for f in &fired {
            let report = parse_json(&f.out);
            let outcome = report["outcome"].as_str().unwrap_or_default();
            assert!(
                f.out.stderr.is_empty(),
                "{} wrote to stderr: {}",
                f.event,
                text(&f.out.stderr)
            );
            let allowed: &[&str] = match f.event {
                "approved" => &["transitioned", "unchanged", "illegal"],
                "poll" => &[
                    "transitioned",
                    "unchanged",
                    "deferred",
                    "dispatch_failed",
                    "illegal",
                ],
                "reset" => &["transitioned", "illegal"],
                _ => &["transitioned", "unchanged", "illegal"],
            };
            assert!(allowed.contains(&outcome), "{}: {report}", f.event);
            let expected_code = match outcome {
                "transitioned" | "unchanged" | "deferred" => 0,
                _ => 3,
            };
            assert_eq!(code(&f.out), expected_code, "{report}");
            match (f.event, outcome) {
                ("approved", "transitioned") => {
                    let ids = effect_ids(&report, "write_ticket");
                    assert_eq!(ids.len(), 1, "{report}");
                    launched.extend(ids);
                }
                ("poll", "transitioned") => {
                    assert_eq!(report["to"], "finalized_success", "{report}");
                    totals.finalized += 1;
                }
                ("poll", "dispatch_failed") => {
                    assert_eq!(report["to"], "approve_requested", "{report}");
                    let ids = effect_ids(&report, "revoke_ticket");
                    assert_eq!(ids.len(), 1, "{report}");
                    totals.poll_revoked += 1;
                    won.extend(ids);
                }
                ("poll", "deferred") => {
                    // A revoke that found the ticket claimed: the loser knows it.
                    let ids = effect_ids(&report, "revoke_ticket");
                    assert_eq!(report["to"], "initiated", "{report}");
                    totals.poll_revoke_lost += ids.len();
                    lost.extend(ids);
                }
                ("reset", "transitioned") => {
                    let ids = effect_ids(&report, "revoke_ticket");
                    let claimed_note = report["notes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|n| n.as_str().unwrap_or_default().contains("claimed"));
                    assert!(ids.len() <= 1, "{report}");
                    if claimed_note {
                        totals.reset_revoke_lost += ids.len();
                        lost.extend(ids);
                    } else {
                        totals.reset_revoked += ids.len();
                        won.extend(ids);
                    }
                }
                _ => {}
            }
        }
        let launched_set: BTreeSet<String> = launched.iter().cloned().collect();
        assert_eq!(
            launched_set.len(),
            launched.len(),
            "a dispatch id is new for every dispatch: {launched:?}"
        );

        // What the host did: one claim attempt per launch, won or lost.
        let (mut claimed, mut failed) = (Vec::new(), Vec::new());
        for line in fs::read_to_string(claims).unwrap_or_default().lines() {
            let (verdict, dest) = line.split_once(' ').unwrap();
            let dest = Path::new(dest);
            if dest.parent() != Some(dir.as_path()) {
                continue;
            }
            let name = dest.file_name().unwrap().to_str().unwrap();
            // The wrapper's other `mv` renames its result into place.
            let Some(id) = name.strip_prefix("claimed-") else {
                continue;
            };
            let id = id.to_owned();
            match verdict {
                "ok" => claimed.push(id),
                _ => failed.push(id),
            }
        }
        let mut attempts: Vec<String> = claimed.iter().chain(&failed).cloned().collect();
        attempts.sort();
        let mut expected = launched.clone();
        expected.sort();
        assert_eq!(
            attempts, expected,
            "{wi}: every launched ticket got exactly one claim attempt (claimed {claimed:?}, lost {failed:?})"
        );

        // The hook ran exactly once for each won claim and never otherwise.
        let mut ran: Vec<String> = hook_ids(sb)
            .into_iter()
            .filter(|id| launched_set.contains(id))
            .collect();
        ran.sort();
        let mut claimed_sorted = claimed.clone();
        claimed_sorted.sort();
        assert_eq!(
            ran, claimed_sorted,
            "{wi}: the hook runs once per claimed ticket"
        );

        // The engine's revokes agree with the host: a revoke it reports as
        // won was a claim the host lost, and the other way round; every lost
        // claim is explained by a won revoke.
        let claimed_set: BTreeSet<String> = claimed.iter().cloned().collect();
        let failed_set: BTreeSet<String> = failed.iter().cloned().collect();
        assert!(
            won.is_subset(&failed_set),
            "{wi}: the engine reported revoked tickets the host had claimed: {:?}",
            won.intersection(&claimed_set).collect::<Vec<_>>()
        );
        assert!(
            lost.is_subset(&claimed_set),
            "{wi}: revokes reported lost for tickets nobody claimed: {lost:?} vs {claimed:?}"
        );
        assert_eq!(
            failed_set, won,
            "{wi}: every lost claim is a ticket the engine revoked"
        );

        // The item's history is one chain: every event started from the
        // state the one before it left (the per-item lock serialized them),
        // one entry per event, one launch per dispatching approval.
        let out = sb.run(&["history", "--repo", REPO, "--work-item", &wi, "--json"]);
        assert_eq!(code(&out), 0, "{out:?}");
        let (late, entries): (Vec<Value>, Vec<Value>) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .partition(|e| e["event"] == "late-result");
        // A run a reset kept gets its verdict recorded once, beside the
        // events: only a run the host claimed has one.
        for entry in &late {
            let reason = entry["reason"].as_str().unwrap();
            assert!(
                claimed.iter().any(|id| reason.contains(id.as_str())),
                "{wi}: a late verdict of a run nobody claimed: {entry}"
            );
            assert_eq!(entry["from"], entry["to"], "{entry}");
        }
        // An event that changed nothing and repeats the entry before it is
        // counted on that entry, not written again.
        let repeats: u64 = entries
            .iter()
            .filter_map(|e| e["repeats"]["count"].as_u64())
            .sum();
        assert_eq!(
            entries.len() as u64 + repeats,
            fired.len() as u64 + 1,
            "{wi}: one entry per event, or one count"
        );
        assert_eq!(entries[0]["from"], "idle", "{}", entries[0]);
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1]["from"], pair[0]["to"],
                "{wi}: two events acted on one state at once: {} then {}",
                pair[0], pair[1]
            );
        }
        let dispatching = entries
            .iter()
            .filter(|e| e["event"] == "approved" && e["outcome"] == "transitioned")
            .count();
        assert_eq!(dispatching, launched.len(), "{wi}");

        // What the monitor saw: a ticket is claimed or revoked, never both.
        assert!(
            seen.both_at_once.is_empty(),
            "{wi}: claimed and revoked at once: {:?}",
            seen.both_at_once
        );
        assert!(
            seen.claimed.is_disjoint(&seen.revoked),
            "{wi}: an id was both claimed and revoked: {:?}",
            seen.claimed.intersection(&seen.revoked).collect::<Vec<_>>()
        );
        assert!(seen.claimed.is_subset(&claimed_set), "{wi}");
        assert!(seen.revoked.is_subset(&failed_set), "{wi}");

        // The settled item is decided by its own dispatch; nothing is left
        // in flight: every ticket is resolved.
        let end = sb.status_json(&wi);
        assert_eq!(end["state"], "finalized_success", "{end}");
        sb.assert_deploy_log(&wi, "SUCCESS", "0");
        let left: Vec<String> = names_in(&dir)
            .into_iter()
            .filter(|f| f.starts_with("dispatch-"))
            .collect();
        assert!(left.is_empty(), "{wi}: unresolved tickets {left:?}");

        totals.events += fired.len();
        totals.launched += launched.len();
        totals.claimed += claimed.len();
        totals.claim_failed += failed.len();
        totals.scans += seen.scans;
        all_claimed.extend(claimed);
    }
    // Across all rounds: the hook's run count is the number of claimed ids.
    assert_eq!(sb.hook_runs(), totals.claimed, "{totals:?}");
    assert_eq!(
        hook_ids(sb).into_iter().collect::<BTreeSet<_>>(),
        all_claimed,
        "every hook run names a claimed ticket"
    );
    assert!(totals.claimed > 0, "the race never dispatched: {totals:?}");
    eprintln!(
        "claim race: {procs} processes x {rounds} rounds in {:?}: {totals:?}",
        started.elapsed()
    );
}

#[test]
fn claim_race_over_the_local_transport() {
    let mut sb = Sandbox::new();
    install_id_hook(&sb);
    let (bin, claims) = race_bin(sb.root(), 400);
    sb.set("PATH", path_with_first_dir(&bin));
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
    claim_race(&sb, &claims, 6, 5, Duration::from_millis(2000));
}

#[test]
fn claim_race_over_ssh() {
    let sshd = Sshd::start();
    let root = tempfile::tempdir().unwrap();
    // ssh itself takes a few hundred ms under the lock: a short extra delay.
    let (bin, claims) = race_bin(root.path(), 100);
    // The host's PATH gets the instrumented mv and setsid: this `ssh` passes
    // the remote command on with `export PATH=...;` in front of it.
    let front = root.path().join("ssh-front");
    write_script(
        &front,
        "ssh",
        &format!(
            "#!/bin/bash\nlast=\"${{!#}}\"\nset -- \"${{@:1:$#-1}}\"\n\
             exec '{wrapper}' \"$@\" \"export PATH='{bin}':\\\"\\$PATH\\\"; $last\"\n",
            wrapper = sshd.wrapper_dir().join("ssh").display(),
            bin = bin.display()
        ),
    );
    let mut sb = ssh_sandbox(&sshd.user(), path_with_first_dir(&front));
    install_id_hook(&sb);
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
    claim_race(&sb, &claims, 4, 3, Duration::from_millis(2500));
}

// ---------------------------------------------------------------------------
// ssh reports a failure after the host claimed
// ---------------------------------------------------------------------------

/// A fake `ssh` that really runs the remote command (through the harness),
/// waits until the host has claimed the ticket, then does `then`.
fn ssh_that_claims_then(sshd: &Sshd, dir: &Path, then: &str) -> OsString {
    write_script(
        dir,
        "ssh",
        &format!(
            "#!/bin/bash\n'{wrapper}' \"$@\"\n\
             claimed=$(printf '%s\\n' \"${{!#}}\" | grep -o '/[^ ]*/claimed-[0-9a-f]\\{{16\\}}' | head -n 1)\n\
             for _ in $(seq 250); do [ -e \"$claimed\" ] && break; sleep 0.02; done\n\
             echo 'ssh: connection to {SSH_HOST} closed by remote host' >&2\n{then}\n",
            wrapper = sshd.wrapper_dir().join("ssh").display()
        ),
    );
    path_with_first_dir(dir)
}

fn claimed_although_ssh_failed(then: &str, timeout: &str, reason_has: &[&str]) {
    let started = Instant::now();
    let sshd = Sshd::start();
    let fake = tempfile::tempdir().unwrap();
    let path = ssh_that_claims_then(&sshd, fake.path(), then);
    let mut sb = ssh_sandbox(&sshd.user(), path);
    sb.set("SELF_DEPLOY_SSH_TIMEOUT_SECS", timeout.into());
    let wi = "ORCH-301";
    sb.request_approve(wi);
    let hold = Hold::hook(&sb);

    let t = Instant::now();
    let (c, r) = sb.approve(wi);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "approved took {took:?}");
    assert_eq!(
        (c, r["outcome"].as_str(), r["to"].as_str()),
        (0, Some("transitioned"), Some("initiated")),
        "the host claimed: the dispatch counts as done: {r}"
    );
    assert_eq!(
        effect_kinds(&r),
        ["write_marker", "write_ticket", "ssh", "revoke_ticket"],
        "{r}"
    );
    let reason = r["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains("claimed"),
        "reason says the host claimed: {r}"
    );
    for part in reason_has {
        assert!(reason.contains(part), "reason mentions {part:?}: {r}");
    }
    let id = initiated_id(&sb, wi);
    let files = names_in(&sb.item_dir(wi));
    assert!(files.contains(&format!("claimed-{id}")), "{files:?}");
    assert!(!files.contains(&format!("revoked-{id}")), "{files:?}");
    assert!(!files.contains(&format!("dispatch-{id}")), "{files:?}");

    wait_until(Duration::from_secs(10), "the hook started", || {
        sb.hook_runs() == 1
    });
    let st = sb.status_json(wi);
    assert_eq!(st["state"], "initiated", "{st}");
    assert_eq!(st["dispatch"]["ticket"], "claimed", "{st}");
    // Never a second dispatch while it runs.
    let (c, again) = sb.approve(wi);
    assert_eq!(
        (c, again["outcome"].as_str()),
        (0, Some("unchanged")),
        "{again}"
    );
    assert!(effect_kinds(&again).is_empty(), "{again}");

    hold.release();
    let r = sb.poll_until_final(wi, &[]);
    assert_eq!(
        (r["outcome"].as_str(), r["to"].as_str()),
        (Some("transitioned"), Some("finalized_success")),
        "{r}"
    );
    sb.assert_deploy_log(wi, "SUCCESS", "0");
    // Finalized: approved has no meaning any more, and dispatches nothing.
    let (c, late) = sb.approve(wi);
    assert_eq!(
        (c, late["outcome"].as_str()),
        (3, Some("illegal")),
        "{late}"
    );
    assert!(effect_kinds(&late).is_empty(), "{late}");
    wait_for_wrappers(&sb.item_dir(wi), Duration::from_secs(10));
    assert_eq!(sb.hook_runs(), 1, "the hook ran exactly once");
    eprintln!("ssh claimed, then `{then}`: {:?}", started.elapsed());
}

#[test]
fn ssh_that_fails_after_the_host_claimed_is_a_sent_dispatch() {
    claimed_although_ssh_failed("exit 255", "30", &["255"]);
}

#[test]
fn ssh_that_hangs_after_the_host_claimed_is_a_sent_dispatch() {
    // The timeout leaves the fake ssh time to claim on a loaded machine.
    claimed_although_ssh_failed("sleep 30", "3", &["timed out"]);
}

// ---------------------------------------------------------------------------
// reset --force while the hook runs; a late result of the old dispatch
// ---------------------------------------------------------------------------

fn reset_while_running(old_exit: &str, new_exit: &str) {
    let sb = Sandbox::new();
    install_id_hook(&sb);
    let wi = "ORCH-401";
    let host = sb.host_repo();
    sb.request_approve(wi);
    let hold = Hold::hook(&sb);
    let (c, r) = sb.approve(wi);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let old = initiated_id(&sb, wi);
    wait_until(Duration::from_secs(10), "the first hook started", || {
        hook_ids(&sb) == [old.clone()]
    });
    // The old hook will exit old_exit when let through.
    fs::write(host.join(format!("hook-exit-{old}")), old_exit).unwrap();

    let (c, r) = sb.event_json("reset", wi, &["--force"]);
    assert_eq!(
        (c, r["outcome"].as_str(), r["to"].as_str()),
        (0, Some("transitioned"), Some("idle")),
        "{r}"
    );
    // The ticket is claimed: nothing to revoke. The run's verdict is a fact
    // to come, so the place its result and log land is kept; the item is idle.
    assert_eq!(effect_kinds(&r), ["remove_state_dir"], "{r}");
    assert!(
        r["notes"].to_string().contains(&format!("reset-{old}")),
        "the report says what was kept: {r}"
    );
    let mut left: Vec<String> = fs::read_dir(sb.item_dir(wi))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            format!("claimed-{old}"),
            "hook.log".to_owned(),
            format!("reset-{old}")
        ],
        "only the running dispatch's place is kept"
    );
    let st = sb.status_json(wi);
    assert_eq!(st["state"], "idle", "{st}");
    assert_eq!(
        st["kept_runs"],
        serde_json::json!([{"dispatch_id": old, "result": null, "verdict": null, "recorded": false}]),
        "{st}"
    );
    assert!(
        st["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("may still be running"),
        "status says a hook may still run: {st}"
    );

    sb.request_approve(wi);
    // Its hook may still be going: a second one is not started beside it
    // unless a human who checked the host forces it.
    let (c, r) = sb.approve(wi);
    assert_eq!(
        (c, r["outcome"].as_str(), r["condition"].as_str()),
        (3, Some("refused"), Some("an earlier run has no result")),
        "{r}"
    );
    assert!(r["reason"].as_str().unwrap().contains(&old), "{r}");
    let (c, r) = sb.approve_with(wi, &["--force"]);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let new = initiated_id(&sb, wi);
    assert_ne!(new, old, "a new dispatch has a new id");
    fs::write(host.join(format!("hook-exit-{new}")), new_exit).unwrap();
    wait_until(Duration::from_secs(10), "the second hook started", || {
        hook_ids(&sb).len() == 2
    });

    // The old dispatch finishes first: its result lands in the new directory.
    fs::write(host.join(format!("go-{old}")), "").unwrap();
    let stale = sb.item_dir(wi).join(format!("result-{old}"));
    wait_until(Duration::from_secs(10), "the old result", || {
        fs::read_to_string(&stale).is_ok_and(|s| s.trim() == old_exit)
    });
    let (c, r) = sb.event_json("poll", wi, &[]);
    assert_eq!(
        (c, r["outcome"].as_str(), r["to"].as_str()),
        (0, Some("deferred"), Some("initiated")),
        "a kept run's result is never the new dispatch's verdict: {r}"
    );
    let st = sb.status_json(wi);
    assert_eq!(st["state"], "initiated", "{st}");
    assert!(st["result"].is_null(), "{st}");
    let old_verdict = if old_exit == "0" { "SUCCESS" } else { "FAILED" };
    assert_eq!(
        st["kept_runs"],
        serde_json::json!([{"dispatch_id": old, "result": old_exit, "verdict": old_verdict, "recorded": true}]),
        "{st}"
    );
    // The history records the old run's verdict, once.
    let history = sb.run(&["history", "--repo", REPO, "--work-item", wi, "--json"]);
    let late: Vec<Value> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "late-result")
        .collect();
    assert_eq!(late.len(), 1, "{late:?}");
    let reason = late[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&old) && reason.contains(old_verdict),
        "{reason}"
    );
    let (_, r) = sb.event_json("poll", wi, &[]);
    assert_eq!(r["outcome"], "deferred", "{r}");
    assert!(!sb.deploy_log(wi).exists());

    hold.release();
    let r = sb.poll_until_final(wi, &[]);
    let (verdict, to) = if new_exit == "0" {
        ("SUCCESS", "finalized_success")
    } else {
        ("FAILED", "finalized_failed")
    };
    assert_eq!(
        (r["outcome"].as_str(), r["to"].as_str()),
        (Some("transitioned"), Some(to)),
        "{r}"
    );
    sb.assert_deploy_log(wi, verdict, new_exit);
    wait_for_wrappers(&sb.item_dir(wi), Duration::from_secs(10));
    assert_eq!(hook_ids(&sb), [old.clone(), new]);
    let history = sb.run(&["history", "--repo", REPO, "--work-item", wi, "--json"]);
    let late = String::from_utf8_lossy(&history.stdout)
        .lines()
        .filter(|l| l.contains("\"late-result\""))
        .count();
    assert_eq!(
        late, 1,
        "the late verdict is recorded once, whatever polls follow"
    );
    // A reset now removes everything: the kept run is settled.
    let (c, r) = sb.event_json("reset", wi, &[]);
    assert_eq!((c, r["to"].as_str()), (0, Some("idle")), "{r}");
    assert!(!sb.item_dir(wi).exists(), "nothing is left to keep");
}

#[test]
fn forced_reset_while_the_hook_runs_then_the_new_dispatch_decides() {
    reset_while_running("1", "0");
    reset_while_running("0", "1");
}

// ---------------------------------------------------------------------------
// Unclaimed tickets: revoked by a poll after the claim timeout, and by reset
// ---------------------------------------------------------------------------

#[test]
fn unclaimed_ticket_is_revoked_by_poll_and_by_reset_and_never_runs() {
    let mut sb = Sandbox::new();
    install_id_hook(&sb);
    // The host's wrapper is stalled before its claim while `stall` exists.
    let bin = sb.root().join("stall-bin");
    let stall_file = sb.root().join("stall");
    write_script(
        &bin,
        "setsid",
        &format!(
            "#!/bin/bash\nwhile [ -e '{}' ]; do sleep 0.02; done\nexec '{}' \"$@\"\n",
            stall_file.display(),
            tool("setsid")
        ),
    );
    sb.set("PATH", path_with_first_dir(&bin));
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());

    // By poll.
    let wi = "ORCH-501";
    sb.request_approve(wi);
    let stall = Hold::new(stall_file.clone());
    let (c, r) = sb.approve(wi);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let id = initiated_id(&sb, wi);
    assert_eq!(sb.status_json(wi)["dispatch"]["ticket"], "sent");
    // Past the claim timeout, a dry run of the poll says what the poll will
    // do (the revoke and what it leads to), and does none of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (dry_code, dry) = loop {
        let (c, r) = sb.event_json("poll", wi, &["--dry-run"]);
        if r["outcome"] != "deferred" {
            break (c, r);
        }
        assert!(Instant::now() < deadline, "never revoked: {r}");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(sb.status_json(wi)["dispatch"]["ticket"], "sent");
    let (c, r) = sb.event_json("poll", wi, &[]);
    assert_eq!(
        (c, r["outcome"].as_str(), r["to"].as_str()),
        (3, Some("dispatch_failed"), Some("approve_requested")),
        "{r}"
    );
    assert_eq!(
        (dry_code, &dry["outcome"], &dry["to"], effect_kinds(&dry)),
        (c, &r["outcome"], &r["to"], effect_kinds(&r)),
        "the dry run {dry}\nthe poll {r}"
    );
    assert_eq!(
        effect_ids(&r, "revoke_ticket"),
        std::slice::from_ref(&id),
        "{r}"
    );
    let files = names_in(&sb.item_dir(wi));
    assert!(files.contains(&format!("revoked-{id}")), "{files:?}");
    assert!(!files.contains(&format!("dispatch-{id}")), "{files:?}");
    assert!(!files.contains("initiated"), "{files:?}");
    stall.release();
    wait_for_wrappers(&sb.item_dir(wi), Duration::from_secs(10));
    assert_eq!(sb.hook_runs(), 0, "a revoked dispatch never runs");
    let log = fs::read_to_string(sb.item_dir(wi).join("hook.log")).unwrap();
    assert!(
        log.contains(&format!("dispatch-{id}")),
        "the claim failed: {log}"
    );
    assert!(!names_in(&sb.item_dir(wi)).contains(&format!("result-{id}")));

    // A human approves again: a new dispatch, which runs.
    let (c, r) = sb.approve(wi);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let second = initiated_id(&sb, wi);
    assert_ne!(second, id);
    let r = sb.poll_until_final(wi, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(hook_ids(&sb), [second]);

    // By reset --force.
    let wi = "ORCH-502";
    sb.request_approve(wi);
    let stall = Hold::new(stall_file);
    let (c, r) = sb.approve(wi);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let id = initiated_id(&sb, wi);
    let (c, r) = sb.event_json("reset", wi, &["--force"]);
    assert_eq!(
        (c, r["outcome"].as_str(), r["to"].as_str()),
        (0, Some("transitioned"), Some("idle")),
        "{r}"
    );
    assert_eq!(effect_ids(&r, "revoke_ticket"), [id], "{r}");
    assert!(!r["notes"].to_string().contains("claimed"), "{r}");
    stall.release();
    wait_for_wrappers(&sb.item_dir(wi), Duration::from_secs(10));
    assert_eq!(sb.hook_runs(), 1, "the reset dispatch never ran");
    assert!(!sb.item_dir(wi).exists(), "nothing recreated the item");
}

// ---------------------------------------------------------------------------
// Repo identity
// ---------------------------------------------------------------------------

#[test]
fn case_variants_of_the_repo_are_one_item_and_one_dispatch() {
    let sb = Sandbox::new();
    let spellings = ["Orchestrator", "ORCHESTRATOR", "orchestrator"];
    let items = ["CASE-1", "CASE-2", "CASE-3"];
    let wt = sb.worktree();
    let sb = &sb;
    let at_once = |event: &str, wi: &str| -> Vec<(i32, Value)> {
        let barrier = Barrier::new(spellings.len());
        thread::scope(|scope| {
            let handles: Vec<_> = spellings
                .iter()
                .map(|repo| {
                    let (barrier, wt) = (&barrier, &wt);
                    scope.spawn(move || {
                        let mut cmd = sb.cmd();
                        cmd.args(["event", event, "--repo", repo, "--work-item", wi, "--json"]);
                        if event == "approved" {
                            cmd.args(["--branch", BRANCH, "--worktree"]).arg(wt);
                        }
                        barrier.wait();
                        let out = cmd.output().unwrap();
                        (code(&out), parse_json(&out))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    for wi in items {
        for event in ["request-approve", "approved"] {
            let reports = at_once(event, wi);
            let outcomes: Vec<&str> = reports
                .iter()
                .map(|(_, r)| r["outcome"].as_str().unwrap())
                .collect();
            assert_eq!(
                outcomes.iter().filter(|o| **o == "transitioned").count(),
                1,
                "{event}: {reports:?}"
            );
            assert_eq!(
                outcomes.iter().filter(|o| **o == "unchanged").count(),
                2,
                "{event}: {reports:?}"
            );
            assert!(reports.iter().all(|(c, r)| *c == 0 && r["repo"] == REPO));
        }
    }
    // One state directory, one lock directory, one history per item.
    assert_eq!(
        names_in(&sb.state_root()),
        BTreeSet::from([
            ".deploy-state-orchestrator".to_owned(),
            ".selfdeploy".into()
        ])
    );
    let own = sb.state_root().join(".selfdeploy");
    assert_eq!(
        names_in(&own.join("locks")),
        BTreeSet::from(["orchestrator".to_owned()])
    );
    assert_eq!(
        names_in(&own.join("history")),
        BTreeSet::from(["orchestrator".to_owned()])
    );
    for wi in items {
        let r = {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, r) = event_as(sb, "ORCHESTRATOR", "poll", wi, &[]);
                if r["outcome"] != "deferred" {
                    break r;
                }
                assert!(Instant::now() < deadline, "{r}");
                thread::sleep(Duration::from_millis(50));
            }
        };
        assert_eq!(
            (r["repo"].as_str(), r["to"].as_str()),
            (Some(REPO), Some("finalized_success")),
            "{r}"
        );
        let claimed = names_in(&sb.item_dir(wi))
            .into_iter()
            .filter(|f| f.starts_with("claimed-"))
            .count();
        assert_eq!(claimed, 1, "{wi}: one dispatch");
        wait_for_wrappers(&sb.item_dir(wi), Duration::from_secs(10));
    }
    assert_eq!(sb.hook_runs(), items.len(), "one hook run per item");
    let out = sb.run(&["status", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), items.len(), "{rows:?}");
    assert!(rows.iter().all(|r| r["repo"] == REPO), "{rows:?}");
}

// ---------------------------------------------------------------------------
// The worktree guard, and a relative --worktree
// ---------------------------------------------------------------------------

#[test]
fn worktree_guard_refuses_and_a_relative_worktree_is_recorded_absolute() {
    let sb = Sandbox::new();
    let root = sb.root().to_path_buf();
    let plain = root.join("plain");
    fs::create_dir(&plain).unwrap();
    let file = root.join("a-file");
    fs::write(&file, "not a directory\n").unwrap();
    let tip = sb.tip();
    let wi = "ORCH-601";
    sb.request_approve(wi);
    let before = sb.disk_but_own();
    let bad: [(&str, PathBuf, bool); 7] = [
        ("missing", root.join("missing"), true),
        ("missing, no --revision", root.join("missing"), false),
        ("plain directory", plain.clone(), true),
        ("a file", file, true),
        ("bare repository", sb.remote(), true),
        ("inside .git", sb.worktree().join(".git"), true),
        ("relative, not a work tree", PathBuf::from("plain"), true),
    ];
    for (what, worktree, with_revision) in bad {
        let mut args = vec!["--branch", BRANCH, "--worktree", path_str(&worktree)];
        if with_revision {
            args.extend(["--revision", &tip]);
        }
        let (c, r) = sb.event_json("approved", wi, &args);
        assert_eq!(
            (c, r["outcome"].as_str(), r["to"].as_str()),
            (3, Some("refused"), Some("approve_requested")),
            "{what}: {r}"
        );
        if with_revision {
            let reason = r["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("worktree"), "{what}: {r}");
        }
        assert!(effect_kinds(&r).is_empty(), "{what}: {r}");
        assert_eq!(
            sb.disk_but_own(),
            before,
            "{what}: a refused approval writes nothing"
        );
    }
    wait_for_wrappers(&sb.item_dir(wi), Duration::from_secs(5));
    assert_eq!(sb.hook_runs(), 0, "no hook ran");

    // Relative to the directory the event is received in (the sandbox root),
    // recorded absolute.
    let (c, r) = sb.event_json(
        "approved",
        wi,
        &["--branch", BRANCH, "--worktree", "worktree"],
    );
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let record: Value =
        serde_json::from_str(&fs::read_to_string(sb.item_dir(wi).join("initiated")).unwrap())
            .unwrap();
    let recorded = PathBuf::from(record["worktree"].as_str().unwrap());
    assert!(recorded.is_absolute(), "{record}");
    assert_eq!(
        fs::canonicalize(&recorded).unwrap(),
        fs::canonicalize(sb.worktree()).unwrap(),
        "{record}"
    );
    // A poll from elsewhere finds the worktree by the recorded path.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let out = sb
            .cmd()
            .current_dir("/")
            .args(["event", "poll", "--repo", REPO, "--work-item", wi, "--json"])
            .output()
            .unwrap();
        let r = parse_json(&out);
        if r["outcome"] != "deferred" {
            break r;
        }
        assert!(Instant::now() < deadline, "{r}");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r["to"], "finalized_success", "{r}");
    sb.assert_deploy_log(wi, "SUCCESS", "0");
    wait_for_wrappers(&sb.item_dir(wi), Duration::from_secs(10));
    assert_eq!(sb.hook_runs(), 1);
}

// ---------------------------------------------------------------------------
// Settings validated before acting
// ---------------------------------------------------------------------------

#[test]
fn invalid_settings_stop_every_command_before_it_acts() {
    let sb = Sandbox::new();
    // A waits for approval; B's hook has written its result, not yet polled.
    sb.request_approve("SET-A");
    sb.request_approve("SET-B");
    let (c, r) = sb.approve("SET-B");
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let id = initiated_id(&sb, "SET-B");
    let result = sb.item_dir("SET-B").join(format!("result-{id}"));
    wait_until(Duration::from_secs(10), "B's result", || {
        fs::read_to_string(&result).is_ok_and(|s| s.trim() == "0")
    });
    wait_for_wrappers(&sb.item_dir("SET-B"), Duration::from_secs(10));
    let before = sb.disk();
    let runs = sb.hook_runs();
    assert_eq!(runs, 1);

    let wt = path_str(&sb.worktree()).to_owned();
    let item = |event: &'static str, wi: &'static str| -> Vec<String> {
        ["event", event, "--repo", REPO, "--work-item", wi, "--json"]
            .map(str::to_owned)
            .to_vec()
    };
    let mut commands = vec![
        item("request-approve", "SET-C"),
        item("approved", "SET-A"),
        item("poll", "SET-B"),
        item("reset", "SET-B"),
        item("merge-verified", "SET-B"),
        vec!["watch".to_owned(), "--once".to_owned()],
    ];
    commands[1].extend([
        "--worktree".to_owned(),
        wt,
        "--branch".into(),
        BRANCH.into(),
    ]);
    commands[3].push("--force".into());
    commands[4].extend(["--merged".to_owned(), "true".into()]);

    let bad: [(&str, &[(&str, &str)]); 5] = [
        ("HOST_REPOS_DIR", &[("HOST_REPOS_DIR", "state")]),
        // Relative, and it even resolves to the real state directory.
        ("REPOS_DIR", &[("REPOS_DIR", "state")]),
        (
            "DEPLOY_SSH_HOST",
            &[("SELF_DEPLOY_TRANSPORT", "ssh"), ("DEPLOY_SSH_HOST", "")],
        ),
        ("DEPLOY_HOOK_SCRIPT", &[("DEPLOY_HOOK_SCRIPT", "-c")]),
        (
            "SELF_DEPLOY_CLAIM_TIMEOUT_SECS",
            &[("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "abc")],
        ),
    ];
    for (setting, env) in bad {
        for args in &commands {
            let mut cmd = sb.cmd();
            cmd.args(args);
            for (key, value) in env {
                cmd.env(key, value);
            }
            let out = run_bounded(cmd, Duration::from_secs(30));
            let err = text(&out.stderr);
            let what = format!("{setting} / {}", args[..2].join(" "));
            assert_eq!(code(&out), 1, "{what}: {out:?}");
            assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
            assert!(names_setting(&err, setting), "{what}: names it: {err}");
            assert!(out.stdout.is_empty(), "{what}: {out:?}");
            assert!(sb.disk() == before, "{what}: something changed on disk");
        }
    }
    wait_for_wrappers(&sb.item_dir("SET-A"), Duration::from_secs(5));
    assert_eq!(sb.hook_runs(), runs, "no hook ran");

    // A typo is a warning naming the real setting; the command still works.
    let out = sb
        .cmd()
        .args(item("request-approve", "SET-C"))
        .env("SELF_DEPLOY_ENABLE", "true")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    let r = parse_json(&out);
    assert_eq!(
        (code(&out), r["outcome"].as_str()),
        (0, Some("transitioned")),
        "{r}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("warning"), "{err}");
    assert!(names_setting(&err, "SELF_DEPLOY_ENABLE"), "{err}");
    assert!(names_setting(&err, "SELF_DEPLOY_ENABLED"), "{err}");
    let out = sb
        .cmd()
        .args(["status", "--all"])
        .env("SELF_DEPLOY_ENABLE", "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(
        names_setting(&text(&out.stderr), "SELF_DEPLOY_ENABLED"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------
// A missing or non-directory REPOS_DIR
// ---------------------------------------------------------------------------

#[test]
fn missing_or_non_directory_repos_dir_is_an_error_for_every_reader() {
    let sb = Sandbox::new();
    let missing = sb.root().join("not-mounted");
    let file = sb.root().join("repos-file");
    fs::write(&file, "not a directory\n").unwrap();
    let commands: [&[&str]; 8] = [
        &["status"],
        &["status", "--all"],
        &["status", "--all", "--json"],
        &["status", "--repo", REPO, "--work-item", "W", "--json"],
        &["watch", "--once"],
        &["history", "--repo", REPO, "--work-item", "W"],
        &[
            "event",
            "poll",
            "--repo",
            REPO,
            "--work-item",
            "W",
            "--json",
        ],
        &[
            "event",
            "request-approve",
            "--repo",
            REPO,
            "--work-item",
            "W",
        ],
    ];
    for repos_dir in [&missing, &file] {
        for args in commands {
            let mut cmd = sb.cmd();
            cmd.args(args).env("REPOS_DIR", repos_dir);
            let out = run_bounded(cmd, Duration::from_secs(30));
            let err = text(&out.stderr);
            let what = format!("{} with REPOS_DIR {}", args.join(" "), repos_dir.display());
            assert_eq!(code(&out), 1, "{what}: {out:?}");
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
            assert!(names_setting(&err, "REPOS_DIR"), "{what}: {err}");
            assert!(out.stdout.is_empty(), "{what}: {out:?}");
        }
    }
    assert!(!missing.exists(), "REPOS_DIR is never created");
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory\n");
}

// ---------------------------------------------------------------------------
// Special files in place of state files
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Special {
    Fifo,
    Symlink,
    Dir,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    ApproveRequested,
    Initiated,
    Finalized,
    Result,
    LegacyResult,
}

fn make_special(path: &Path, kind: Special, zero: &Path) {
    if path.exists() {
        fs::remove_file(path).unwrap();
    }
    match kind {
        Special::Fifo => {
            use std::os::unix::ffi::OsStrExt;
            let c = CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
            assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
        }
        Special::Symlink => std::os::unix::fs::symlink(zero, path).unwrap(),
        Special::Dir => {
            fs::create_dir(path).unwrap();
            fs::write(path.join("0"), "0\n").unwrap();
        }
    }
}

/// Puts the item in the state where `target` matters; returns the file name.
fn special_setup(sb: &Sandbox, wi: &str, target: Target) -> String {
    let dir = sb.item_dir(wi);
    if target == Target::LegacyResult {
        // An item the original engine started: its `initiated` is not our
        // JSON, its result is the legacy `result`, there is no ticket.
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("approve-requested"), "").unwrap();
        fs::write(dir.join("initiated"), "approved by the original engine\n").unwrap();
        return "result".to_owned();
    }
    sb.request_approve(wi);
    if target == Target::ApproveRequested {
        return "approve-requested".to_owned();
    }
    let (c, r) = sb.approve(wi);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("transitioned")), "{r}");
    let id = initiated_id(sb, wi);
    let result = dir.join(format!("result-{id}"));
    wait_until(Duration::from_secs(10), "the hook's result", || {
        fs::read_to_string(&result).is_ok_and(|s| s.trim() == "1")
    });
    wait_for_wrappers(&dir, Duration::from_secs(10));
    match target {
        Target::Initiated => "initiated".to_owned(),
        Target::Result => format!("result-{id}"),
        _ => {
            let r = sb.poll_until_final(wi, &[]);
            assert_eq!(r["to"], "finalized_failed", "{r}");
            "finalized".to_owned()
        }
    }
}

#[test]
fn special_files_are_never_followed_or_waited_on_and_reset_clears_them() {
    let started = Instant::now();
    let sb = Sandbox::new();
    // The real hook exits 1; a symlink's target says 0.
    fs::write(sb.host_repo().join("hook-exit"), "1").unwrap();
    let zero = sb.root().join("zero");
    fs::write(&zero, "0\n").unwrap();
    let limit = Duration::from_secs(10);
    let targets = [
        Target::ApproveRequested,
        Target::Initiated,
        Target::Finalized,
        Target::Result,
        Target::LegacyResult,
    ];
    for target in targets {
        for kind in [Special::Fifo, Special::Symlink, Special::Dir] {
            let wi = format!("SP-{target:?}-{kind:?}");
            let what = format!("{target:?} as a {kind:?}");
            let file = special_setup(&sb, &wi, target);
            let dir = sb.item_dir(&wi);
            make_special(&dir.join(&file), kind, &zero);
            let bounded = |args: &[&str]| {
                let mut cmd = sb.cmd();
                cmd.args(args);
                run_bounded(cmd, limit)
            };

            let out = bounded(&["status", "--repo", REPO, "--work-item", &wi, "--json"]);
            assert_eq!(code(&out), 0, "{what}: {out:?}");
            let st = parse_json(&out);
            let unreadable: Vec<&str> = st["unreadable"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["file"].as_str().unwrap())
                .collect();
            assert!(unreadable.contains(&file.as_str()), "{what}: {st}");
            let state = match target {
                Target::ApproveRequested => "approve_requested",
                Target::Finalized => "finalized_failed",
                _ => "initiated",
            };
            assert_eq!(st["state"], state, "{what}: {st}");
            if matches!(target, Target::Result | Target::LegacyResult) {
                assert!(st["result"].is_null(), "{what}: never followed: {st}");
            }
            let out = bounded(&["status", "--all", "--json"]);
            assert_eq!(code(&out), 0, "{what}: {out:?}");
            let out = bounded(&["watch", "--once"]);
            assert!(matches!(code(&out), 0 | 1), "{what}: {out:?}");

            let out = bounded(&[
                "event",
                "poll",
                "--repo",
                REPO,
                "--work-item",
                &wi,
                "--json",
            ]);
            let expected = match target {
                Target::ApproveRequested => 3,
                Target::Finalized => 0,
                _ => 1,
            };
            assert_eq!(code(&out), expected, "{what}: {out:?}");
            if expected == 1 {
                let err = text(&out.stderr);
                assert_eq!(err.lines().count(), 1, "{what}: {err}");
                assert!(err.contains(&file), "{what}: names the file: {err}");
                assert!(!sb.deploy_log(&wi).exists(), "{what}: nothing finalized");
                assert!(!dir.join("finalized").exists(), "{what}");
            }
            if target == Target::Finalized {
                sb.assert_deploy_log(&wi, "FAILED", "1");
            }
            if let Ok(log) = fs::read_to_string(sb.deploy_log(&wi)) {
                assert!(!log.contains("SUCCESS"), "{what}: {log}");
            }

            let out = bounded(&[
                "event",
                "reset",
                "--repo",
                REPO,
                "--work-item",
                &wi,
                "--force",
                "--json",
            ]);
            let r = parse_json(&out);
            assert_eq!(
                (code(&out), r["outcome"].as_str(), r["to"].as_str()),
                (0, Some("transitioned"), Some("idle")),
                "{what}: {r}"
            );
            if target == Target::Initiated {
                // The host claimed this dispatch and its hook ended with a
                // result nothing recorded: the reset keeps it, and the next
                // event records its verdict (FAILED, exit 1).
                let st = parse_json(&bounded(&[
                    "status",
                    "--repo",
                    REPO,
                    "--work-item",
                    &wi,
                    "--json",
                ]));
                assert_eq!(st["state"], "idle", "{what}: {st}");
                assert_eq!(st["kept_runs"][0]["result"], "1", "{what}: {st}");
                assert!(
                    st["unreadable"].as_array().unwrap().is_empty(),
                    "{what}: {st}"
                );
                let out = bounded(&[
                    "event",
                    "request-approve",
                    "--repo",
                    REPO,
                    "--work-item",
                    &wi,
                    "--json",
                ]);
                assert_eq!(code(&out), 0, "{what}: {out:?}");
                let history = text(
                    &bounded(&["history", "--repo", REPO, "--work-item", &wi, "--json"]).stdout,
                );
                assert!(
                    history
                        .lines()
                        .any(|l| l.contains("late-result") && l.contains("FAILED")),
                    "{what}: {history}"
                );
            } else {
                assert!(!dir.exists(), "{what}: reset clears the item");
            }
            assert_eq!(fs::read_to_string(&zero).unwrap(), "0\n", "{what}");
        }
    }
    eprintln!("special files: {:?}", started.elapsed());
}
