//! The README's first command: a whole deploy in a sandbox, success and
//! failure, run by the reference hook against the stand-in docker.

use std::path::Path;
use std::process::Command;

fn demo_with_path(args: &[&str], path: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfdeploy"));
    cmd.arg("demo").args(args).env_remove("RUST_LOG");
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn demo(args: &[&str]) -> (i32, String) {
    let (code, stdout, _) = demo_with_path(args, None);
    (code, stdout)
}

/// The lines between `--- hook.log` and the next `---` heading.
fn hook_log(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|l| !l.starts_with("--- hook.log"))
        .skip(1)
        .take_while(|l| !l.starts_with("--- "))
        .collect()
}

/// The hook logged, each line with a timestamp (`2026-...Z deploy: `).
fn assert_hook_log(text: &str) {
    let log = hook_log(text);
    assert!(log.len() >= 5, "{text}");
    for line in log {
        let (stamp, rest) = line.split_once(' ').unwrap_or_default();
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{line:?}"
        );
        assert!(rest.starts_with("deploy: "), "{line:?}");
    }
}

#[test]
fn demo_deploys_successfully() {
    let (code, text) = demo(&[]);
    assert_eq!(code, 0, "{text}");
    for expected in [
        "request-approve  idle -> approve_requested  [transitioned]",
        "approved         approve_requested -> initiated  [transitioned]",
        "poll             initiated -> finalized_success  [transitioned]",
        "note: git push origin deploy/DEMO-1: done",
        "---\ndeploy_status: SUCCESS\nwork_item: DEMO-1\nhook_exit_code: 0\ndeployed_by: deploy-finalizer\nmerged_to_main: true\n---\n",
        "deploy: provenance: orchestrator:staging carries the expected revision ",
        "deploy: deployed: orchestrator is healthy on sha256:",
        "--- the hook's docker calls (the stand-in's record) ---\n\
         docker image inspect --format '{{ index .Config.Labels \"org.opencontainers.image.revision\" }}' -- orchestrator:staging\n\
         docker image inspect --format '{{.Id}}' -- orchestrator:staging\n\
         docker image inspect --format '{{.Id}}' -- orchestrator:prod\n\
         docker tag -- orchestrator:staging orchestrator:prod\n\
         docker compose --profile prod up -d --no-deps -- orchestrator\n---",
        "deploy-finalizer <deploy-finalizer@orchestrator.local>: deploy(ORCH-036): finalize SUCCESS for DEMO-1",
        "final state: finalized_success",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_hook_log(&text);
    // Production answers on the new image.
    let promoted = text
        .split("deploy: promoting orchestrator:staging (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.contains(&format!("/health -> 200 ok {promoted}\n")),
        "{text}"
    );
}

#[test]
fn demo_fail_ends_finalized_failed() {
    let (code, text) = demo(&["--fail"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("deploy_status: FAILED\nwork_item: DEMO-1\nhook_exit_code: 1\n"),
        "{text}"
    );
    let previous = text
        .split("deploy: previous image: orchestrator:prod is ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("{text}"));
    for expected in [
        format!("deploy: rollback: restoring orchestrator:prod to the previous image {previous}\n"),
        format!(
            "deploy: rolled back: orchestrator is healthy again on the previous image {previous}\n"
        ),
        format!("docker tag -- {previous} orchestrator:prod\n"),
        format!("/health -> 200 ok {previous}\n"),
        "final state: finalized_failed".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert_hook_log(&text);
}

/// Every program of this PATH but python's, linked into one directory.
fn path_without_python(dir: &Path) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for bin in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&bin) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = dir.join(&name);
            if name.to_string_lossy().starts_with("python") || link.exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), link);
        }
    }
    assert!(dir.join("git").exists() && dir.join("bash").exists());
}

#[test]
fn demo_without_python3_fails_in_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    path_without_python(dir.path());
    let (code, stdout, stderr) = demo_with_path(&[], Some(dir.path()));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("selfdeploy: error: the demo needs python3"),
        "{stderr}"
    );
}
