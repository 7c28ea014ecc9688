//! The settings registry: every setting's name, default, type and meaning,
//! how a value is parsed, and where each resolved value came from.
//!
//! This is the only module that holds host-specific literals (paths, hosts,
//! ports, domains). Every default is the production value, so an empty `.env`
//! behaves exactly as production.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    spec("SELF_DEPLOY_RESULT_DEADLINE_SECS", "0", Kind::SecondsOrOff, "timeouts", "seconds after approval with no result before a poll finalizes as FAILED (timeout); 0 waits forever"),
    spec("SELF_DEPLOY_WATCH_RESCAN_SECS", "5", Kind::Seconds, "timeouts", "seconds between full rescans of REPOS_DIR by `selfdeploy watch` (a safety net for missed file events)"),
    spec("HISTORY_HMAC_KEY", "", Kind::Secret, "secrets", "key that signs every history entry (HMAC-SHA256 chain); empty: entries are unsigned"),
    spec("HISTORY_HMAC_PREVIOUS_KEYS", "", Kind::Secret, "secrets", "earlier HISTORY_HMAC_KEY values (comma-separated) that still verify the entries they signed, after a key rotation"),
];

/// A secret value: never printed. `Debug` and `Display` show `<redacted>`,
/// so that no log, error or report can carry it by accident; `expose` is the
/// one way to the bytes, for the code that signs with it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What a secret shows instead of its value (and what `snapshot` records).
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: &str) -> Secret {
        Secret(value.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Source {
    Default,
    DotEnv(PathBuf),
    Environment,
    /// Set by the program itself (the demo's sandbox).
    Program,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::DotEnv(p) => write!(f, "{}", p.display()),
            Source::Environment => f.write_str("environment"),
            Source::Program => f.write_str("program"),
        }
    }
}

/// One resolved setting, for `selfdeploy config`. Its `Debug` and
/// serialized forms redact a secret's value.
#[derive(Clone)]
pub struct Resolved {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
}

impl Resolved {
    pub fn is_secret(&self) -> bool {
        is_secret(self.name)
    }

    /// The value as it may be shown: a set secret is `<redacted>`.
    pub fn shown(&self) -> &str {
        if self.is_secret() && !self.value.is_empty() {
            REDACTED
        } else {
            &self.value
        }
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("name", &self.name)
            .field("value", &self.shown())
            .field("source", &self.source)
            .finish()
    }
}

impl Serialize for Resolved {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Resolved", 3)?;
        st.serialize_field("name", self.name)?;
        st.serialize_field("value", self.shown())?;
        st.serialize_field("source", &self.source)?;
        st.end()
    }
}

/// Whether the setting called `name` is a secret.
pub fn is_secret(name: &str) -> bool {
    REGISTRY.iter().any(|s| s.name == name && s.is_secret())
}

/// How the detached hook is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Ssh,
    Local,
}

/// A setting whose value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting {name}={value:?} (from {origin}): {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        origin: Source,
        expected: &'static str,
    },
    #[error("cannot read env file {path}: {problem}")]
    EnvFile { path: PathBuf, problem: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<ConfigError>),
    #[error("{0} is not a setting; `selfdeploy config` lists them all")]
    Unknown(String),
    #[error("setting {name} from {origin} is not valid UTF-8")]
    NotUtf8 { name: &'static str, origin: Source },
}

/// The typed settings the engine runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub repos: Vec<String>,
    pub repos_dir: PathBuf,
    pub worktree_template: String,
    pub transport: Transport,
    pub host_repos_dir: String,
    pub host_repo_path: String,
    pub hook_script: String,
    pub ssh_user: String,
    pub ssh_host: String,
    pub source_image: String,
    pub target_service: String,
    pub target_port: u16,
    pub target_image: String,
    pub compose_profile: String,
    pub prev_image_file: String,
    pub staging_port: u16,
    pub image_freshness: bool,
    pub agent_home_dir: PathBuf,
    pub git_email_domain: String,
    /// The deploy log's commit message, with `{status}` and `{work_item}`.
    pub commit_message_template: String,
    pub ssh_timeout: Duration,
    pub git_timeout: Duration,
    pub lock_timeout: Duration,
    /// How long a dispatch ticket may stay unclaimed before a poll revokes it.
    pub claim_timeout: Duration,
    /// `None`: wait for a result forever.
    pub result_deadline: Option<Duration>,
    pub watch_rescan: Duration,
    /// Signs the history when set.
    pub history_key: Option<Secret>,
    /// Earlier keys, for verifying what they signed.
    pub history_previous_keys: Vec<Secret>,
    /// Every setting as resolved, in registry order.
    pub resolved: Vec<Resolved>,
    /// Names that look like settings but are not (typos), with the closest
    /// known name: printed, never fatal.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Settings from the process environment and an env file: `path` when
    /// given (it must exist), else `.env` in the working directory if there is
    /// one. The real environment wins over the file.
    pub fn load(env_file: Option<&Path>) -> Result<Settings, ConfigError> {
        strict(Settings::load_lenient(env_file)?)
    }

    /// Like `load`, but a value that does not parse reads as its default and
    /// is returned among the errors, so that every problem can be reported.
    pub fn load_lenient(
        env_file: Option<&Path>,
    ) -> Result<(Settings, Vec<ConfigError>), ConfigError> {
        let (file_values, file_path) = match env_file {
            Some(path) => (read_env_file(path)?, Some(path.to_path_buf())),
            None => {
                let path = PathBuf::from(".env");
                if path.is_file() {
                    (read_env_file(&path)?, Some(path))
                } else {
                    (BTreeMap::new(), None)
                }
            }
        };
        let mut names: Vec<String> = file_values.keys().cloned().collect();
        names.extend(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
        let warnings = unknown_settings(&names);
        let mut raw = Vec::new();
        for spec in REGISTRY {
            if let Some(value) = std::env::var_os(spec.name) {
                let value = value.into_string().map_err(|_| ConfigError::NotUtf8 {
                    name: spec.name,
                    origin: Source::Environment,
                })?;
                raw.push((spec.name, value, Source::Environment));
            } else if let (Some(value), Some(path)) = (file_values.get(spec.name), &file_path) {
                raw.push((spec.name, value.clone(), Source::DotEnv(path.clone())));
            }
        }
        let (mut settings, errors) = Settings::resolve(raw);
        settings.warnings = warnings;
        Ok((settings, errors))
    }

    /// Production defaults with the given values laid over them (tests, the demo).
    pub fn with_overrides(overrides: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut raw = Vec::new();
        for (name, value) in overrides {
            let spec = REGISTRY
                .iter()
                .find(|s| s.name == *name)
                .ok_or_else(|| ConfigError::Unknown((*name).to_owned()))?;
            raw.push((spec.name, (*value).to_owned(), Source::Program));
        }
        strict(Settings::resolve(raw))
    }

    fn resolve(given: Vec<(&'static str, String, Source)>) -> (Settings, Vec<ConfigError>) {
        let mut values: BTreeMap<&str, (String, Source)> = BTreeMap::new();
        for (name, value, source) in given {
            values.insert(name, (value, source));
        }
        let mut resolved = Vec::new();
        for spec in REGISTRY {
            let (value, source) = match values.remove(spec.name) {
                // Set but empty: the empty text, or the default for a number or a bool.
                Some((v, _))
                    if v.trim().is_empty()
                        && !matches!(
                            spec.kind,
                            Kind::Text | Kind::Path | Kind::Csv | Kind::SshWord | Kind::Secret
                        ) =>
                {
                    (spec.default.to_owned(), Source::Default)
                }
                Some((v, s)) => (v, s),
                None => (spec.default.to_owned(), Source::Default),
            };
            resolved.push(Resolved {
                name: spec.name,
                value,
                source,
            });
        }
        let r = Reader {
            resolved: &resolved,
            errors: std::cell::RefCell::new(Vec::new()),
        };
        let settings = Settings {
            enabled: r.bool("SELF_DEPLOY_ENABLED"),
            repos: r.csv("SELF_DEPLOY_REPOS"),
            repos_dir: PathBuf::from(r.text("REPOS_DIR")),
            worktree_template: r.text("SELF_DEPLOY_WORKTREE"),
            transport: r.transport("SELF_DEPLOY_TRANSPORT"),
            host_repos_dir: r.text("HOST_REPOS_DIR"),
            host_repo_path: r.text("DEPLOY_HOST_REPO_PATH"),
            hook_script: r.text("DEPLOY_HOOK_SCRIPT"),
            ssh_user: r.ssh_word("DEPLOY_SSH_USER"),
            ssh_host: r.ssh_word("DEPLOY_SSH_HOST"),
            source_image: r.text("DEPLOY_PROD_SOURCE_IMAGE"),
            target_service: r.text("DEPLOY_PROD_TARGET_SERVICE"),
            target_port: r.port("DEPLOY_PROD_TARGET_PORT"),
            target_image: r.text("DEPLOY_PROD_TARGET_IMAGE"),
            compose_profile: r.text("DEPLOY_PROD_COMPOSE_PROFILE"),
            prev_image_file: r.text("DEPLOY_PROD_PREV_IMAGE_FILE"),
            staging_port: r.port("STAGING_PORT"),
            image_freshness: r.bool("IMAGE_FRESHNESS_ENABLED"),
            agent_home_dir: PathBuf::from(r.text("AGENT_HOME_DIR")),
            git_email_domain: r.text("GIT_EMAIL_DOMAIN"),
            commit_message_template: r.text("SELF_DEPLOY_COMMIT_MESSAGE"),
            ssh_timeout: r.seconds("SELF_DEPLOY_SSH_TIMEOUT_SECS"),
            git_timeout: r.seconds("SELF_DEPLOY_GIT_TIMEOUT_SECS"),
            lock_timeout: r.seconds("SELF_DEPLOY_LOCK_TIMEOUT_SECS"),
            claim_timeout: r.seconds("SELF_DEPLOY_CLAIM_TIMEOUT_SECS"),
            result_deadline: r.seconds_or_off("SELF_DEPLOY_RESULT_DEADLINE_SECS"),
            watch_rescan: r.seconds("SELF_DEPLOY_WATCH_RESCAN_SECS"),
            history_key: Some(r.text("HISTORY_HMAC_KEY"))
                .filter(|k| !k.is_empty())
                .map(Secret::from),
            history_previous_keys: r
                .text("HISTORY_HMAC_PREVIOUS_KEYS")
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect(),
            resolved: resolved.clone(),
            warnings: Vec::new(),
        };
        (settings, r.errors.into_inner())
    }

    /// Problems that do not stop the engine but that an operator must fix
    /// (`selfdeploy config --check`): every one, not just the first.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.staging_port == self.target_port {
            out.push(format!(
                "STAGING_PORT equals DEPLOY_PROD_TARGET_PORT ({}): every dispatch would be refused; give staging its own port",
                self.target_port
            ));
        }
        out.extend(self.acting_problems());
        out
    }

    /// The problems that stop every event and `watch` before anything acts
    /// (contract section 2). Equal staging and production ports are not among
    /// them: for events that is the dispatch guard, so that a deploy already
    /// in flight can still be polled, stamped and reset.
    pub fn acting_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let absolute = [
            ("REPOS_DIR", self.repos_dir.to_string_lossy().into_owned()),
            ("HOST_REPOS_DIR", self.host_repos_dir.clone()),
            ("DEPLOY_HOST_REPO_PATH", self.host_repo_path.clone()),
            ("DEPLOY_PROD_PREV_IMAGE_FILE", self.prev_image_file.clone()),
            (
                "AGENT_HOME_DIR",
                self.agent_home_dir.to_string_lossy().into_owned(),
            ),
        ];
        for (name, value) in absolute {
            if !value.starts_with('/') {
                out.push(format!("{name}={value:?} must be an absolute path"));
            }
        }
        for repo in &self.repos {
            if let Err(e) = crate::names::RepoName::new(repo) {
                out.push(format!("SELF_DEPLOY_REPOS: {e}"));
            }
        }
        if self.transport == Transport::Ssh && self.ssh_host.is_empty() {
            out.push("DEPLOY_SSH_HOST is empty; the ssh transport needs a host".to_owned());
        }
        if self.commit_message_template.trim().is_empty() {
            out.push(
                "SELF_DEPLOY_COMMIT_MESSAGE is empty; git refuses an empty commit message"
                    .to_owned(),
            );
        }
        if self.hook_script.trim().is_empty() {
            out.push("DEPLOY_HOOK_SCRIPT is empty; name the hook script".to_owned());
        } else if self.hook_script.starts_with('-') {
            out.push(format!(
                "DEPLOY_HOOK_SCRIPT={:?} would be read by bash as an option; name the script by a path (./{})",
                self.hook_script, self.hook_script
            ));
        }
        if self.git_email_domain.is_empty()
            || self
                .git_email_domain
                .contains(|c: char| c.is_whitespace() || c == '@')
        {
            out.push(format!(
                "GIT_EMAIL_DOMAIN={:?} is not a domain (no white space, no '@')",
                self.git_email_domain
            ));
        }
        out
    }

    /// Contract section 3: does the machine apply to this repo?
    pub fn applies(&self, repo: &str) -> bool {
        if !self.enabled {
            return false;
        }
        let repo = repo.trim().to_lowercase();
        if self.repos.is_empty() {
            repo == SELF_HOSTING_REPO
        } else {
            self.repos.contains(&repo)
        }
    }

    /// The deploy log's commit message for a verdict.
    pub fn commit_message(
        &self,
        status: crate::hook_result::Verdict,
        work_item: &crate::names::WorkItem,
    ) -> String {
        self.commit_message_template
            .replace("{status}", status.as_str())
            .replace("{work_item}", work_item.as_str())
    }

    /// The freshness check is active for the self-hosting repo only.
    pub fn freshness_active(&self, repo: &str) -> bool {
        self.image_freshness && repo.trim().eq_ignore_ascii_case(SELF_HOSTING_REPO)
    }

    /// The worktree of a work item when the caller names none.
    pub fn default_worktree(&self, repo: &str, work_item: &str, branch: Option<&str>) -> PathBuf {
        PathBuf::from(
            self.worktree_template
                .replace("{repos_dir}", &self.repos_dir.to_string_lossy())
                .replace("{repo}", repo)
                .replace("{work_item}", work_item)
                .replace("{branch}", branch.unwrap_or("")),
        )
    }
}

fn strict((settings, mut errors): (Settings, Vec<ConfigError>)) -> Result<Settings, ConfigError> {
    match errors.len() {
        0 => Ok(settings),
        1 => Err(errors.remove(0)),
        _ => Err(ConfigError::Several(errors)),
    }
}

/// The prefixes of this project's settings: a variable with one of them that
/// is not a setting is most likely a typo.
const PREFIXES: [&str; 3] = ["SELF_DEPLOY_", "DEPLOY_", "HISTORY_HMAC_"];

/// A warning for each name that carries one of the project's prefixes but is
/// not a setting, naming the closest setting.
pub fn unknown_settings(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| PREFIXES.iter().any(|p| n.starts_with(p)))
        .filter(|n| REGISTRY.iter().all(|s| s.name != n.as_str()))
        .map(|n| {
            let closest = REGISTRY
                .iter()
                .min_by_key(|s| edit_distance(n, s.name))
                .map_or("", |s| s.name);
            format!(
                "{n} is not a setting (did you mean {closest}?); `selfdeploy config` lists them all"
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
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

fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let err = |problem: String| ConfigError::EnvFile {
        path: path.to_path_buf(),
        problem,
    };
    let iter = dotenvy::from_path_iter(path).map_err(|e| err(env_file_problem(&e)))?;
    let mut values = BTreeMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| err(env_file_problem(&e)))?;
        values.insert(k, v);
    }
    Ok(values)
}

/// What is wrong with an env file, without its content: the line that does
/// not parse may hold a secret.
fn env_file_problem(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, at) => {
            let number = line.lines().count().max(1);
            format!(
                "a line does not parse (at character {at} of a {number}-line entry); quote values that hold spaces or '#'"
            )
        }
        other => other.to_string(),
    }
}

/// Reads typed values, collecting every problem instead of stopping at the
/// first; a bad value reads as its default meanwhile.
struct Reader<'a> {
    resolved: &'a [Resolved],
    errors: std::cell::RefCell<Vec<ConfigError>>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> &Resolved {
        self.resolved
            .iter()
            .find(|r| r.name == name)
            .expect("every registered setting is resolved")
    }

    fn text(&self, name: &str) -> String {
        self.get(name).value.clone()
    }

    fn parse<T>(&self, name: &str, expected: &'static str, parse: impl Fn(&str) -> Option<T>) -> T {
        let r = self.get(name);
        if let Some(value) = parse(r.value.trim()) {
            return value;
        }
        self.errors.borrow_mut().push(ConfigError::Invalid {
            name: r.name,
            value: r.value.clone(),
            origin: r.source.clone(),
            expected,
        });
        let default = REGISTRY
            .iter()
            .find(|s| s.name == name)
            .map_or("", |s| s.default);
        parse(default).expect("registry defaults parse")
    }

    fn bool(&self, name: &str) -> bool {
        self.parse(
            name,
            "expected one of true/false/1/0/yes/no/on/off",
            |v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
        )
    }

    fn port(&self, name: &str) -> u16 {
        self.parse(name, "expected a port number in 1..65535", |v| {
            v.parse::<u16>().ok().filter(|p| *p >= 1)
        })
    }

    fn seconds(&self, name: &str) -> Duration {
        self.parse(
            name,
            "expected a whole number of seconds in 1..86400",
            |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|s| (1..=86_400).contains(s))
                    .map(Duration::from_secs)
            },
        )
    }

    fn seconds_or_off(&self, name: &str) -> Option<Duration> {
        self.parse(
            name,
            "expected a whole number of seconds in 0..31536000 (0: off)",
            |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|s| *s <= 31_536_000)
                    .map(|s| (s > 0).then(|| Duration::from_secs(s)))
            },
        )
    }

    fn csv(&self, name: &str) -> Vec<String> {
        self.get(name)
            .value
            .split(',')
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn transport(&self, name: &str) -> Transport {
        self.parse(name, "expected ssh or local", |v| {
            match v.to_ascii_lowercase().as_str() {
                "ssh" => Some(Transport::Ssh),
                "local" => Some(Transport::Local),
                _ => None,
            }
        })
    }

    /// A word given to ssh as an argument: a leading `-` would be read as an
    /// option (`-oProxyCommand=...`), white space cannot be meant.
    fn ssh_word(&self, name: &str) -> String {
        self.parse(
            name,
            "must not start with '-' or contain white space",
            |v| (!v.starts_with('-') && !v.contains(char::is_whitespace)).then(|| v.to_owned()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_hosting_repo_is_pinned() {
        assert_eq!(SELF_HOSTING_REPO, "orchestrator");
    }

    #[test]
    fn defaults_parse_and_are_production() {
        let s = Settings::with_overrides(&[]).unwrap();
        assert!(s.enabled);
        assert_eq!(s.target_port, 8500);
        assert_eq!(s.transport, Transport::Ssh);
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
        assert_eq!(Settings::with_overrides(&[]).unwrap().result_deadline, None);
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
