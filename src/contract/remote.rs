//! The remote command the host runs for a dispatch: the claim, then the
//! original's command byte for byte with its result renamed. Pure: no I/O.
//!
//! The host wrapper and the original implementation read these exact bytes,
//! so the quoting is Python's `shlex.quote`, written out here: the `shlex`
//! crate quotes more characters and uses a different form for `'`.

use std::path::Path;

use crate::config::Settings;
use crate::contract::markers::TicketFile;
use crate::contract::names::{RepoName, WorkItem};

/// File the original engine's wrapper writes the hook's exit code into; ours
/// writes `result-<id>` (see [`crate::contract::markers::TicketFile`]).
pub const LEGACY_RESULT_FILE: &str = "result";
/// Exit status of the host wrapper when its ticket was gone (revoked, or
/// claimed by another): the hook did not run.
pub const CLAIM_LOST_EXIT: u8 = 75;
/// File the host wrapper appends the hook's output to.
pub const HOOK_LOG_FILE: &str = "hook.log";
/// The host wrapper writes the hook's exit code into `result-<id>` and this
/// suffix, then renames it to `result-<id>`: a result is never read half
/// written, and a write that failed (a full disk) leaves this file behind,
/// empty or torn, with no `result-<id>`. No reader takes it for a result.
pub const PARTIAL_RESULT_SUFFIX: &str = ".part";

/// Python's `shlex.quote`: unchanged when non-empty and made only of
/// `[A-Za-z0-9_@%+=:,./-]`, else single-quoted with each `'` as `'"'"'`.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

/// The name of a repo's directory of state directories is this prefix and
/// the repo's identity.
pub const STATE_DIR_PREFIX: &str = ".deploy-state-";

/// The state directory of a work item under a base directory, joined as path
/// components (a trailing `/` on the base is not doubled).
pub fn state_dir_under(base: &Path, repo: &RepoName, work_item: &WorkItem) -> std::path::PathBuf {
    base.join(format!("{STATE_DIR_PREFIX}{repo}"))
        .join(work_item.as_str())
}

/// The shell command the host runs, detached, for dispatch `dispatch_id`:
/// first claim the ticket (the rename is the only arbiter: a revoked or
/// missing ticket stops the wrapper before the hook), then the original's
/// command with its result renamed `result-<id>`, written atomically: the
/// exit code goes to `result-<id>.part`, which is then renamed into place.
/// What runs before the hook and the hook's own command and environment are
/// the original's byte for byte; only the write of its exit code differs.
pub fn remote_command(
    settings: &Settings,
    repo: &RepoName,
    work_item: &WorkItem,
    dispatch_id: &str,
    expected_revision: Option<&str>,
) -> String {
    let host_dir = state_dir_under(Path::new(&settings.host_repos_dir), repo, work_item);
    let host_file = |name: String| host_dir.join(name).to_string_lossy().into_owned();
    let q = shell_quote;
    let mut inner = format!(
        "mv {ticket} {claimed} || exit {CLAIM_LOST_EXIT}; ",
        ticket = q(&host_file(TicketFile::Dispatch.name(dispatch_id))),
        claimed = q(&host_file(TicketFile::Claimed.name(dispatch_id))),
    );
    inner.push_str(&format!(
        "cd {repo_path} && REPO={repo_path} SOURCE_IMAGE={source} TARGET_SERVICE={service} \
         TARGET_PORT={port} TARGET_IMAGE={image} COMPOSE_PROFILE={profile} PREV_IMAGE_FILE={prev}",
        repo_path = q(&settings.host_repo_path),
        source = q(&settings.source_image),
        service = q(&settings.target_service),
        port = settings.target_port,
        image = q(&settings.target_image),
        profile = q(&settings.compose_profile),
        prev = q(&settings.prev_image_file),
    ));
    if let Some(sha) = expected_revision {
        inner.push_str(" EXPECTED_REVISION=");
        inner.push_str(&q(sha));
    }
    let result = host_file(TicketFile::Result.name(dispatch_id));
    let part = format!("{result}{PARTIAL_RESULT_SUFFIX}");
    inner.push_str(&format!(
        " bash {hook} --deploy; echo $? > {part} && mv {part} {result}",
        hook = q(&settings.hook_script),
        part = q(&part),
        result = q(&result),
    ));
    format!(
        "setsid bash -c {} >> {} 2>&1 </dev/null &",
        q(&inner),
        q(&host_file(HOOK_LOG_FILE.to_owned()))
    )
}

/// The argv that launches `remote` over the configured transport.
pub fn dispatch_argv(settings: &Settings, remote: String) -> Vec<String> {
    settings.transport.argv(settings, remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoting_matches_python_shlex_quote() {
        let cases = [
            ("", "''"),
            ("abc", "abc"),
            ("a-b_c.d/e:f,g=h+i%j@k", "a-b_c.d/e:f,g=h+i%j@k"),
            ("a b", "'a b'"),
            ("it's", "'it'\"'\"'s'"),
            ("'", "''\"'\"''"),
            ("say \"hi\"", "'say \"hi\"'"),
            ("$HOME", "'$HOME'"),
            ("`id`", "'`id`'"),
            ("a;b", "'a;b'"),
            ("ünï", "'ünï'"),
            ("~", "'~'"),
            ("a\nb", "'a\nb'"),
        ];
        for (input, expected) in cases {
            assert_eq!(shell_quote(input), expected, "input {input:?}");
        }
    }

    /// The ssh user and host of these tests: placeholders, not a real host
    /// (the literal guard flags a `user@host` literal, so the target the
    /// argv must show is built from the two values the settings are given).
    const SSH_USER: &str = "deploy";
    const SSH_HOST: &str = "prodhost";

    fn settings(overrides: &[(&str, &str)]) -> Settings {
        let mut all = vec![
            ("HOST_REPOS_DIR", "/host/repos/"),
            ("DEPLOY_HOST_REPO_PATH", "/host/app"),
            ("DEPLOY_HOOK_SCRIPT", "scripts/deploy-hook.sh"),
            ("DEPLOY_SSH_USER", SSH_USER),
            ("DEPLOY_SSH_HOST", SSH_HOST),
            ("DEPLOY_PROD_SOURCE_IMAGE", "orch:staging"),
            ("DEPLOY_PROD_TARGET_SERVICE", "orch"),
            ("DEPLOY_PROD_TARGET_PORT", "9500"),
            ("DEPLOY_PROD_TARGET_IMAGE", "orch:prod"),
            ("DEPLOY_PROD_COMPOSE_PROFILE", "prod"),
            ("DEPLOY_PROD_PREV_IMAGE_FILE", "/host/prev"),
        ];
        all.extend_from_slice(overrides);
        Settings::with_overrides(&all).unwrap()
    }

    const ID: &str = "0123456789abcdef";

    fn argv(overrides: &[(&str, &str)], sha: Option<&str>) -> Vec<String> {
        let s = settings(overrides);
        let repo = RepoName::new("orchestrator").unwrap();
        let wi = WorkItem::new("ORCH-36").unwrap();
        dispatch_argv(&s, remote_command(&s, &repo, &wi, ID, sha))
    }

    // Expected strings below were written out by hand from the command's
    // definition: claim, cd, the environment, the hook, the result.
    #[test]
    fn plain_values_with_revision() {
        let target = format!("{SSH_USER}@{SSH_HOST}");
        assert_eq!(
            argv(&[], Some("0123abc")),
            vec![
                "ssh",
                "-o",
                "StrictHostKeyChecking=no",
                target.as_str(),
                "setsid bash -c 'mv /host/repos/.deploy-state-orchestrator/ORCH-36/dispatch-0123456789abcdef \
                 /host/repos/.deploy-state-orchestrator/ORCH-36/claimed-0123456789abcdef || exit 75; \
                 cd /host/app && REPO=/host/app SOURCE_IMAGE=orch:staging \
                 TARGET_SERVICE=orch TARGET_PORT=9500 TARGET_IMAGE=orch:prod COMPOSE_PROFILE=prod \
                 PREV_IMAGE_FILE=/host/prev EXPECTED_REVISION=0123abc bash scripts/deploy-hook.sh \
                 --deploy; echo $? > /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef.part \
                 && mv /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef.part \
                 /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef' \
                 >> /host/repos/.deploy-state-orchestrator/ORCH-36/hook.log 2>&1 </dev/null &"
            ]
        );
    }

    #[test]
    fn no_revision_empty_user_empty_profile() {
        let got = argv(
            &[("DEPLOY_SSH_USER", ""), ("DEPLOY_PROD_COMPOSE_PROFILE", "")],
            None,
        );
        assert_eq!(got[3], SSH_HOST);
        assert_eq!(
            got[4],
            "setsid bash -c 'mv /host/repos/.deploy-state-orchestrator/ORCH-36/dispatch-0123456789abcdef \
             /host/repos/.deploy-state-orchestrator/ORCH-36/claimed-0123456789abcdef || exit 75; \
             cd /host/app && REPO=/host/app SOURCE_IMAGE=orch:staging \
             TARGET_SERVICE=orch TARGET_PORT=9500 TARGET_IMAGE=orch:prod COMPOSE_PROFILE='\"'\"''\"'\"' \
             PREV_IMAGE_FILE=/host/prev bash scripts/deploy-hook.sh --deploy; echo $? > \
             /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef.part && mv \
             /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef.part \
             /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef' >> \
             /host/repos/.deploy-state-orchestrator/ORCH-36/hook.log 2>&1 </dev/null &"
        );
    }

    #[test]
    fn hostile_values_are_quoted_twice() {
        let got = argv(
            &[
                ("DEPLOY_HOST_REPO_PATH", "/data/my app"),
                ("DEPLOY_PROD_SOURCE_IMAGE", "it's"),
                ("DEPLOY_PROD_TARGET_SERVICE", "a\"b"),
                ("DEPLOY_PROD_TARGET_IMAGE", "$(reboot)"),
                ("DEPLOY_PROD_PREV_IMAGE_FILE", "`x`;y"),
                ("DEPLOY_HOOK_SCRIPT", "hooks/déploy.sh"),
            ],
            Some("a b"),
        );
        assert_eq!(
            got[4],
            "setsid bash -c 'mv /host/repos/.deploy-state-orchestrator/ORCH-36/dispatch-0123456789abcdef \
             /host/repos/.deploy-state-orchestrator/ORCH-36/claimed-0123456789abcdef || exit 75; \
             cd '\"'\"'/data/my app'\"'\"' && REPO='\"'\"'/data/my app'\"'\"' \
             SOURCE_IMAGE='\"'\"'it'\"'\"'\"'\"'\"'\"'\"'\"'s'\"'\"' TARGET_SERVICE='\"'\"'a\"b'\"'\"' \
             TARGET_PORT=9500 TARGET_IMAGE='\"'\"'$(reboot)'\"'\"' COMPOSE_PROFILE=prod \
             PREV_IMAGE_FILE='\"'\"'`x`;y'\"'\"' EXPECTED_REVISION='\"'\"'a b'\"'\"' \
             bash '\"'\"'hooks/déploy.sh'\"'\"' --deploy; echo $? > \
             /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef.part && mv \
             /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef.part \
             /host/repos/.deploy-state-orchestrator/ORCH-36/result-0123456789abcdef' >> \
             /host/repos/.deploy-state-orchestrator/ORCH-36/hook.log 2>&1 </dev/null &"
        );
    }

    #[test]
    fn local_transport_runs_the_same_command_with_bash() {
        let got = argv(&[("SELF_DEPLOY_TRANSPORT", "local")], None);
        assert_eq!(got[..2], ["bash", "-c"]);
        assert_eq!(got[2], argv(&[], None)[4]);
    }

    /// `doctor`'s reachability probe bounds the connect and never prompts;
    /// the dispatch argv keeps exactly the contract's options.
    #[test]
    fn the_probe_argv_is_doctor_s_alone() {
        use std::time::Duration;
        let target = format!("{SSH_USER}@{SSH_HOST}");
        let s = settings(&[]);
        assert_eq!(
            s.transport.probe_argv(&s, Duration::from_secs(5)),
            [
                "ssh",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                target.as_str(),
                "true"
            ]
        );
        // Whole seconds, rounded up, at least one.
        let probe = |d| s.transport.probe_argv(&s, d)[6].clone();
        assert_eq!(probe(Duration::from_millis(1500)), "ConnectTimeout=2");
        assert_eq!(probe(Duration::ZERO), "ConnectTimeout=1");
        assert_eq!(
            argv(&[], None)[..4],
            ["ssh", "-o", "StrictHostKeyChecking=no", &target]
        );
        assert_eq!(argv(&[], None).len(), 5);

        let local = settings(&[("SELF_DEPLOY_TRANSPORT", "local")]);
        assert_eq!(
            local.transport.probe_argv(&local, Duration::from_secs(5)),
            ["bash", "-c", "true"]
        );
        assert_eq!(s.transport.target(&s), target);
        assert_eq!(local.transport.target(&local), "this machine");
    }

    #[test]
    fn trailing_slash_is_not_doubled() {
        let repo = RepoName::new("r").unwrap();
        let wi = WorkItem::new("w").unwrap();
        assert_eq!(
            state_dir_under(Path::new("/a/"), &repo, &wi),
            Path::new("/a/.deploy-state-r/w")
        );
    }

    fn sh_echo(word: &str) -> Vec<u8> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {word}"))
            .output()
            .expect("sh runs");
        assert!(out.status.success());
        out.stdout
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        // Any string without NUL survives one round of quoting through a real sh,
        // and through two rounds, as the remote command nests it.
        #[test]
        fn quoting_round_trips_through_sh(s in "[^\\x00]{0,24}") {
            prop_assert_eq!(sh_echo(&shell_quote(&s)), s.as_bytes());
            let nested = format!("sh -c {}", shell_quote(&format!("printf %s {}", shell_quote(&s))));
            let out = std::process::Command::new("sh").arg("-c").arg(nested).output().unwrap();
            prop_assert_eq!(out.stdout, s.as_bytes());
        }
    }
}
