//! The settings: a plain value with every setting typed, where each came
//! from, and what is wrong with them. Pure: resolving given text values
//! needs no I/O; reading them from the process environment and `.env` files
//! is `crate::load_settings`, and the names, defaults and meanings are
//! `registry.rs`, the only home of host-specific literals.

pub mod env_file;
mod registry;

pub use registry::{
    ENV_FILE_VARIABLE, FINALIZER_NAME, IMAGE_REVISION_LABEL, Kind, PACKAGE_HOME, REGISTRY,
    SELF_HOSTING_REPO, SYSTEM_ENV_FILE, SYSTEM_ENV_FILE_GROUP, Spec, closest_setting, is_secret,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

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

pub use crate::transport::Transport;

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
    #[error("env file {path}, line {line}: {problem}")]
    EnvFileLine {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<ConfigError>),
    #[error("{0} is not a setting; `selfdeploy config` lists them all")]
    Unknown(String),
    #[error("setting {name} from {origin} is not valid UTF-8")]
    NotUtf8 { name: &'static str, origin: Source },
}

/// Which env file the settings were read from, and why that one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EnvFile {
    /// This file was read.
    Read { path: PathBuf, chosen_by: ChosenBy },
    /// No `--env-file`, no `SELFDEPLOY_ENV_FILE`, no `./.env`, and the
    /// system file does not exist: the environment alone.
    NotFound { system: PathBuf },
    /// `SELFDEPLOY_ENV_FILE` is set but empty: no file, on purpose.
    Off,
    /// Settings made by the program (tests, the demo): no file looked for.
    NotLoaded,
}

/// What chose the env file, in the order it is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenBy {
    Flag,
    Variable,
    WorkingDirectory,
    System,
}

impl fmt::Display for EnvFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvFile::Read { path, chosen_by } => {
                let why = match chosen_by {
                    ChosenBy::Flag => "given by --env-file".to_owned(),
                    ChosenBy::Variable => format!("named by {ENV_FILE_VARIABLE}"),
                    ChosenBy::WorkingDirectory => "./.env in the working directory".to_owned(),
                    ChosenBy::System => {
                        "the system env file: no --env-file, no ./.env here".to_owned()
                    }
                };
                write!(f, "{} ({why})", path.display())
            }
            EnvFile::NotFound { system } => write!(
                f,
                "none (no --env-file, {ENV_FILE_VARIABLE} unset, no ./.env here, {} not found): the environment alone",
                system.display()
            ),
            EnvFile::Off => write!(
                f,
                "none ({ENV_FILE_VARIABLE} is set empty): the environment alone"
            ),
            EnvFile::NotLoaded => f.write_str("none (settings made by the program)"),
        }
    }
}

/// Whether writes to the state directory and the history reach the disk
/// before they count (fsync of the file and of its directory). Production
/// is always `Synced`; a replay, whose files live in a temporary directory
/// that nobody reads after a crash, runs `Unsynced`: the same code, less
/// waiting. Not an environment setting on purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Synced,
    Unsynced,
}

/// The entropy a history key must hold: what `gen-secrets` writes.
pub const MIN_KEY_BYTES: usize = 32;

/// At most how many bytes of entropy `key` holds: 4 bits a character when it
/// is all hex digits, else 6 (base64's alphabet, the richest a key is
/// typed in), counted over its shortest repeating unit: a key that repeats
/// a shorter string (`aaaa...`, `abab...`, a 16-digit block four times)
/// holds no more than that string.
pub fn key_entropy_bytes(key: &str) -> usize {
    let chars: Vec<char> = key.chars().collect();
    let n = chars.len();
    let period = (1..=n / 2)
        .find(|&p| n.is_multiple_of(p) && chars.chunks(p).all(|c| c == &chars[..p]))
        .unwrap_or(n);
    if chars.iter().all(char::is_ascii_hexdigit) {
        period / 2
    } else {
        period * 6 / 8
    }
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
    /// Set by the program, never by the environment (see [`Durability`]).
    pub durability: Durability,
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
    /// known name, and settings given twice in the env file: printed, never
    /// fatal (`config --check --strict` and `doctor` fail on them).
    pub warnings: Vec<String>,
    /// The env file read, if any.
    pub env_file: EnvFile,
}

impl Settings {
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

    pub(crate) fn resolve(
        given: Vec<(&'static str, String, Source)>,
    ) -> (Settings, Vec<ConfigError>) {
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
            durability: Durability::Synced,
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
            env_file: EnvFile::NotLoaded,
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
    /// (a relative path, an empty ssh host, a hook that reads as an option, a
    /// value that does not parse). Equal staging and production ports are not among
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
            if let Err(e) = crate::contract::names::RepoName::new(repo) {
                out.push(format!("SELF_DEPLOY_REPOS: {e}"));
            }
        }
        out.extend(self.transport.problems(self));
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
        // A key is only as strong as what can guess it. Previous keys only
        // verify what they signed: refusing a weak one would leave a
        // history unverifiable after rotating away from it.
        if let Some(key) = &self.history_key {
            let bytes = key_entropy_bytes(key.expose());
            if bytes < MIN_KEY_BYTES {
                out.push(format!(
                    "HISTORY_HMAC_KEY holds at most {bytes} bytes of entropy, fewer than {MIN_KEY_BYTES}: make one with `selfdeploy gen-secrets` (64 hex characters)"
                ));
            }
        }
        // Each of these reaches the hook's environment and, in the reference
        // hook, an argv word of docker or compose: one that begins with `-`
        // would be read as an option (`--build` restarts everything).
        for (name, value) in [
            ("DEPLOY_PROD_SOURCE_IMAGE", &self.source_image),
            ("DEPLOY_PROD_TARGET_SERVICE", &self.target_service),
            ("DEPLOY_PROD_TARGET_IMAGE", &self.target_image),
            ("DEPLOY_PROD_COMPOSE_PROFILE", &self.compose_profile),
        ] {
            if value.trim_start().starts_with('-') {
                out.push(format!(
                    "{name}={value:?} begins with '-': docker or compose would read it as an option; name the {} itself",
                    name.trim_start_matches("DEPLOY_PROD_").to_ascii_lowercase().replace('_', " ")
                ));
            }
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

    /// Does the machine apply to this repo? No when the kill-switch is off;
    /// else the trimmed, lower-cased repo must be listed, or, with no list,
    /// be the self-hosting repo.
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
        status: crate::contract::hook_result::Verdict,
        work_item: &crate::contract::names::WorkItem,
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

pub(crate) fn strict(
    (settings, mut errors): (Settings, Vec<ConfigError>),
) -> Result<Settings, ConfigError> {
    match errors.len() {
        0 => Ok(settings),
        1 => Err(errors.remove(0)),
        _ => Err(ConfigError::Several(errors)),
    }
}

/// Reads typed values, collecting every problem instead of stopping at the
/// first; a bad value reads as its default meanwhile.
struct Reader<'a> {
    resolved: &'a [Resolved],
    errors: std::cell::RefCell<Vec<ConfigError>>,
}

impl Reader<'_> {
    // `resolved` holds one entry per REGISTRY name (resolve builds it from
    // REGISTRY), and every caller names a registered setting.
    #[allow(clippy::expect_used)]
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
        // Every default of REGISTRY parses as its kind (the registry's tests
        // check each one), so this fallback cannot fail.
        #[allow(clippy::expect_used)]
        let value = parse(default).expect("registry defaults parse");
        value
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
            // ASCII only: Unicode lower-casing would turn a Kelvin sign into
            // `k` and enable a repo nobody listed; the names' check then
            // rejects anything but ASCII.
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn transport(&self, name: &str) -> Transport {
        self.parse(
            name,
            "expected a transport: ssh or local",
            Transport::by_name,
        )
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

    /// A secret shows as `<redacted>` wherever it is formatted: logs,
    /// errors, `config`. Only `expose` gives the value.
    #[test]
    fn a_secret_is_shown_redacted_and_only_exposed_on_purpose() {
        let secret = Secret::new("s3cr3t-value");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(secret.to_string(), REDACTED);
        assert_eq!(format!("{:?}", Some(&secret)), format!("Some({REDACTED})"));
        assert_eq!(secret.expose(), "s3cr3t-value");

        let resolved = |name, value: &str| Resolved {
            name,
            value: value.to_owned(),
            source: Source::Environment,
        };
        let key = resolved("HISTORY_HMAC_KEY", "s3cr3t-value");
        assert_eq!(key.shown(), REDACTED);
        assert_eq!(
            format!("{key:?}"),
            format!(
                "Resolved {{ name: \"HISTORY_HMAC_KEY\", value: \"{REDACTED}\", source: Environment }}"
            )
        );
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            format!(
                "{{\"name\":\"HISTORY_HMAC_KEY\",\"value\":\"{REDACTED}\",\"source\":{{\"kind\":\"environment\"}}}}"
            )
        );
        // An unset secret shows as unset; a plain setting as itself.
        assert_eq!(resolved("HISTORY_HMAC_KEY", "").shown(), "");
        assert_eq!(resolved("SELF_DEPLOY_ENABLED", "true").shown(), "true");
    }

    #[test]
    fn sources_are_named_for_config() {
        assert_eq!(Source::Default.to_string(), "default");
        assert_eq!(Source::Environment.to_string(), "environment");
        assert_eq!(Source::Program.to_string(), "program");
        assert_eq!(Source::DotEnv(PathBuf::from(".env")).to_string(), ".env");
    }

    /// One bad value is that error itself; several are listed together.
    #[test]
    fn one_problem_is_itself_and_several_are_listed() {
        let one = Settings::with_overrides(&[("SELF_DEPLOY_ENABLED", "maybe")]).unwrap_err();
        assert!(!matches!(one, ConfigError::Several(_)), "{one:?}");
        assert!(one.to_string().contains("SELF_DEPLOY_ENABLED"), "{one}");
        let two =
            Settings::with_overrides(&[("SELF_DEPLOY_ENABLED", "maybe"), ("STAGING_PORT", "x")])
                .unwrap_err();
        assert!(
            matches!(two, ConfigError::Several(ref e) if e.len() == 2),
            "{two:?}"
        );
    }
}
