//! Command-line conventions, through the binary: completions, manual pages,
//! `--version`, `-q`/`-v`, and who an event is recorded as by default.

use std::fs;
use std::process::Output;

use crate::support::sandbox::{Sandbox, tool};

fn stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

const SUBCOMMANDS: [&str; 18] = [
    "init",
    "lock",
    "unlock",
    "event",
    "explain",
    "status",
    "history",
    "logs",
    "config",
    "gen-secrets",
    "doctor",
    "demo",
    "machine",
    "replay",
    "snapshot",
    "watch",
    "completions",
    "man",
];

#[test]
fn completions_for_bash_and_zsh_know_every_subcommand() {
    let sb = Sandbox::new();
    let bash = stdout(&sb.run(&["completions", "bash"]));
    assert!(bash.contains("complete -F _selfdeploy"), "{bash}");
    let zsh = stdout(&sb.run(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef selfdeploy\n"), "{zsh}");
    for sub in SUBCOMMANDS {
        assert!(bash.contains(&format!("selfdeploy,{sub})")), "bash: {sub}");
        assert!(zsh.contains(&format!("'{sub}:")), "zsh: {sub}");
    }
    // The bash script is valid bash, and completes a subcommand.
    let script = sb.root().join("completion.bash");
    fs::write(&script, &bash).unwrap();
    let out = std::process::Command::new(tool("bash"))
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(selfdeploy sta); COMP_CWORD=1; _selfdeploy selfdeploy sta selfdeploy; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "status", "{out:?}");
    let bad = sb.run(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[test]
fn man_pages_cover_the_command_and_each_subcommand() {
    let sb = Sandbox::new();
    let page = stdout(&sb.run(&["man"]));
    assert!(page.contains(".TH selfdeploy 1 "), "{page}");
    for sub in SUBCOMMANDS {
        let roff = format!("selfdeploy-{sub}(1)").replace('-', "\\-");
        assert!(page.contains(&roff), "{sub}: {roff}");
    }
    let status = stdout(&sb.run(&["man", "status"]));
    assert!(status.contains(".TH selfdeploy-status 1 "), "{status}");
    assert!(status.contains("\\fB\\-\\-json\\fR"), "{status}");

    let dir = sb.root().join("man1");
    fs::create_dir(&dir).unwrap();
    stdout(&sb.run(&["man", "--out-dir", dir.to_str().unwrap()]));
    let mut written: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let mut expected: Vec<String> = SUBCOMMANDS
        .iter()
        .map(|s| format!("selfdeploy-{s}.1"))
        .chain(["selfdeploy.1".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(written, expected);

    let unknown = sb.run(&["man", "nope"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    let missing = sb.run(&["man", "--out-dir", "no-such-dir"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no-such-dir is not a directory"),
        "{missing:?}"
    );
}

#[test]
fn version_names_the_release() {
    let sb = Sandbox::new();
    let out = stdout(&sb.run(&["--version"]));
    assert_eq!(out, format!("selfdeploy {}\n", env!("CARGO_PKG_VERSION")));
    // The changelog's newest entry is this version.
    let changelog = include_str!("../../CHANGELOG.md");
    let newest = changelog
        .lines()
        .find(|l| l.starts_with("## "))
        .expect("CHANGELOG.md has a release");
    assert!(
        newest.starts_with(&format!("## {} - ", env!("CARGO_PKG_VERSION"))),
        "{newest}"
    );
}

#[test]
fn quiet_and_verbose_set_the_log_level() {
    let mut sb = Sandbox::new();
    // A typo of a setting is warned about, unless -q.
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SEC", "5".into());
    let warned = sb.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&warned.stderr).contains("warning"),
        "{warned:?}"
    );
    let quiet = sb.run(&["-q", "status"]);
    assert_eq!(quiet.status.code(), Some(0), "{quiet:?}");
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    // -v shows each event handled (info); without it nothing is logged.
    sb.request_approve("LOG-1");
    let plain = sb.run(&[
        "event",
        "poll",
        "--repo",
        "orchestrator",
        "--work-item",
        "LOG-1",
    ]);
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("event handled"));
    let verbose = sb.run(&[
        "event",
        "poll",
        "-v",
        "--repo",
        "orchestrator",
        "--work-item",
        "LOG-1",
    ]);
    assert!(
        String::from_utf8_lossy(&verbose.stderr).contains("event handled"),
        "{verbose:?}"
    );
    let both = sb.run(&["-q", "-v", "status"]);
    assert_eq!(both.status.code(), Some(2), "{both:?}");
}

#[test]
fn the_default_actor_is_the_person() {
    let sb = Sandbox::new();
    let actor = |item: &str, env: &[(&str, &str)]| {
        let mut cmd = sb.event_cmd("request-approve", item);
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let history = sb.run(&[
            "history",
            "--repo",
            "orchestrator",
            "--work-item",
            item,
            "--json",
        ]);
        let last = stdout(&history).lines().last().unwrap().to_owned();
        serde_json::from_str::<serde_json::Value>(&last).unwrap()["actor"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        actor("A-1", &[("SUDO_USER", "alice"), ("USER", "root")]),
        "alice"
    );
    assert_eq!(actor("A-2", &[("SUDO_USER", " "), ("USER", "bob")]), "bob");
    assert_eq!(actor("A-3", &[]), "selfdeploy");
}

/// Every `--json` prints JSON Lines: each line of stdout one object.
/// `machine --format json` is the one whole document.
#[test]
fn every_json_output_is_json_lines() {
    let sb = Sandbox::new();
    sb.request_approve("J-1");
    let item = ["--repo", "orchestrator", "--work-item", "J-1"];
    let with = |head: &[&str], tail: &[&str]| -> Vec<String> {
        head.iter().chain(tail).map(|s| s.to_string()).collect()
    };
    let commands: Vec<Vec<String>> = vec![
        with(&["event", "poll"], &item),
        with(&["explain", "approved"], &item),
        with(&["status"], &[]),
        with(&["history"], &item),
        with(&["history", "--verify"], &item),
        with(&["config"], &[]),
        with(&["doctor"], &[]),
    ];
    for mut args in commands {
        args.push("--json".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sb.run(&args);
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(!text.is_empty(), "{args:?}: no output: {out:?}");
        assert!(text.ends_with('\n'), "{args:?}");
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            assert!(value.is_object(), "{args:?}: {line}");
        }
    }
    let machine = stdout(&sb.run(&["machine", "--format", "json"]));
    // One value, the whole table (from_str refuses anything after it).
    let table: serde_json::Value = serde_json::from_str(&machine).unwrap();
    assert!(
        table.as_array().is_some_and(|rows| rows.len() > 50),
        "{table}"
    );
}
