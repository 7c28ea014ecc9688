//! The settings registry: every setting's name, default, type and meaning.
//!
//! This is the only module that holds host-specific literals (paths, hosts,
//! ports, domains). Every default is the production value, so an empty `.env`
//! behaves exactly as production.

use serde::Serialize;

/// The platform's own repository: the one repo that deploys itself. A pinned
/// platform constant, deliberately not a setting.
pub const SELF_HOSTING_REPO: &str = "orchestrator";

/// How a setting's text is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Bool,
    Port,
    /// Whole seconds, at least 1.
    Seconds,
    /// Whole seconds, 0 meaning "off".
    SecondsOrOff,
    Text,
    Path,
    Csv,
    Transport,
    /// A word passed to ssh as its own argument: no leading `-`, no white space.
    SshWord,
    /// A secret: never printed by `config`.
    Secret,
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    pub group: &'static str,
    pub meaning: &'static str,
}

impl Spec {
    pub fn is_secret(&self) -> bool {
        self.kind == Kind::Secret
    }
}

const fn spec(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    group: &'static str,
    meaning: &'static str,
) -> Spec {
    Spec {
        name,
        default,
        kind,
        group,
        meaning,
    }
}

/// Every setting, in the order `config` and `.env.example` show them.
#[rustfmt::skip]
pub const REGISTRY: &[Spec] = &[
    spec("SELF_DEPLOY_ENABLED", "true", Kind::Bool, "engine", "global kill-switch; false: the machine applies to no repo"),
    spec("SELF_DEPLOY_REPOS", "", Kind::Csv, "engine", "repos the machine applies to (CSV, case-insensitive); empty: only the self-hosting repo"),
    spec("REPOS_DIR", "/srv/orchestrator/repos", Kind::Path, "engine", "base of the state directories as the engine sees it"),
    spec("SELF_DEPLOY_WORKTREE", "{repos_dir}/.worktrees/{repo}/{work_item}", Kind::Text, "engine", "a work item's git worktree when --worktree is not given; {repos_dir} {repo} {work_item} {branch} are replaced"),
    spec("SELF_DEPLOY_TRANSPORT", "ssh", Kind::Transport, "ssh/host", "how the detached hook is launched: ssh (to DEPLOY_SSH_HOST) or local (bash on this machine)"),
    spec("HOST_REPOS_DIR", "/srv/orchestrator/repos", Kind::Text, "ssh/host", "REPOS_DIR as the host sees it (the shared mount)"),
    spec("DEPLOY_HOST_REPO_PATH", "/srv/orchestrator/app", Kind::Text, "ssh/host", "the repo checkout on the host: cd target and REPO="),
    spec("DEPLOY_HOOK_SCRIPT", "scripts/deploy-hook.sh", Kind::Text, "ssh/host", "the hook, run as `bash <hook> --deploy`; may be relative to DEPLOY_HOST_REPO_PATH"),
    spec("DEPLOY_SSH_USER", "deploy", Kind::SshWord, "ssh/host", "ssh user; empty: the ssh target is the host alone"),
    spec("DEPLOY_SSH_HOST", "host.docker.internal", Kind::SshWord, "ssh/host", "ssh host that runs the hook"),
    spec("DEPLOY_PROD_SOURCE_IMAGE", "orchestrator:staging", Kind::Text, "deploy target", "the staging-validated image, promoted without a rebuild"),
    spec("DEPLOY_PROD_TARGET_SERVICE", "orchestrator", Kind::Text, "deploy target", "compose service restarted"),
    spec("DEPLOY_PROD_TARGET_PORT", "8500", Kind::Port, "deploy target", "production port"),
    spec("DEPLOY_PROD_TARGET_IMAGE", "orchestrator:prod", Kind::Text, "deploy target", "production image tag"),
    spec("DEPLOY_PROD_COMPOSE_PROFILE", "prod", Kind::Text, "deploy target", "compose profile"),
    spec("DEPLOY_PROD_PREV_IMAGE_FILE", "/srv/orchestrator/.deploy-prev-image", Kind::Text, "deploy target", "where the hook keeps the previous image for rollback"),
    spec("STAGING_PORT", "8501", Kind::Port, "deploy target", "staging port; must differ from DEPLOY_PROD_TARGET_PORT"),
    spec("IMAGE_FRESHNESS_ENABLED", "true", Kind::Bool, "deploy target", "pass EXPECTED_REVISION so the hook refuses a stale image (self-hosting repo only)"),
    spec("AGENT_HOME_DIR", "/home/agent", Kind::Path, "git identity", "HOME for git calls"),
    spec("GIT_EMAIL_DOMAIN", "orchestrator.local", Kind::Text, "git identity", "domain of the deploy-finalizer commit e-mail"),
    spec("SELF_DEPLOY_COMMIT_MESSAGE", "deploy(ORCH-036): finalize {status} for {work_item}", Kind::Text, "git identity", "message of the deploy log's commit; {status} (SUCCESS or FAILED) and {work_item} are replaced"),
    spec("SELF_DEPLOY_SSH_TIMEOUT_SECS", "30", Kind::Seconds, "timeouts", "seconds before a hanging ssh dispatch is killed; its ticket is then revoked, unless the host claimed it first"),
    spec("SELF_DEPLOY_GIT_TIMEOUT_SECS", "60", Kind::Seconds, "timeouts", "seconds allowed to each git call of the finalizer"),
    spec("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "120", Kind::Seconds, "timeouts", "seconds after a dispatch before a ticket the host has not claimed is revoked by the next poll (back to approve_requested, safe to approve again)"),
    spec("SELF_DEPLOY_LOCK_TIMEOUT_SECS", "120", Kind::Seconds, "timeouts", "seconds to wait for another process holding a work item's lock"),
    spec("SELF_DEPLOY_RESULT_DEADLINE_SECS", "1800", Kind::SecondsOrOff, "timeouts", "seconds after the dispatch with no result before a poll finalizes as FAILED (timeout; a late result is still recorded); 1800 is about 5 times the reference hook's worst case counted from the dispatch (a claim within the 120 s claim timeout, then about 250 s: its docker calls, two restarts and two 60 s health checks); 0: no deadline, waits forever"),
    spec("SELF_DEPLOY_WATCH_RESCAN_SECS", "5", Kind::Seconds, "timeouts", "seconds between full rescans of REPOS_DIR by `selfdeploy watch` (a safety net for missed file events)"),
    spec("HISTORY_HMAC_KEY", "", Kind::Secret, "secrets", "key that signs every history entry (HMAC-SHA256 chain); empty: entries are unsigned"),
    spec("HISTORY_HMAC_PREVIOUS_KEYS", "", Kind::Secret, "secrets", "earlier HISTORY_HMAC_KEY values (comma-separated) that still verify the entries they signed, after a key rotation"),
];

/// The env file the installed CLI reads when no `--env-file` is given, the
/// variable below is unset and the working directory has no `.env`: the one
/// the Debian package ships (root:selfdeploy, mode 0640).
pub const SYSTEM_ENV_FILE: &str = "/etc/selfdeploy/selfdeploy.env";

/// The variable that names another env file (set but empty: read none).
pub const ENV_FILE_VARIABLE: &str = "SELFDEPLOY_ENV_FILE";

/// The group that may read the system env file, as the package ships it.
pub const SYSTEM_ENV_FILE_GROUP: &str = "selfdeploy";

/// The prefixes of this project's settings: a variable with one of them that
/// is not a setting is most likely a typo.
const PREFIXES: [&str; 3] = ["SELF_DEPLOY_", "DEPLOY_", "HISTORY_HMAC_"];

/// How many single-character edits away from a setting's name another name
/// is taken for a typo of it, whatever its prefix (`REPO_DIR`, `repos_dir`,
/// `HOST_REPO_DIR`, `SELFDEPLOY_ENABLED`).
const TYPO_DISTANCE: usize = 2;

/// Variables of an ordinary environment (a login shell, sudo, systemd,
/// containers, CI) that are never a misspelled setting, however close.
const COMMON_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "HOSTNAME",
    "MAIL",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "DISPLAY",
    "SHLVL",
    "SSH_AUTH_SOCK",
    "SSH_CONNECTION",
    "SSH_CLIENT",
    "SSH_TTY",
    "SUDO_USER",
    "SUDO_UID",
    "SUDO_GID",
    "SUDO_COMMAND",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_SESSION_ID",
    "DBUS_SESSION_BUS_ADDRESS",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "CI",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "DOCKER_HOST",
];

/// Names that are not settings but that the program reads: never a typo,
/// and what a typo of them should be told.
const OTHER_KNOWN: &[&str] = &[ENV_FILE_VARIABLE];

/// The setting (or other variable this program reads) that `name` most
/// likely misspells: `None` for a known name, a common variable, or one
/// neither carrying a project prefix nor within a couple of edits of a
/// known name.
pub fn closest_setting(name: &str) -> Option<&'static str> {
    let known = REGISTRY
        .iter()
        .map(|s| s.name)
        .chain(OTHER_KNOWN.iter().copied());
    if known.clone().any(|k| k == name) || COMMON_VARIABLES.contains(&name) {
        return None;
    }
    let upper = name.to_ascii_uppercase();
    let (distance, closest) = known
        .map(|k| (edit_distance(&upper, k), k))
        .min_by_key(|(d, _)| *d)?;
    let prefixed = PREFIXES.iter().any(|p| upper.starts_with(p));
    (prefixed || distance <= TYPO_DISTANCE).then_some(closest)
}

/// Levenshtein distance, by bytes (setting names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// The identity of the finalizer's commits: a platform literal name, the
/// e-mail domain from the settings.
pub const FINALIZER_NAME: &str = "deploy-finalizer";

/// The home of the Debian package's service user, named in the manual
/// pages.
pub const PACKAGE_HOME: &str = "/var/lib/selfdeploy";

/// The image label that carries the commit an image was built from (the OCI
/// annotation `org.opencontainers.image.revision`): the hook's provenance
/// check compares it with EXPECTED_REVISION.
pub const IMAGE_REVISION_LABEL: &str = "org.opencontainers.image.revision";

/// Whether the setting called `name` is a secret.
pub fn is_secret(name: &str) -> bool {
    REGISTRY.iter().any(|s| s.name == name && s.is_secret())
}

// The defaults are production values: their tests hold them too.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    #[test]
    fn self_hosting_repo_is_pinned() {
        assert_eq!(SELF_HOSTING_REPO, "orchestrator");
    }

    #[test]
    fn defaults_parse_and_are_production() {
        let s = Settings::with_overrides(&[]).unwrap();
        assert!(s.enabled);
        assert_eq!(s.target_port, 8500);
        assert_eq!(s.transport.name(), "ssh");
        assert_eq!(s.ssh_timeout, Duration::from_secs(30));
        assert_eq!(s.git_timeout, Duration::from_secs(60));
        assert!(s.resolved.iter().all(|r| r.source == Source::Default));
        assert_eq!(s.resolved.len(), REGISTRY.len());
    }

    #[test]
    fn applies_follows_the_contract() {
        let s = Settings::with_overrides(&[]).unwrap();
        assert!(s.applies("orchestrator"));
        assert!(s.applies("  Orchestrator "));
        assert!(!s.applies("other"));
        let s = Settings::with_overrides(&[("SELF_DEPLOY_REPOS", " Alpha , beta,,")]).unwrap();
        assert!(s.applies("ALPHA") && s.applies("beta"));
        assert!(!s.applies("orchestrator"));
        let s =
            Settings::with_overrides(&[("SELF_DEPLOY_ENABLED", "no"), ("SELF_DEPLOY_REPOS", "x")])
                .unwrap();
        assert!(!s.applies("x") && !s.applies("orchestrator"));
    }

    #[test]
    fn empty_means_empty_text_or_default_number() {
        let s = Settings::with_overrides(&[
            ("DEPLOY_SSH_USER", ""),
            ("DEPLOY_PROD_TARGET_PORT", ""),
            ("SELF_DEPLOY_ENABLED", " "),
        ])
        .unwrap();
        assert_eq!(s.ssh_user, "");
        assert_eq!(s.target_port, 8500);
        assert!(s.enabled);
    }

    #[test]
    fn bad_values_name_the_setting_and_value() {
        for (name, value) in [
            ("DEPLOY_PROD_TARGET_PORT", "http"),
            ("STAGING_PORT", "0"),
            ("STAGING_PORT", "65536"),
            ("IMAGE_FRESHNESS_ENABLED", "maybe"),
            ("SELF_DEPLOY_TRANSPORT", "telnet"),
            ("SELF_DEPLOY_SSH_TIMEOUT_SECS", "0"),
        ] {
            let err = Settings::with_overrides(&[(name, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn ssh_words_cannot_become_options() {
        for (name, value) in [
            ("DEPLOY_SSH_HOST", "-oProxyCommand=touch x"),
            ("DEPLOY_SSH_HOST", "a b"),
            ("DEPLOY_SSH_USER", "-l"),
            ("DEPLOY_SSH_USER", "ro ot"),
        ] {
            let err = Settings::with_overrides(&[(name, value)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(name) && err.contains("must not start with '-'"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err =
            Settings::with_overrides(&[("STAGING_PORT", "x"), ("SELF_DEPLOY_ENABLED", "maybe")])
                .unwrap_err();
        let ConfigError::Several(errors) = &err else {
            panic!("{err}")
        };
        assert_eq!(errors.len(), 2);
        assert!(
            err.to_string().contains("STAGING_PORT")
                && err.to_string().contains("SELF_DEPLOY_ENABLED")
        );
    }

    #[test]
    fn problems_name_what_to_fix() {
        assert!(Settings::with_overrides(&[]).unwrap().problems().is_empty());
        let s = Settings::with_overrides(&[
            ("STAGING_PORT", "8500"),
            ("HOST_REPOS_DIR", "relative/dir"),
            ("SELF_DEPLOY_REPOS", "good,../bad"),
            ("GIT_EMAIL_DOMAIN", "a b"),
        ])
        .unwrap();
        let problems = s.problems().join("\n");
        for part in [
            "STAGING_PORT equals",
            "HOST_REPOS_DIR=\"relative/dir\" must be an absolute path",
            "\"../bad\"",
            "GIT_EMAIL_DOMAIN",
        ] {
            assert!(problems.contains(part), "{part}: {problems}");
        }
    }

    #[test]
    fn deadline_zero_means_forever() {
        assert_eq!(
            Settings::with_overrides(&[]).unwrap().result_deadline,
            Some(Duration::from_secs(1800)),
            "a deadline by default: a result the host never writes must end"
        );
        let off = Settings::with_overrides(&[("SELF_DEPLOY_RESULT_DEADLINE_SECS", "0")]).unwrap();
        assert_eq!(off.result_deadline, None);
        let s = Settings::with_overrides(&[("SELF_DEPLOY_RESULT_DEADLINE_SECS", "90")]).unwrap();
        assert_eq!(s.result_deadline, Some(Duration::from_secs(90)));
    }

    #[test]
    fn worktree_template_is_filled_in() {
        let s = Settings::with_overrides(&[("REPOS_DIR", "/r")]).unwrap();
        assert_eq!(
            s.default_worktree("orchestrator", "W-1", None),
            PathBuf::from("/r/.worktrees/orchestrator/W-1")
        );
    }
}
