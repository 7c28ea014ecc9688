//! The env file through the binary: which file is read (`--env-file`,
//! `SELFDEPLOY_ENV_FILE`, `./.env`, the system file), the one grammar that
//! systemd and compose read alike (no variable substitution, every error
//! naming the file and the line), the warnings (a setting given twice, a
//! name close to a setting) that `config --check --strict` and `doctor`
//! fail on, and `gen-secrets --write --force` filling the shipped file in
//! place, one run at a time, keeping its mode and group.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output};

use crate::support::report::*;
use crate::support::sandbox::*;

const SYSTEM_FILE: &str = "/etc/selfdeploy/selfdeploy.env";

/// `config --json` as (name -> (value, source)).
fn config(out: &Output) -> std::collections::BTreeMap<String, (String, String)> {
    assert_eq!(code(out), 0, "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["name"].as_str().unwrap().to_owned(),
                (
                    v["value"].as_str().unwrap().to_owned(),
                    v["source"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn write(path: &Path, body: &str) -> String {
    fs::write(path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn no_variable_is_substituted() {
    let sb = Sandbox::new();
    let file = write(
        &sb.root().join("quoted.env"),
        "DEPLOY_SSH_HOST='h$HOME'\nDEPLOY_PROD_TARGET_IMAGE='img:${USER}'\n",
    );
    let values = config(
        &sb.cmd()
            .env("USER", "someone")
            .args(["--env-file", &file, "config", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(values["DEPLOY_SSH_HOST"].0, "h$HOME");
    assert_eq!(values["DEPLOY_PROD_TARGET_IMAGE"].0, "img:${USER}");

    // Unquoted, compose would substitute and systemd would not: refused,
    // never silently read as something else.
    for (n, line) in [
        "DEPLOY_SSH_USER=$USER",
        "HISTORY_HMAC_KEY=abc$def0123456789",
        "DEPLOY_SSH_USER=\"${USER}\"",
    ]
    .iter()
    .enumerate()
    {
        let file = write(
            &sb.root().join(format!("dollar-{n}.env")),
            &format!("# settings\nREPOS_DIR=/srv/r\n{line}\n"),
        );
        let out = sb
            .cmd()
            .env("USER", "someone")
            .args(["--env-file", &file, "config"])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(code(&out), 1, "{line}: {err}");
        assert!(
            err.contains(&format!("env file {file}, line 3:")) && err.contains("single quotes"),
            "{line}: {err}"
        );
        assert!(!err.contains("abc"), "the line is never shown: {err}");
    }
}

#[test]
fn every_parse_error_names_the_file_and_the_line() {
    let sb = Sandbox::new();
    for (n, (body, line, says)) in [
        ("A=1\nB=2\nexport C=3\n", 3, "export"),
        ("A=1\n\nB=two words\n", 3, "white space"),
        ("A=1\nB='open\nC=3\n", 2, "not closed"),
        ("A=1\nB=2\n# c\nC = 3\n", 4, "before '='"),
        ("\u{feff}A=1\n", 1, "byte-order mark"),
        ("A=1\nnot a setting\n", 2, "no '='"),
    ]
    .iter()
    .enumerate()
    {
        let file = write(&sb.root().join(format!("bad-{n}.env")), body);
        for args in [
            &["--env-file", &file, "config"][..],
            &["--env-file", &file, "status"],
        ] {
            let out = sb.run(args);
            let err = text(&out.stderr);
            assert_eq!(code(&out), 1, "{body:?} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains(&format!("env file {file}, line {line}:")) && err.contains(says),
                "{body:?}: {err}"
            );
        }
        // config --check lists it as a problem.
        let out = sb.run(&["--env-file", &file, "config", "--check"]);
        assert_eq!(code(&out), 1);
        assert!(
            text(&out.stdout).contains(&format!("line {line}:")),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn the_env_file_is_chosen_by_flag_then_variable_then_working_directory() {
    let sb = Sandbox::new();
    let flag = write(&sb.root().join("flag.env"), "GIT_EMAIL_DOMAIN=flag.test\n");
    let named = write(
        &sb.root().join("named.env"),
        "GIT_EMAIL_DOMAIN=named.test\n",
    );
    let local = write(&sb.root().join(".env"), "GIT_EMAIL_DOMAIN=local.test\n");
    let mut sb = sb;
    sb.env.remove("GIT_EMAIL_DOMAIN");
    let run = |variable: Option<&str>, flag: Option<&str>| {
        let mut cmd = sb.cmd();
        match variable {
            Some(v) => cmd.env("SELFDEPLOY_ENV_FILE", v),
            None => cmd.env_remove("SELFDEPLOY_ENV_FILE"),
        };
        if let Some(f) = flag {
            cmd.args(["--env-file", f]);
        }
        let json = config(&cmd.args(["config", "--json"]).output().unwrap());
        let mut cmd = sb.cmd();
        match variable {
            Some(v) => cmd.env("SELFDEPLOY_ENV_FILE", v),
            None => cmd.env_remove("SELFDEPLOY_ENV_FILE"),
        };
        if let Some(f) = flag {
            cmd.args(["--env-file", f]);
        }
        let out = cmd.arg("config").output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let first = text(&out.stdout).lines().next().unwrap_or("").to_owned();
        (json["GIT_EMAIL_DOMAIN"].clone(), first)
    };
    let (value, first) = run(Some(&named), Some(&flag));
    assert_eq!(value, ("flag.test".into(), flag.clone()));
    assert_eq!(first, format!("env file: {flag} (given by --env-file)"));
    let (value, first) = run(Some(&named), None);
    assert_eq!(value, ("named.test".into(), named.clone()));
    assert_eq!(
        first,
        format!("env file: {named} (named by SELFDEPLOY_ENV_FILE)")
    );
    let (value, first) = run(None, None);
    assert_eq!(value.0, "local.test");
    assert!(first.contains("./.env in the working directory"), "{first}");
    let _ = local;
    // Set but empty: no file at all.
    let (value, first) = run(Some(""), None);
    assert_eq!(value, ("orchestrator.local".into(), "default".into()));
    assert!(
        first.contains("SELFDEPLOY_ENV_FILE is set empty"),
        "{first}"
    );

    // A file the variable names must exist; the error names it and the fix.
    let missing = sb.root().join("missing.env");
    let out = sb
        .cmd()
        .env("SELFDEPLOY_ENV_FILE", &missing)
        .arg("config")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("does not exist"),
        "{err}"
    );
}

/// Runs `script` (sh) in a private mount namespace where `/etc` is the real
/// one with `etc_upper` laid over it (overlayfs): the system env file is
/// the test's, and the real `/etc` is untouched. `None` when this machine
/// cannot make one (not root, no overlayfs).
fn with_etc(etc_upper: &Path, script: &str) -> Option<Output> {
    let work = etc_upper.with_extension("work");
    fs::create_dir_all(&work).unwrap();
    let mount = format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc || exit 97\n{script}",
        etc_upper.display(),
        work.display()
    );
    let out = Command::new(tool("unshare"))
        .args(["--mount", "--propagation", "private", "sh", "-c", &mount])
        .output()
        .unwrap();
    if code(&out) == 97 || (code(&out) == 1 && text(&out.stderr).contains("unshare")) {
        eprintln!(
            "skipped: no private /etc overlay here: {}",
            text(&out.stderr)
        );
        return None;
    }
    Some(out)
}

#[test]
fn the_system_env_file_is_read_when_nothing_else_is_given() {
    let sb = Sandbox::new();
    // A directory every user may enter, with a copy of the binary in it.
    let open = sb.root().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(sb.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    let binary = open.join("selfdeploy");
    fs::copy(env!("CARGO_BIN_EXE_selfdeploy"), &binary).unwrap();
    let upper = sb.root().join("etc-upper");
    fs::create_dir_all(upper.join("selfdeploy")).unwrap();
    let system = upper.join("selfdeploy/selfdeploy.env");
    fs::write(&system, "GIT_EMAIL_DOMAIN=system.test\nSTAGING_PORT=9001\n").unwrap();
    // As the package ships it: root and a group, 0640.
    std::os::unix::fs::chown(&system, Some(0), Some(0)).unwrap();
    fs::set_permissions(&system, fs::Permissions::from_mode(0o640)).unwrap();

    // No --env-file, no SELFDEPLOY_ENV_FILE, no ./.env in `open`.
    let script = format!(
        "cd {open} && env -i PATH=\"$PATH\" {bin} config --json && echo ==== && env -i PATH=\"$PATH\" {bin} config && echo ==== && exec env -i PATH=\"$PATH\" {setpriv} --reuid=65534 --regid=65534 --clear-groups {bin} config",
        open = open.display(),
        bin = binary.display(),
        setpriv = tool("setpriv"),
    );
    let Some(out) = with_etc(&upper, &script) else {
        return;
    };
    let stdout = text(&out.stdout);
    let mut parts = stdout.split("====\n");
    let json = parts.next().unwrap();
    for (name, value) in [
        ("GIT_EMAIL_DOMAIN", "system.test"),
        ("STAGING_PORT", "9001"),
    ] {
        let line = json
            .lines()
            .find(|l| l.contains(&format!("\"name\":\"{name}\"")))
            .unwrap_or_else(|| panic!("{stdout}\n{}", text(&out.stderr)));
        assert!(
            line.contains(&format!("\"value\":\"{value}\""))
                && line.contains(&format!("\"source\":\"{SYSTEM_FILE}\"")),
            "{line}"
        );
    }
    let table = parts.next().unwrap_or_default();
    assert!(
        table.starts_with(&format!("env file: {SYSTEM_FILE} (the system env file")),
        "{table}"
    );
    // Another user, not in its group: the error names the file and the fix.
    let err = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stdout}{err}");
    assert!(
        err.contains(SYSTEM_FILE)
            && err.contains("permission denied")
            && err.contains("group")
            && err.contains("usermod"),
        "{err}"
    );
}

#[test]
fn without_any_env_file_config_says_the_system_file_was_not_found() {
    let sb = Sandbox::new();
    let upper = sb.root().join("etc-upper");
    fs::create_dir_all(&upper).unwrap();
    // A whiteout hides a real /etc/selfdeploy, should this machine have one.
    let script = format!(
        "rm -rf /etc/selfdeploy; cd {} && exec env -i PATH=\"$PATH\" {} config",
        sb.root().join("home").display(),
        env!("CARGO_BIN_EXE_selfdeploy")
    );
    let Some(out) = with_etc(&upper, &script) else {
        return;
    };
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let first = text(&out.stdout).lines().next().unwrap_or("").to_owned();
    assert!(
        first.starts_with("env file: none") && first.contains(&format!("{SYSTEM_FILE} not found")),
        "{first}"
    );
}

#[test]
fn a_setting_given_twice_is_a_warning() {
    let sb = Sandbox::new();
    let file = write(
        &sb.root().join("twice.env"),
        "STAGING_PORT=9001\nREPOS_DIR=/srv/r\nSTAGING_PORT=9002\n",
    );
    let out = sb.run(&["--env-file", &file, "config", "--json"]);
    assert_eq!(config(&out)["STAGING_PORT"].0, "9002");
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: STAGING_PORT is set more than once")
            && err.contains("lines 1 and 3"),
        "{err}"
    );
    let out = sb.run(&["--env-file", &file, "config", "--check", "--strict"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stdout));
}

#[test]
fn a_name_close_to_a_setting_is_a_warning_without_a_prefix() {
    let sb = Sandbox::new();
    let file = write(
        &sb.root().join("typo.env"),
        "HOST_REPO_DIR=/srv/x\nAPP_UID=1000\nREVISION=abc\n",
    );
    let out = sb
        .cmd()
        .env("REPO_DIR", "/srv/y")
        .env("repos_dir", "/srv/z")
        .env("LANG", "C")
        .env("SOME_UNRELATED_THING", "1")
        .args(["--env-file", &file, "config", "--check"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    let err = text(&out.stderr);
    for (name, meant) in [
        ("HOST_REPO_DIR", "HOST_REPOS_DIR"),
        ("REPO_DIR", "REPOS_DIR"),
        ("repos_dir", "REPOS_DIR"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("warning: {name} (from"))
                    && l.contains(&format!("did you mean {meant}?"))),
            "{name}: {err}"
        );
    }
    assert!(
        err.contains(&format!("{file}, line 1")),
        "the file's line: {err}"
    );
    for quiet in [
        "PATH",
        "HOME",
        "LANG",
        "SOME_UNRELATED",
        "APP_UID",
        "REVISION",
    ] {
        assert!(
            !err.contains(&format!("warning: {quiet}")),
            "{quiet}: {err}"
        );
    }
    assert_eq!(err.lines().count(), 3, "{err}");

    // --strict: the warnings fail.
    let out = sb
        .cmd()
        .env("REPO_DIR", "/srv/y")
        .args(["config", "--check", "--strict"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("warning: REPO_DIR"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(code(&sb.run(&["config", "--check", "--strict"])), 0);
}

#[test]
fn doctor_fails_on_a_misspelled_kill_switch() {
    let sb = Sandbox::new();
    let out = sb
        .cmd()
        .env("SELF_DEPLOY_ENABLE", "false")
        .arg("doctor")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 1, "{stdout}");
    let first = stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("FAIL configuration")
            && first.contains("SELF_DEPLOY_ENABLE ")
            && first.contains("did you mean SELF_DEPLOY_ENABLED?"),
        "{stdout}"
    );
    assert!(stdout.contains("--strict"), "the fix: {stdout}");
    // Without the typo, the same installation passes that check.
    let out = sb.run(&["doctor"]);
    assert!(
        text(&out.stdout).starts_with("PASS configuration"),
        "{}",
        text(&out.stdout)
    );
}

fn key_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("HISTORY_HMAC_KEY="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn gen_secrets_fills_the_shipped_file_in_place_keeping_mode_and_group() {
    let sb = Sandbox::new();
    let path = sb.root().join("selfdeploy.env");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    fs::copy(&example, &path).unwrap();
    // As the package ships it: 0640, a group that reads it.
    std::os::unix::fs::chown(&path, Some(0), Some(65534)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::read_to_string(&path).unwrap();
    let p = path.to_str().unwrap();

    let out = sb.run(&["gen-secrets", "--write", p, "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let after = fs::read_to_string(&path).unwrap();
    assert_eq!(after.lines().count(), before.lines().count(), "{after}");
    let keys = key_lines(&path);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0].strip_prefix("HISTORY_HMAC_KEY=").unwrap();
    assert_eq!(key.len(), 64);
    // Every other line as it was, the key's line where it was.
    for (a, b) in before.lines().zip(after.lines()) {
        if a != "HISTORY_HMAC_KEY=" {
            assert_eq!(a, b);
        } else {
            assert_eq!(b, keys[0]);
        }
    }
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, 65534));
    // Read back with no duplicate warning.
    let out = sb.run(&["--env-file", p, "config", "--check", "--strict"]);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn gen_secrets_run_twice_at_once_gives_one_key() {
    let sb = Sandbox::new();
    // The file is locked while a run reads and replaces it: a run waits for
    // whoever holds the lock, then reads what that one left.
    let path = sb.root().join("held.env");
    fs::write(&path, "REPOS_DIR=/srv/r\n").unwrap();
    let held = fs::File::open(&path).unwrap();
    // SAFETY: flock on a descriptor `held` owns.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) };
    assert_eq!(rc, 0);
    let mut child = sb
        .cmd()
        .args(["gen-secrets", "--write", path.to_str().unwrap(), "--force"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits for the lock: {:?}",
        fs::read_to_string(&path)
    );
    assert!(key_lines(&path).is_empty());
    drop(held);
    assert!(child.wait().unwrap().success());
    assert_eq!(key_lines(&path).len(), 1);

    for round in 0..6 {
        // No key line at all (appended), and the shipped empty line (filled).
        let path = sb.root().join(format!("race-{round}.env"));
        if round % 2 == 0 {
            fs::write(&path, "REPOS_DIR=/srv/r\n").unwrap();
        } else {
            fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example"),
                &path,
            )
            .unwrap();
        }
        let p = path.to_str().unwrap().to_owned();
        let children: Vec<_> = (0..6)
            .map(|_| {
                sb.cmd()
                    .args(["gen-secrets", "--write", &p, "--force"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        }
        let keys = key_lines(&path);
        assert_eq!(keys.len(), 1, "round {round}: {keys:?}");
        assert_ne!(keys[0], "HISTORY_HMAC_KEY=", "round {round}");
        // No temporary file left beside it.
        let left: Vec<_> = fs::read_dir(sb.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".~tmp."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
