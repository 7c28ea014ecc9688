//! The README's first command: a whole deploy in a sandbox, success and failure.

use std::process::Command;

fn demo(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfdeploy"))
        .arg("demo")
        .args(args)
        .env("DEMO_HOOK_SECONDS", "0.2")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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
        "deploy: health check passed",
        "deploy-finalizer <deploy-finalizer@orchestrator.local>: deploy(ORCH-036): finalize SUCCESS for DEMO-1",
        "final state: finalized_success",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn demo_fail_ends_finalized_failed() {
    let (code, text) = demo(&["--fail"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("deploy_status: FAILED\nwork_item: DEMO-1\nhook_exit_code: 1\n"),
        "{text}"
    );
    assert!(
        text.contains("deploy: health check failed; rolling back"),
        "{text}"
    );
    assert!(text.contains("final state: finalized_failed"), "{text}");
}
