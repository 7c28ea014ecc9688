//! scripts/deploy-hook.sh, the reference hook, run with real bash against
//! scripts/stand-in-docker (first on PATH as `docker`) and a loopback port:
//! every exit code of its contract, the order of its docker calls, where
//! they run, and what it leaves in PREV_IMAGE_FILE.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::sandbox::{path_str, tool};

const HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/deploy-hook.sh");
const STAND_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stand-in-docker");
const REVISION: &str = "4f2a9c1e0b7d";
const REVISION_LABEL: &str = "org.opencontainers.image.revision";
const SOURCE: &str = "app:staging";
const TARGET: &str = "app:prod";
const SERVICE: &str = "app";
const STALE: &str = "sha256:stale-from-an-earlier-deploy";

/// One host: a stand-in docker with its state, the checkout the hook works
/// in, a free loopback port for the service.
struct Host {
    dir: tempfile::TempDir,
    bash: String,
    port: u16,
    /// Variables given to the hook on top of the contract's (None: unset).
    env: Vec<(String, Option<String>)>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// One recorded docker call.
#[derive(Debug)]
struct Call {
    cwd: String,
    argv: String,
    /// PREV_IMAGE_FILE's content when the call was made (`-`: absent).
    watch: String,
}

impl Host {
    fn new() -> Host {
        // Both are needed for real: a missing one fails the test.
        let bash = tool("bash");
        tool("python3");
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::os::unix::fs::symlink(STAND_IN, dir.path().join("bin/docker")).unwrap();
        let host = Host {
            dir,
            bash,
            port: free_port(),
            env: Vec::new(),
        };
        host.docker(&["service", SERVICE, TARGET]);
        host
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn repo(&self) -> PathBuf {
        self.root().join("repo")
    }
    fn state(&self) -> PathBuf {
        self.root().join("docker")
    }
    fn prev_file(&self) -> PathBuf {
        self.root().join("prev-image")
    }

    fn set(&mut self, name: &str, value: Option<&str>) {
        self.env.push((name.to_owned(), value.map(str::to_owned)));
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env(
                "PATH",
                crate::support::sandbox::path_with_first_dir(&self.root().join("bin")),
            )
            .env("STAND_IN_DOCKER_DIR", self.state())
            .env("STAND_IN_DOCKER_PORT", self.port.to_string())
            .env("STAND_IN_DOCKER_WATCH", self.prev_file());
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd
    }

    /// Runs the stand-in (a set-up command); returns its trimmed stdout.
    fn docker(&self, args: &[&str]) -> String {
        let out = self
            .command(&self.bash)
            .arg(STAND_IN)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "stand-in docker {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A new image tagged `reference` with these labels; returns its id.
    fn load(&self, reference: &str, labels: &[&str]) -> String {
        let mut args = vec!["load", reference];
        args.extend(labels);
        let id = self.docker(&args);
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        id
    }

    /// The previous production image (healthy) and the staging image
    /// carrying the expected revision, healthy or not.
    fn two_images(&self, new_healthy: bool) -> (String, String) {
        let old = self.load(TARGET, &["health=ok"]);
        let revision = format!("{REVISION_LABEL}={REVISION}");
        let health = if new_healthy {
            "health=ok"
        } else {
            "health=bad"
        };
        let new = self.load(SOURCE, &[health, &revision]);
        (old, new)
    }

    /// Runs `bash <hook> args` in `cwd` with the contract's environment.
    fn hook_in(&self, hook: &str, cwd: &Path, args: &[&str]) -> Run {
        let mut cmd = self.command(&self.bash);
        cmd.arg(hook).args(args).current_dir(cwd);
        let port = self.port.to_string();
        let repo = self.repo();
        let prev = self.prev_file();
        for (name, value) in [
            ("REPO", path_str(&repo)),
            ("SOURCE_IMAGE", SOURCE),
            ("TARGET_SERVICE", SERVICE),
            ("TARGET_PORT", &port),
            ("TARGET_IMAGE", TARGET),
            ("COMPOSE_PROFILE", "prod"),
            ("PREV_IMAGE_FILE", path_str(&prev)),
            ("EXPECTED_REVISION", REVISION),
            ("DEPLOY_HEALTH_TIMEOUT_SECS", "2"),
            ("DEPLOY_HEALTH_INTERVAL_SECS", "0.1"),
        ] {
            cmd.env(name, value);
        }
        for (name, value) in &self.env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        let started = Instant::now();
        let out = cmd.output().unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        };
        eprintln!(
            "hook exit {} in {:?}\n{}{}",
            run.code, run.took, run.stdout, run.stderr
        );
        run
    }

    /// The hook as the host wrapper runs it: in $REPO, with --deploy.
    fn deploy(&self) -> Run {
        self.hook_in(HOOK, &self.repo(), &["--deploy"])
    }

    fn calls(&self) -> Vec<Call> {
        let text = fs::read_to_string(self.state().join("calls")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let cwd = fields.next().unwrap().to_owned();
                let argv = fields.next().expect("an argv field").to_owned();
                let watch = fields.next().expect("a watch field");
                let watch = watch.strip_prefix("watch=").expect("watch=").to_owned();
                assert_eq!(fields.next(), None, "{line}");
                Call { cwd, argv, watch }
            })
            .collect()
    }

    fn argvs(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.argv).collect()
    }

    /// The id a tag names in the stand-in's store.
    fn tagged(&self, reference: &str) -> Option<String> {
        fs::read_to_string(self.state().join("tags").join(reference))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn prev_content(&self) -> Option<String> {
        fs::read_to_string(self.prev_file()).ok()
    }

    /// GET /health on the service's port, as an outsider sees production.
    fn health(&self) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("production listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {answer:?}"));
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_owned();
        (status, body)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The server also stops by itself once its directory is gone.
        let _ = self.command(&self.bash).arg(STAND_IN).arg("stop").output();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn inspect_revision(reference: &str) -> String {
    format!(
        "docker image inspect --format '{{{{ index .Config.Labels \"{REVISION_LABEL}\" }}}}' -- {reference}"
    )
}
fn inspect_id(reference: &str) -> String {
    format!("docker image inspect --format '{{{{.Id}}}}' -- {reference}")
}
fn tag(from: &str, to: &str) -> String {
    format!("docker tag -- {from} {to}")
}
const COMPOSE_UP: &str = "docker compose --profile prod up -d --no-deps -- app";

/// Every line of the hook's log starts with a UTC timestamp
/// (`date -u +%Y-%m-%dT%H:%M:%SZ`) and a space.
fn assert_timestamped(log: &str) {
    assert!(!log.trim().is_empty(), "the hook logged nothing");
    for line in log.lines() {
        let b = line.as_bytes();
        let shape = "dddd-dd-ddTdd:dd:ddZ ";
        let ok = b.len() > shape.len()
            && shape.bytes().zip(b).all(|(want, got)| match want {
                b'd' => got.is_ascii_digit(),
                other => other == *got,
            });
        assert!(ok, "a log line without a timestamp: {line:?}\nin:\n{log}");
    }
}

#[test]
fn a_good_deploy_records_the_previous_image_before_promoting_and_exits_0() {
    let host = Host::new();
    let (old, new) = host.two_images(true);
    fs::write(host.prev_file(), format!("{STALE}\n")).unwrap();

    let run = host.deploy();
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_timestamped(&run.stdout);
    assert!(
        run.stdout.contains("deployed: app is healthy"),
        "{}",
        run.stdout
    );

    let calls = host.calls();
    let argvs: Vec<&str> = calls.iter().map(|c| c.argv.as_str()).collect();
    assert_eq!(
        argvs,
        [
            inspect_revision(SOURCE).as_str(),
            &inspect_id(SOURCE),
            &inspect_id(TARGET),
            &tag(SOURCE, TARGET),
            COMPOSE_UP,
        ]
    );
    // PREV_IMAGE_FILE changed after the previous image was read and before
    // the tag: the calls saw the stale content, then the old id.
    let watched: Vec<&str> = calls.iter().map(|c| c.watch.as_str()).collect();
    assert_eq!(watched, [STALE, STALE, STALE, &old, &old]);
    assert_eq!(
        host.prev_content().as_deref(),
        Some(format!("{old}\n").as_str())
    );
    let leftovers: Vec<_> = fs::read_dir(host.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("prev-image."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    assert_eq!(host.tagged(TARGET), Some(new.clone()));
    assert_eq!(host.health(), (200, format!("ok {new}")));
    assert!(
        calls.iter().all(|c| c.cwd == path_str(&host.repo())),
        "{calls:?}"
    );
}

#[test]
fn an_unhealthy_image_is_rolled_back_and_exits_1() {
    let host = Host::new();
    let (old, _new) = host.two_images(false);

    let run = host.deploy();
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_timestamped(&run.stdout);
    assert_eq!(
        host.argvs(),
        [
            inspect_revision(SOURCE),
            inspect_id(SOURCE),
            inspect_id(TARGET),
            tag(SOURCE, TARGET),
            COMPOSE_UP.to_owned(),
            tag(&old, TARGET),
            COMPOSE_UP.to_owned(),
        ]
    );
    assert_eq!(host.tagged(TARGET), Some(old.clone()), "the tag is back");
    assert_eq!(
        host.health(),
        (200, format!("ok {old}")),
        "healthy on the old image"
    );
    assert_eq!(
        host.prev_content().as_deref(),
        Some(format!("{old}\n").as_str())
    );
    for said in [
        "health: http://127.0.0.1:",
        ": 503",
        &format!("rollback: restoring app:prod to the previous image {old}"),
        "rolled back: app is healthy again on the previous image",
    ] {
        assert!(run.stdout.contains(said), "missing {said:?}");
    }
}

#[test]
fn a_rollback_whose_restart_fails_exits_2() {
    let host = Host::new();
    let old = host.load(TARGET, &["health=ok", "compose=fail"]);
    host.load(
        SOURCE,
        &["health=bad", &format!("{REVISION_LABEL}={REVISION}")],
    );

    let run = host.deploy();
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_timestamped(&run.stdout);
    assert_eq!(host.argvs().last().map(String::as_str), Some(COMPOSE_UP));
    assert!(host.argvs().contains(&tag(&old, TARGET)));
    assert!(
        run.stdout
            .contains(&format!("rollback failed: app did not start on {old}")),
        "{}",
        run.stdout
    );
}

#[test]
fn a_rollback_to_an_unhealthy_image_exits_2() {
    let host = Host::new();
    let old = host.load(TARGET, &["health=bad"]);
    host.load(
        SOURCE,
        &["health=bad", &format!("{REVISION_LABEL}={REVISION}")],
    );

    let run = host.deploy();
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_timestamped(&run.stdout);
    assert_eq!(host.tagged(TARGET), Some(old.clone()));
    assert_eq!(host.health().0, 503);
    assert!(
        run.stdout
            .contains("rollback failed: app is not healthy on"),
        "{}",
        run.stdout
    );
}

#[test]
fn without_a_previous_image_there_is_nothing_to_roll_back_to_and_it_exits_2() {
    let host = Host::new();
    let new = host.load(
        SOURCE,
        &["health=bad", &format!("{REVISION_LABEL}={REVISION}")],
    );
    fs::write(host.prev_file(), format!("{STALE}\n")).unwrap();

    let run = host.deploy();
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_timestamped(&run.stdout);
    assert!(
        run.stdout
            .contains("there is no previous image to roll back to"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("to none"), "{}", run.stdout);
    assert_eq!(
        host.argvs(),
        [
            inspect_revision(SOURCE),
            inspect_id(SOURCE),
            inspect_id(TARGET),
            tag(SOURCE, TARGET),
            COMPOSE_UP.to_owned(),
        ],
        "no rollback was attempted"
    );
    assert_eq!(
        host.prev_content(),
        None,
        "the stale previous image was removed"
    );
    assert_eq!(host.tagged(TARGET), Some(new));
}

#[test]
fn a_first_deploy_that_is_healthy_exits_0() {
    let host = Host::new();
    let new = host.load(
        SOURCE,
        &["health=ok", &format!("{REVISION_LABEL}={REVISION}")],
    );
    let run = host.deploy();
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_timestamped(&run.stdout);
    assert!(
        run.stdout.contains("previous image: none"),
        "{}",
        run.stdout
    );
    assert_eq!(host.tagged(TARGET), Some(new));
    assert_eq!(host.prev_content(), None);
}

#[test]
fn a_stale_revision_exits_1_before_touching_anything() {
    for labels in [
        vec![
            "health=ok",
            "org.opencontainers.image.revision=0000000stale",
        ],
        vec!["health=ok"],
    ] {
        let host = Host::new();
        let old = host.load(TARGET, &["health=ok"]);
        host.load(SOURCE, &labels);
        fs::write(host.prev_file(), format!("{STALE}\n")).unwrap();

        let run = host.deploy();
        assert_eq!(run.code, 1, "{labels:?}: {}", run.stdout);
        assert_timestamped(&run.stdout);
        assert!(
            run.stdout
                .contains("refusing to deploy; nothing was touched")
        );
        assert_eq!(host.argvs(), [inspect_revision(SOURCE)], "{labels:?}");
        assert_eq!(
            host.prev_content().as_deref(),
            Some(format!("{STALE}\n").as_str()),
            "PREV_IMAGE_FILE untouched"
        );
        assert_eq!(host.tagged(TARGET), Some(old));
        assert!(!host.state().join("server.pid").exists(), "nothing started");
    }
}

#[test]
fn without_deploy_it_prints_usage_and_exits_64_touching_nothing() {
    let host = Host::new();
    host.two_images(true);
    for args in [&[][..], &["--help"], &["deploy"], &["--deploy", "now"]] {
        let run = host.hook_in(HOOK, &host.repo(), args);
        assert_eq!(run.code, 64, "{args:?}");
        assert!(
            run.stderr.starts_with("usage: "),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(host.argvs(), Vec::<String>::new(), "{args:?}");
        assert_eq!(host.prev_content(), None);
    }
}

#[test]
fn a_missing_or_bad_variable_exits_64_touching_nothing() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("SOURCE_IMAGE", None, "SOURCE_IMAGE is not set"),
        ("TARGET_SERVICE", None, "TARGET_SERVICE is not set"),
        ("TARGET_PORT", None, "TARGET_PORT is not set"),
        ("TARGET_IMAGE", Some(""), "TARGET_IMAGE is not set"),
        ("PREV_IMAGE_FILE", None, "PREV_IMAGE_FILE is not set"),
        (
            "TARGET_PORT",
            Some("85OO"),
            "TARGET_PORT must be a port number",
        ),
        (
            "TARGET_PORT",
            Some("70000"),
            "TARGET_PORT must be a port number",
        ),
        (
            "DEPLOY_HEALTH_TIMEOUT_SECS",
            Some("soon"),
            "DEPLOY_HEALTH_TIMEOUT_SECS must be",
        ),
        (
            "DEPLOY_HEALTH_PATH",
            Some("health"),
            "DEPLOY_HEALTH_PATH must start with /",
        ),
        (
            "REPO",
            Some("/nonexistent/selfdeploy-repo"),
            "REPO is not a directory",
        ),
        (
            "TARGET_SERVICE",
            Some("--build"),
            "TARGET_SERVICE must name",
        ),
        ("SOURCE_IMAGE", Some("-q"), "SOURCE_IMAGE must name"),
        ("TARGET_IMAGE", Some("--rm"), "TARGET_IMAGE must name"),
        (
            "COMPOSE_PROFILE",
            Some("--all"),
            "COMPOSE_PROFILE must name",
        ),
    ];
    for (name, value, said) in cases {
        let mut host = Host::new();
        host.two_images(true);
        host.set(name, *value);
        let run = host.deploy();
        assert_eq!(run.code, 64, "{name}={value:?}: {}", run.stdout);
        assert_timestamped(&run.stdout);
        assert!(run.stdout.contains(said), "{name}: {}", run.stdout);
        assert!(run.stdout.contains("nothing was touched"), "{}", run.stdout);
        assert_eq!(host.argvs(), Vec::<String>::new(), "{name}");
        assert_eq!(host.prev_content(), None, "{name}");
    }
}

/// No setting becomes an option: a value that begins with `-` is refused
/// by the hook itself (exit 64, one line naming the variable), before any
/// docker call and before PREV_IMAGE_FILE is written, whatever the engine's
/// own checks let through.
#[test]
fn a_setting_that_begins_with_a_dash_exits_64_before_touching_anything() {
    for name in [
        "SOURCE_IMAGE",
        "TARGET_SERVICE",
        "TARGET_IMAGE",
        "COMPOSE_PROFILE",
        "PREV_IMAGE_FILE",
    ] {
        for value in ["-", "-q", "--build", "--rm=true"] {
            let mut host = Host::new();
            host.two_images(true);
            host.set(name, Some(value));
            let run = host.deploy();
            assert_eq!(run.code, 64, "{name}={value:?}: {}", run.stdout);
            assert_timestamped(&run.stdout);
            let lines: Vec<&str> = run.stdout.lines().collect();
            assert_eq!(lines.len(), 1, "{name}={value:?}: {}", run.stdout);
            assert!(
                lines[0].contains(&format!("{name} must name"))
                    && lines[0].contains("begins with '-'")
                    && lines[0].contains(&format!("('{value}')"))
                    && lines[0].ends_with("nothing was touched"),
                "{name}={value:?}: {}",
                lines[0]
            );
            assert_eq!(host.argvs(), Vec::<String>::new(), "{name}={value:?}");
            assert_eq!(host.prev_content(), None, "{name}={value:?}");
            let left: Vec<_> = fs::read_dir(host.repo())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{name}={value:?}: the hook wrote {left:?}");
        }
    }
}

/// Every reference and the service follow `--` in the hook's docker and
/// compose calls, and the stand-in takes exactly those argvs: the forms
/// without `--` are not what the hook calls, and it refuses them.
#[test]
fn references_and_the_service_follow_a_double_dash_in_every_docker_call() {
    let host = Host::new();
    let (old, _new) = host.two_images(false);
    host.docker(&["service", SERVICE, TARGET]);
    let run = host.deploy();
    assert_eq!(run.code, 1, "rolled back: {}", run.stdout);
    let argvs = host.argvs();
    assert!(!argvs.is_empty());
    for argv in &argvs {
        let words: Vec<&str> = argv.split(' ').collect();
        let dash = words.iter().position(|w| *w == "--");
        assert!(dash.is_some(), "no -- in {argv}");
        let last = words.last().unwrap();
        assert!(
            [SOURCE, TARGET, SERVICE, old.as_str()].contains(last),
            "{argv}"
        );
    }
    for old_form in [
        &["tag", SOURCE, TARGET][..],
        &["image", "inspect", "--format", "{{.Id}}", SOURCE],
        &["compose", "up", "-d", "--no-deps", SERVICE],
    ] {
        let out = host
            .command(&host.bash)
            .arg(STAND_IN)
            .args(old_form)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{old_form:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not implemented"),
            "{old_form:?}: {out:?}"
        );
    }
}

#[test]
fn an_empty_or_unset_compose_profile_gives_no_profile_option() {
    for value in [Some(""), None] {
        let mut host = Host::new();
        host.two_images(true);
        host.set("COMPOSE_PROFILE", value);
        let run = host.deploy();
        assert_eq!(run.code, 0, "{}", run.stdout);
        assert_eq!(
            host.argvs().last().map(String::as_str),
            Some("docker compose up -d --no-deps -- app"),
            "{value:?}"
        );
    }
}

#[test]
fn docker_runs_in_repo_given_or_the_hooks_own_checkout() {
    // REPO given: the hook works there, wherever it was started.
    let mut host = Host::new();
    host.two_images(true);
    let elsewhere = host.root().join("checkout with space");
    fs::create_dir_all(&elsewhere).unwrap();
    host.set("REPO", Some(path_str(&elsewhere)));
    let run = host.hook_in(HOOK, host.root(), &["--deploy"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let calls = host.calls();
    assert!(calls.iter().any(|c| c.argv == COMPOSE_UP), "{calls:?}");
    let quoted = format!("'{}'", path_str(&elsewhere));
    assert!(calls.iter().all(|c| c.cwd == quoted), "{calls:?}");

    // REPO unset: the checkout the hook lives in (the parent of scripts/).
    let mut host = Host::new();
    host.two_images(true);
    let app = host.root().join("app");
    fs::create_dir_all(app.join("scripts")).unwrap();
    fs::copy(HOOK, app.join("scripts/deploy-hook.sh")).unwrap();
    host.set("REPO", None);
    let hook = app.join("scripts/deploy-hook.sh");
    let run = host.hook_in(path_str(&hook), host.root(), &["--deploy"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let calls = host.calls();
    assert!(calls.iter().any(|c| c.argv == COMPOSE_UP), "{calls:?}");
    assert!(calls.iter().all(|c| c.cwd == path_str(&app)), "{calls:?}");
}

#[test]
fn a_server_that_never_answers_cannot_stall_the_health_check_past_its_budget() {
    let mut host = Host::new();
    host.two_images(true);
    // Production's port accepts connections (the kernel's backlog) and
    // never answers; the stand-in's service listens elsewhere, unseen.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    host.set("TARGET_PORT", Some(&port));
    host.set("DEPLOY_HEALTH_ATTEMPT_SECS", Some("30"));
    let run = host.deploy();
    // Two health checks of 2 s each (the new image, then the rollback).
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.took < Duration::from_secs(9), "took {:?}", run.took);
    assert!(run.stdout.contains(": no answer within"), "{}", run.stdout);
    assert_timestamped(&run.stdout);
    drop(silent);
}

#[test]
fn a_hook_rewritten_while_it_runs_finishes_as_it_began() {
    // The host's checkout may be updated (a pull) during a deploy: bash reads
    // a script as it runs it, so the hook must have read all of itself first.
    let mut host = Host::new();
    let (old, _) = host.two_images(false);
    let app = host.root().join("app");
    fs::create_dir_all(app.join("scripts")).unwrap();
    let hook = app.join("scripts/deploy-hook.sh");
    fs::copy(HOOK, &hook).unwrap();
    host.set("REPO", None);
    let rewriter = {
        let hook = hook.clone();
        let calls = host.state().join("calls");
        std::thread::spawn(move || {
            // Once the new image is up and failing its health check.
            let restarted =
                || fs::read_to_string(&calls).is_ok_and(|c| c.contains("docker compose"));
            assert!(crate::support::sandbox::wait_for(
                Duration::from_secs(10),
                restarted
            ));
            let mut garbage = "echo rewritten; exit 99\n".repeat(2000);
            garbage.insert_str(0, "#!/usr/bin/env bash\n");
            fs::write(&hook, garbage).unwrap();
        })
    };
    let run = host.hook_in(path_str(&hook), host.root(), &["--deploy"]);
    rewriter.join().unwrap();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("rewritten"), "{}", run.stdout);
    assert_eq!(host.tagged(TARGET), Some(old));
}

/// A real docker prints warnings on stderr (deprecations, plugins): ids and
/// labels are read from stdout alone, so a warning never turns the expected
/// revision into a "stale" image, nor an id into "no single id". The
/// warnings are in the hook's log.
#[test]
fn warnings_on_docker_s_stderr_are_logged_never_read_as_ids_or_labels() {
    let mut host = Host::new();
    let (_old, new) = host.two_images(true);
    host.set(
        "STAND_IN_DOCKER_WARN",
        Some("the legacy builder is deprecated"),
    );
    let run = host.deploy();
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("provenance: app:staging carries the expected revision"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("said on stderr:")
            && run
                .stdout
                .contains("WARNING: the legacy builder is deprecated"),
        "{}",
        run.stdout
    );
    assert_eq!(host.tagged(TARGET), Some(new));
}

/// A host with the standalone docker-compose and no compose plugin: the
/// hook finds it and runs it with the same arguments.
#[test]
fn without_the_compose_plugin_the_standalone_docker_compose_is_used() {
    let mut host = Host::new();
    let (_old, new) = host.two_images(true);
    host.set("STAND_IN_DOCKER_NO_COMPOSE", Some("1"));
    let standalone = host.root().join("bin/docker-compose");
    fs::write(
        &standalone,
        format!(
            "#!/bin/sh\nSTAND_IN_DOCKER_NO_COMPOSE= exec '{}' '{STAND_IN}' compose \"$@\"\n",
            host.bash
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&standalone, fs::Permissions::from_mode(0o755)).unwrap();
    let run = host.deploy();
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("run: docker-compose "),
        "{}",
        run.stdout
    );
    assert_eq!(host.argvs().last().map(String::as_str), Some(COMPOSE_UP));
    assert_eq!(host.health(), (200, format!("ok {new}")));
}
