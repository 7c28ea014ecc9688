//! Findings of a hostile review of issue 18 ("the verdict tells the truth,
//! whatever the disk, the clock or the worktree do"): each test reproduces
//! one way around it with the real binary, `git` and `bash`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::sandbox::*;

const ITEM: &str = "ORCH-7";

/// A program that appends a line to `marker` and passes its input through.
fn planted(sb: &Sandbox, name: &str, marker: &Path) -> PathBuf {
    write_script(
        &sb.root().join("planted"),
        name,
        &format!(
            "#!/bin/sh\necho \"$0 $*\" >> '{}'\ncat 2>/dev/null\nexit 0\n",
            marker.display()
        ),
    )
}

fn deploy(sb: &Sandbox) -> serde_json::Value {
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    sb.poll_until_final(ITEM, &[])
}

fn assert_never_ran(marker: &Path) {
    assert!(
        !marker.exists(),
        "a program named by the worktree's git configuration ran: {}",
        fs::read_to_string(marker).unwrap_or_default()
    );
}

/// A local remote with alternates runs its `core.alternateRefsCommand`
/// when receive-pack advertises its refs.
#[test]
fn a_local_remote_s_alternate_refs_command_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let program = planted(&sb, "alternate-refs", &marker);
    let other = sb.root().join("other.git");
    git(sb.root(), &["init", "-q", "--bare", path_str(&other)]);
    fs::write(
        sb.remote().join("objects/info/alternates"),
        format!("{}\n", other.join("objects").display()),
    )
    .unwrap();
    git(
        &sb.remote(),
        &["config", "core.alternateRefsCommand", path_str(&program)],
    );
    let r = deploy(&sb);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_never_ran(&marker);
    assert_eq!(sb.finalized_json(ITEM)["pushed"], true);
}

/// A local non-bare remote with `receive.denyCurrentBranch=updateInstead`
/// checks the pushed commit out there: that remote's smudge filter runs.
/// The push to a checked-out branch is refused instead (recorded as not
/// pushed: the safe side).
#[test]
fn a_local_checked_out_remote_s_filter_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let program = planted(&sb, "smudge", &marker);
    let other = sb.root().join("checkout");
    git(
        sb.root(),
        &["clone", "-q", path_str(&sb.remote()), path_str(&other)],
    );
    git(&other, &["checkout", "-q", BRANCH]);
    git(
        &other,
        &["config", "receive.denyCurrentBranch", "updateInstead"],
    );
    git(&other, &["config", "filter.x.smudge", path_str(&program)]);
    fs::write(other.join(".git/info/attributes"), "* filter=x\n").unwrap();
    git(
        &sb.worktree(),
        &["config", "remote.origin.url", path_str(&other)],
    );
    let r = deploy(&sb);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_never_ran(&marker);
    assert_eq!(sb.finalized_json(ITEM)["pushed"], false);
}
