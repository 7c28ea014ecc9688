//! The worktree's own git configuration never runs a program as the engine
//! user (docs/operations/RUNBOOK.md, "What git runs"). Whoever can write the
//! worktree's `.git` plants a program there (in `.git/config`, in a file it
//! includes, as a hook in `.git/hooks`) that would create a marker file; a
//! real deploy through the binary then finalizes, and the marker never
//! appears, while the deploy log is committed and pushed as usual. What the
//! agent's HOME configures is kept (its hooks: `git_safety`, section 8; its
//! ssh command: below).

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::sandbox::*;

pub(crate) const ITEM: &str = "ORCH-7";

fn log_rel() -> String {
    format!("docs/work-items/{ITEM}/14-deploy-log.md")
}

/// A program that creates `marker` (and passes its input through, so that a
/// filter or a hook that runs would otherwise change nothing).
pub(crate) fn planted(sb: &Sandbox, name: &str, marker: &Path) -> PathBuf {
    write_script(
        &sb.root().join("planted"),
        name,
        &format!(
            "#!/bin/sh\necho \"$0 $*\" >> '{}'\ncat 2>/dev/null\nexit 0\n",
            marker.display()
        ),
    )
}

/// `git config <key> <value>` in the worktree's own `.git/config`.
fn plant_config(sb: &Sandbox, key: &str, value: &str) {
    git(&sb.worktree(), &["config", key, value]);
}

/// The worktree's git directory.
fn git_dir(sb: &Sandbox) -> PathBuf {
    sb.worktree().join(".git")
}

/// Approves, waits for the hook's result, polls to the end; returns the
/// final report. Nothing of the test runs git in the worktree meanwhile.
pub(crate) fn deploy(sb: &Sandbox) -> serde_json::Value {
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    sb.poll_until_final(ITEM, &[])
}

pub(crate) fn assert_never_ran(marker: &Path) {
    assert!(
        !marker.exists(),
        "a program of the worktree's git configuration ran: {}",
        fs::read_to_string(marker).unwrap_or_default()
    );
}

/// The deploy finalized, `finalized` says pushed, and the remote branch
/// holds the log exactly as written, in a commit of the finalizer.
fn assert_published(sb: &Sandbox, r: &serde_json::Value) {
    assert_eq!(
        (r["to"].as_str(), r["condition"].as_str()),
        (Some("finalized_success"), Some("result 0, pushed")),
        "{r}"
    );
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], true, "{f}");
    let on_remote = git(
        &sb.remote(),
        &["show", &format!("refs/heads/{BRANCH}:{}", log_rel())],
    );
    assert_eq!(
        on_remote.as_bytes(),
        fs::read(sb.deploy_log(ITEM)).unwrap().as_slice()
    );
    assert_eq!(sb.finalizer_commits().len(), 1);
}

#[test]
fn a_planted_fsmonitor_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let prog = planted(&sb, "fsmonitor", &marker);
    plant_config(&sb, "core.fsmonitor", path_str(&prog));
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

#[test]
fn a_planted_hooks_path_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let hooks = sb.root().join("planted-hooks");
    for hook in ["pre-commit", "commit-msg", "post-commit", "pre-push"] {
        write_script(
            &hooks,
            hook,
            &format!("#!/bin/sh\necho {hook} >> '{}'\n", marker.display()),
        );
    }
    plant_config(&sb, "core.hooksPath", path_str(&hooks));
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

/// No `core.hooksPath` anywhere: git's default, `.git/hooks`, is the
/// worktree's own and is not run either.
#[test]
fn a_hook_in_the_worktree_git_dir_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let hooks = git_dir(&sb).join("hooks");
    for hook in [
        "pre-commit",
        "prepare-commit-msg",
        "commit-msg",
        "post-commit",
        "pre-push",
        "reference-transaction",
        "post-index-change",
        "pre-auto-gc",
    ] {
        write_script(
            &hooks,
            hook,
            &format!("#!/bin/sh\necho {hook} >> '{}'\n", marker.display()),
        );
    }
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

#[test]
fn a_planted_gpg_program_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let prog = planted(&sb, "gpg", &marker);
    plant_config(&sb, "commit.gpgSign", "true");
    plant_config(&sb, "user.signingKey", "planted@example.test");
    plant_config(&sb, "gpg.program", path_str(&prog));
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

/// The ssh format's programs: the signer and the command that names the
/// default key.
#[test]
fn a_planted_ssh_signing_program_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let signer = planted(&sb, "ssh-keygen", &marker);
    let key_command = planted(&sb, "default-key", &marker);
    plant_config(&sb, "commit.gpgSign", "true");
    plant_config(&sb, "gpg.format", "ssh");
    plant_config(&sb, "gpg.ssh.program", path_str(&signer));
    plant_config(&sb, "gpg.ssh.defaultKeyCommand", path_str(&key_command));
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

/// A clean filter assigned to every path by `.git/info/attributes` (which
/// outranks any `.gitattributes`), and required.
#[test]
fn a_planted_clean_filter_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let prog = planted(&sb, "clean", &marker);
    write(&git_dir(&sb).join("info/attributes"), b"* filter=Planted\n");
    plant_config(&sb, "filter.Planted.clean", path_str(&prog));
    plant_config(&sb, "filter.Planted.smudge", path_str(&prog));
    plant_config(&sb, "filter.Planted.required", "true");
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

#[test]
fn a_planted_process_filter_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let prog = planted(&sb, "process", &marker);
    write(&git_dir(&sb).join("info/attributes"), b"*.md filter=lfs2\n");
    plant_config(&sb, "filter.lfs2.process", path_str(&prog));
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

/// The programs come from a file the worktree's config includes (and one
/// it includes conditionally, for this very git directory): the drivers it
/// names are found through the include too.
#[test]
fn programs_in_an_included_file_never_run() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let prog = planted(&sb, "included", &marker);
    let hooks = sb.root().join("included-hooks");
    write_script(
        &hooks,
        "pre-commit",
        &format!("#!/bin/sh\necho pre-commit >> '{}'\n", marker.display()),
    );
    let included = sb.root().join("included.gitconfig");
    write(
        &included,
        format!(
            "[filter \"inc\"]\n\tclean = {p}\n\trequired = true\n[core]\n\tfsmonitor = {p}\n",
            p = prog.display()
        )
        .as_bytes(),
    );
    let conditional = sb.root().join("conditional.gitconfig");
    write(
        &conditional,
        format!("[core]\n\thooksPath = {}\n", hooks.display()).as_bytes(),
    );
    write(&git_dir(&sb).join("info/attributes"), b"* filter=inc\n");
    plant_config(&sb, "include.path", path_str(&included));
    plant_config(
        &sb,
        &format!("includeIf.gitdir:{}/.path", path_str(&sb.worktree())),
        path_str(&conditional),
    );
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

/// A local remote runs `remote.<name>.receivepack`; the finalizer runs
/// git's own `git-receive-pack`.
#[test]
fn a_planted_receive_pack_never_runs() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    plant_config(
        &sb,
        "remote.origin.receivepack",
        &format!(
            "echo receivepack >> '{}'; git-receive-pack",
            marker.display()
        ),
    );
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

/// A remote on this machine (the worktree's config names it: here the
/// sandbox's own bare remote) runs its receive-pack here, as the engine's
/// user, with its own config: its hooks (pre-receive, update, post-receive,
/// post-update, reference-transaction), fsmonitor and auto gc never run.
#[test]
fn a_local_remote_s_own_hooks_never_run() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let hooks = sb.remote().join("hooks");
    for hook in [
        "pre-receive",
        "update",
        "post-receive",
        "post-update",
        "reference-transaction",
        "push-to-checkout",
    ] {
        let program = planted(&sb, hook, &marker);
        fs::copy(&program, hooks.join(hook)).unwrap();
    }
    let elsewhere = planted(&sb, "hooks-dir-program", &marker);
    let hooks_dir = sb.root().join("remote-hooks");
    fs::create_dir_all(&hooks_dir).unwrap();
    fs::copy(&elsewhere, hooks_dir.join("pre-receive")).unwrap();
    git(
        &sb.remote(),
        &["config", "core.hooksPath", path_str(&hooks_dir)],
    );
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
}

/// The worktree's ssh command loses to the one HOME configures, which is
/// kept: the push goes over "ssh" through HOME's command (a stand-in that
/// runs the remote command here).
#[test]
fn a_planted_ssh_command_never_runs_and_home_s_is_kept() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let used = sb.root().join("home-ssh-used");
    let home_ssh = write_script(
        &sb.root().join("home-bin"),
        "home-ssh",
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nfor last; do :; done\nexec sh -c \"$last\"\n",
            used.display()
        ),
    );
    write(
        &sb.home().join(".gitconfig"),
        format!(
            "[core]\n\tsshCommand = {}\n[ssh]\n\tvariant = simple\n",
            home_ssh.display()
        )
        .as_bytes(),
    );
    let prog = planted(&sb, "ssh", &marker);
    plant_config(&sb, "core.sshCommand", path_str(&prog));
    plant_config(
        &sb,
        "remote.origin.pushurl",
        &format!("ssh://deploy-remote.test{}", path_str(&sb.remote())),
    );
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_published(&sb, &r);
    let used = fs::read_to_string(&used).expect("HOME's ssh command carried the push");
    assert!(used.contains("git-receive-pack"), "{used}");
}

/// An `ext::` URL runs a command: never allowed, even when the worktree's
/// configuration allows it. The push fails, recorded as not pushed, and the
/// commit is there for a later poll once the URL is fixed.
#[test]
fn an_ext_remote_never_runs_and_is_recorded_as_not_pushed() {
    let sb = Sandbox::new();
    let marker = sb.root().join("ran");
    let prog = write_script(
        &sb.root().join("planted"),
        "ext",
        &format!(
            "#!/bin/sh\necho \"$0 $*\" >> '{}'\nexec git-receive-pack \"$1\"\n",
            marker.display()
        ),
    );
    plant_config(&sb, "protocol.ext.allow", "always");
    plant_config(
        &sb,
        "remote.origin.pushurl",
        &format!("ext::{} {}", path_str(&prog), path_str(&sb.remote())),
    );
    let r = deploy(&sb);
    assert_never_ran(&marker);
    assert_eq!(
        (r["to"].as_str(), r["condition"].as_str()),
        (Some("finalized_success"), Some("result 0, not pushed")),
        "{r}"
    );
    let f = sb.finalized_json(ITEM);
    let err = f["push_error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("git push failed") && err.contains("'ext' not allowed"),
        "{f}"
    );
    assert!(sb.finalizer_commits().is_empty());
}
