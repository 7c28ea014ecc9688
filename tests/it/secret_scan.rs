//! The history keys never leave the process (contract section 11): every
//! subcommand is run with HISTORY_HMAC_KEY and HISTORY_HMAC_PREVIOUS_KEYS set
//! to distinctive values and RUST_LOG=trace, and no output, no log line, no
//! error, no `snapshot` fixture and no file the run leaves holds them, in any
//! of the forms a careless print would take (plain, hex, a byte list).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::report::*;
use crate::support::sandbox::*;

const ITEM: &str = "ORCH-7";
/// Every configured secret starts with this marker, so that even a key cut
/// short is caught.
const MARKER: &str = "sEcReT";
const KEY: &str = "sEcReT-cUrReNt-3f9a1c77e2-8b41d0e6a9c35f27d1b8";
const OLD1: &str = "sEcReT-oLd-one-8d2e5b-04c7a19f3e6d2b58c0a1f9e3";
const OLD2: &str = "sEcReT-oLd-two-41b0c9-7e35d8a2f61c09b4e7d35a0c";

fn previous() -> String {
    format!("{OLD1},{OLD2}")
}

/// The byte strings that must never appear.
fn needles() -> Vec<(String, Vec<u8>)> {
    let mut all = vec![(format!("the marker {MARKER}"), MARKER.as_bytes().to_vec())];
    for secret in [KEY.to_owned(), OLD1.to_owned(), OLD2.to_owned(), previous()] {
        all.push((secret.clone(), secret.as_bytes().to_vec()));
        all.push((
            format!("hex of {secret}"),
            hex::encode(secret.as_bytes()).into_bytes(),
        ));
        all.push((
            format!("bytes of {secret}"),
            format!("{:?}", &secret.as_bytes()[..6])
                .trim_end_matches(']')
                .as_bytes()
                .to_vec(),
        ));
    }
    all
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Fails when `bytes` hold a secret in any form.
fn scan(what: &str, bytes: &[u8]) {
    for (name, needle) in needles() {
        if let Some(at) = find(bytes, &needle) {
            let from = at.saturating_sub(80);
            let to = (at + needle.len() + 80).min(bytes.len());
            panic!(
                "{what} shows {name}: ...{}...",
                String::from_utf8_lossy(&bytes[from..to])
            );
        }
    }
}

/// Every file under `dir` (not following links), except under `skip`.
fn scan_tree(dir: &Path, skip: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.starts_with(skip) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            scan_tree(&path, skip);
        } else if meta.is_file() {
            scan(&path.display().to_string(), &fs::read(&path).unwrap());
        }
    }
}

struct Scan {
    sb: Sandbox,
    /// How many commands logged at debug or trace level: the scan covers
    /// the logs only if logging was on.
    logged: usize,
    commands: usize,
}

impl Scan {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.sb.cmd();
        cmd.args(args).env("RUST_LOG", "trace");
        cmd
    }

    /// Runs the command, scans its stdout and stderr, returns the output.
    fn run_cmd(&mut self, what: String, mut cmd: Command) -> Output {
        let out = cmd.output().expect("run selfdeploy");
        scan(&format!("stdout of {what}"), &out.stdout);
        scan(&format!("stderr of {what}"), &out.stderr);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains(" TRACE ") || stderr.contains(" DEBUG ") {
            self.logged += 1;
        }
        self.commands += 1;
        out
    }

    /// Runs `selfdeploy args`, expecting exit `code`.
    fn run(&mut self, args: &[&str], code: i32) -> Output {
        let out = self.run_cmd(format!("{args:?}"), self.cmd(args));
        let (got, stdout, stderr) = code_out_err(&out);
        assert_eq!(got, code, "{args:?}: {stdout}\n{stderr}");
        out
    }

    fn event(&mut self, event: &str, extra: &[&str], code: i32) -> Output {
        let mut args = vec!["event", event, "--repo", REPO, "--work-item", ITEM];
        args.extend_from_slice(extra);
        self.run(&args, code)
    }

    /// `snapshot` into a file; checks the secrets are recorded as redacted
    /// and that `replay` takes the fixture.
    fn snapshot_and_replay(&mut self, name: &str) -> PathBuf {
        let out = self.run(&["snapshot", "--repo", REPO, "--work-item", ITEM], 0);
        let fixture = String::from_utf8(out.stdout).unwrap();
        for setting in ["HISTORY_HMAC_KEY", "HISTORY_HMAC_PREVIOUS_KEYS"] {
            assert!(
                fixture.contains(&format!("\"{setting}\": \"<redacted>\"")),
                "{setting} is recorded as redacted:\n{fixture}"
            );
        }
        let path = self.sb.root().join(format!("{name}.ron"));
        fs::write(&path, &fixture).unwrap();
        let out = self.run(&["replay", path.to_str().unwrap()], 0);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with(&format!("PASS {}", path.display())),
            "{stdout}"
        );
        path
    }
}

#[test]
fn no_command_shows_the_history_keys() {
    let mut sb = Sandbox::new();
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    sb.set("HISTORY_HMAC_PREVIOUS_KEYS", previous().into());
    let mut s = Scan {
        sb,
        logged: 0,
        commands: 0,
    };
    let wt = s.sb.worktree();
    let wt = wt.to_str().unwrap().to_owned();
    let approve = ["--branch", BRANCH, "--worktree", wt.as_str()];

    // The first entry is signed by an old key, so that verification has a
    // rotation to walk (and a key id to name).
    let mut first = s.cmd(&[
        "event",
        "request-approve",
        "--repo",
        REPO,
        "--work-item",
        ITEM,
    ]);
    first
        .env("HISTORY_HMAC_KEY", OLD1)
        .env_remove("HISTORY_HMAC_PREVIOUS_KEYS");
    let out = s.run_cmd("request-approve under the old key".into(), first);
    assert_eq!(out.status.code(), Some(0));

    // Every event, as a dry run, as JSON, as text, through explain.
    s.event("request-approve", &["--json"], 0);
    s.run(
        &[
            "explain",
            "approved",
            "--repo",
            REPO,
            "--work-item",
            ITEM,
            "--branch",
            BRANCH,
            "--worktree",
            &wt,
        ],
        0,
    );
    s.run(
        &[
            "explain",
            "approved",
            "--repo",
            REPO,
            "--work-item",
            ITEM,
            "--branch",
            BRANCH,
            "--worktree",
            &wt,
            "--json",
        ],
        0,
    );
    let mut dry = approve.to_vec();
    dry.extend(["--dry-run", "--json"]);
    s.event("approved", &dry, 0);
    s.event(
        "approved",
        &[approve.as_slice(), &["--dry-run"]].concat(),
        0,
    );
    s.event("approved", &[approve.as_slice(), &["--json"]].concat(), 0);
    s.sb.wait_for_result(ITEM);
    s.snapshot_and_replay("initiated");
    s.event("poll", &["--dry-run"], 0);
    s.event("poll", &["--dry-run", "--json"], 0);
    s.run(
        &[
            "explain",
            "poll",
            "--repo",
            REPO,
            "--work-item",
            ITEM,
            "--json",
        ],
        0,
    );
    s.event("poll", &[], 0);
    assert_eq!(s.sb.finalized_json(ITEM)["pushed"], true);
    s.event("poll", &["--json"], 0);
    s.event(
        "merge-verified",
        &["--merged", "true", "--dry-run", "--json"],
        0,
    );
    s.event("merge-verified", &["--merged", "true"], 0);
    s.event("merge-verified", &["--merged", "false", "--json"], 0);
    s.run(
        &[
            "explain",
            "merge-verified",
            "--repo",
            REPO,
            "--work-item",
            ITEM,
            "--merged",
            "true",
        ],
        0,
    );
    s.event("reset", &["--dry-run", "--json"], 0);
    // Refused, illegal and failing events.
    s.event("approved", &[approve.as_slice(), &["--json"]].concat(), 3);
    s.event("approved", &["--branch=--mirror"], 1);
    s.run(
        &["event", "poll", "--repo", REPO, "--work-item", "bad name"],
        1,
    );
    s.event("merge-verified", &[], 2);

    // Status, history, verification.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["status", "--all"],
        &["status", "--all", "--json"],
        &["status", "--repo", REPO, "--work-item", ITEM],
        &["status", "--repo", REPO, "--work-item", ITEM, "--json"],
        &["history", "--repo", REPO, "--work-item", ITEM],
        &["history", "--repo", REPO, "--work-item", ITEM, "--json"],
        &["history", "--repo", REPO, "--work-item", ITEM, "--verify"],
        &[
            "history",
            "--repo",
            REPO,
            "--work-item",
            ITEM,
            "--verify",
            "--json",
        ],
    ] {
        s.run(args, 0);
    }
    // Without the previous keys: verification fails and names a key id.
    let mut cmd = s.cmd(&["history", "--repo", REPO, "--work-item", ITEM, "--verify"]);
    cmd.env_remove("HISTORY_HMAC_PREVIOUS_KEYS");
    let out = s.run_cmd("history --verify without the previous keys".into(), cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("entry 1 is not authentic"));
    // A missing REPOS_DIR is an error that must not dump the settings.
    let mut cmd = s.cmd(&["status", "--json"]);
    cmd.env("REPOS_DIR", s.sb.root().join("no-such-dir"));
    let out = s.run_cmd("status with a missing REPOS_DIR".into(), cmd);
    assert_eq!(out.status.code(), Some(1));

    // Configuration and checks.
    for args in [
        &["config"][..],
        &["config", "--json"],
        &["config", "--check"],
        &["doctor"],
        &["doctor", "--json"],
    ] {
        s.run_cmd(format!("{args:?}"), s.cmd(args));
    }
    let out = s.run(&["config", "--json"], 0);
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(
        config.lines().any(|l| l.contains("\"HISTORY_HMAC_KEY\"")),
        "config lists the key's setting: {config}"
    );

    // Fixtures, watch, the machine, new secrets, the demo.
    s.snapshot_and_replay("finalized");
    s.run(&["watch", "--once"], 0);
    for format in ["table", "json", "ron", "dot", "mermaid", "markdown"] {
        s.run(&["machine", "--format", format], 0);
    }
    s.run(&["gen-secrets"], 0);
    let generated = s.sb.root().join("generated.env");
    s.run(&["gen-secrets", "--write", generated.to_str().unwrap()], 0);
    assert!(
        fs::read_to_string(&generated)
            .unwrap()
            .contains("HISTORY_HMAC_KEY="),
        "gen-secrets wrote new values"
    );
    s.run(&["demo"], 0);
    s.event("reset", &[], 0);
    s.event("request-approve", &["--json"], 0);

    // Malformed env files holding the key: the error names the problem,
    // never the line.
    let env_dir = s.sb.root().join("env-files");
    fs::create_dir_all(&env_dir).unwrap();
    let malformed = [
        format!("HISTORY_HMAC_KEY={KEY} trailing words\n"),
        format!("HISTORY_HMAC_KEY=\"{KEY}\n"),
        format!("{KEY}\n"),
        format!("SELF_DEPLOY_ENABLED=true\nHISTORY_HMAC_PREVIOUS_KEYS={OLD1}, {OLD2}\n"),
        format!("HISTORY_HMAC_KEY='{KEY}'x'\n"),
        format!("HISTORY_HMAC_KEY=\"{KEY}\nsecond line {OLD1}\n"),
        format!("  {KEY} = HISTORY_HMAC_KEY\n"),
    ];
    for (i, text) in malformed.iter().enumerate() {
        let file = env_dir.join(format!("bad-{i}.env"));
        fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        for args in [
            &["config", "--env-file", file][..],
            &["config", "--check", "--env-file", file],
            &["status", "--env-file", file],
            &["doctor", "--env-file", file],
            &[
                "event",
                "poll",
                "--repo",
                REPO,
                "--work-item",
                ITEM,
                "--env-file",
                file,
            ],
        ] {
            let out = s.run_cmd(format!("{args:?} with {text:?}"), s.cmd(args));
            if args[0] != "doctor" {
                // `config --check` lists the problem on stdout, the others
                // fail on stderr.
                let (code, stdout, stderr) = code_out_err(&out);
                assert_eq!(code, 1, "{args:?} with {text:?}: {stderr}");
                assert!(
                    format!("{stdout}{stderr}").contains(&format!("{file}, line ")),
                    "{args:?} with {text:?}: {stdout}{stderr}"
                );
            }
        }
    }

    // Nothing the run left on disk holds them either (the env files written
    // above on purpose aside).
    scan_tree(s.sb.root(), &env_dir);
    assert!(s.commands > 80, "{} commands", s.commands);
    assert!(
        s.logged >= 20,
        "RUST_LOG=trace took effect: {} of {} commands logged",
        s.logged,
        s.commands
    );
}

/// The processes selfdeploy starts (the hook under the local transport, and
/// git) need no history key: a hook that logs its environment (`set -x`,
/// `env`) would otherwise write the key into `hook.log`.
#[test]
fn the_hook_and_git_do_not_inherit_the_keys() {
    let mut sb = Sandbox::new();
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    sb.set("HISTORY_HMAC_PREVIOUS_KEYS", previous().into());
    let dump = sb.root().join("child-env");
    let hook = format!("#!/usr/bin/env bash\nenv >> {}\nexit 0\n", dump.display());
    fs::write(sb.host_repo().join("hook.sh"), hook).unwrap();
    let real = which::which("git").expect("git on PATH");
    let bin = sb.root().join("env-bin");
    write_executable(
        &bin.join("git"),
        &format!(
            "#!/bin/sh\nenv >> {}\nexec {} \"$@\"\n",
            dump.display(),
            real.display()
        ),
    );
    sb.set("PATH", path_with_first_dir(&bin));
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let env = fs::read(&dump).unwrap();
    assert!(find(&env, b"PATH=").is_some(), "the children ran");
    scan("the environment of the hook and of git", &env);
}
