//! The finalizer's git calls: publish the deploy log (best effort) and read
//! the validated revision for the freshness guard.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::process;
use crate::config::{FINALIZER_NAME, Settings};
use crate::contract::names::BranchName;

/// The environment of a git call: `HOME`, author and committer `name
/// <name@GIT_EMAIL_DOMAIN>`, and never a prompt, an editor or a pager.
fn identity_env(settings: &Settings, name: &str) -> Vec<(String, OsString)> {
    let email = OsString::from(format!("{name}@{}", settings.git_email_domain));
    let mut env: Vec<(String, OsString)> = vec![
        (
            "HOME".into(),
            settings.agent_home_dir.clone().into_os_string(),
        ),
        ("GIT_AUTHOR_NAME".into(), name.into()),
        ("GIT_AUTHOR_EMAIL".into(), email.clone()),
        ("GIT_COMMITTER_NAME".into(), name.into()),
        ("GIT_COMMITTER_EMAIL".into(), email),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_EDITOR".into(), ":".into()),
        ("GIT_SEQUENCE_EDITOR".into(), ":".into()),
        ("GIT_PAGER".into(), "cat".into()),
    ];
    // `core.gitProxy` (a program for git:// remotes) is read only when this
    // is unset: empty, it is no proxy at all; the engine's own value wins.
    env.push((
        "GIT_PROXY_COMMAND".into(),
        std::env::var_os("GIT_PROXY_COMMAND").unwrap_or_default(),
    ));
    env
}

/// The environment of every git the engine runs on a worktree: the identity
/// ([`identity_env`]) and the configuration that switches off each program
/// the worktree's own git configuration could name (`.git/config` and what
/// it includes), given as `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_<n>`/
/// `GIT_CONFIG_VALUE_<n>`: that scope outranks the repository's, is handed
/// down to the gits a git starts (a hook's, a submodule's), and keeps the
/// values out of the process list. What the agent's HOME configures is kept:
/// its value wins over the neutral one (see [`overrides`]).
#[derive(Debug, Clone)]
pub struct GitEnv {
    vars: Vec<(String, OsString)>,
}

impl GitEnv {
    /// Reads HOME's global configuration and the names of the filter drivers
    /// configured for `dir` (the worktree, or the directory git runs in).
    /// An unreadable global configuration counts as empty (git itself then
    /// fails on it); drivers that cannot be listed are an error, as a driver
    /// left out would run.
    pub fn new(settings: &Settings, name: &str, dir: &Path) -> Result<GitEnv, String> {
        let base = identity_env(settings, name);
        let home = home_config(settings, dir, &base);
        let drivers = filter_drivers(settings, dir, &base)?;
        let mut vars = base;
        let pairs = overrides(&home, &drivers);
        // The engine's own `git -c` context, if any, would be read after
        // these and win: it is dropped.
        vars.push(("GIT_CONFIG_PARAMETERS".into(), OsString::new()));
        vars.push(("GIT_CONFIG_COUNT".into(), pairs.len().to_string().into()));
        for (i, (key, value)) in pairs.into_iter().enumerate() {
            vars.push((format!("GIT_CONFIG_KEY_{i}"), key.into()));
            vars.push((format!("GIT_CONFIG_VALUE_{i}"), value.into()));
        }
        Ok(GitEnv { vars })
    }

    /// The variables, as [`process::run`] takes them.
    pub fn vars(&self) -> Vec<(&str, OsString)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect()
    }
}

/// The configuration of HOME (git's "global" scope, with what it
/// includes), in git's order, as `(key, value)`; keys as git lists them
/// (section and name lower-cased). A key without a value has `None`.
type Entries = Vec<(String, Option<String>)>;

fn home_config(settings: &Settings, dir: &Path, env: &[(String, OsString)]) -> Entries {
    let argv = [
        "-C",
        &dir.to_string_lossy(),
        "config",
        "--global",
        "--includes",
        "-z",
        "--list",
    ]
    .map(str::to_owned);
    let env: Vec<(&str, OsString)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    match process::run("git", &argv, None, &env, settings.git_timeout) {
        Ok(out) if out.success() => parse_list(&out.stdout),
        _ => Vec::new(),
    }
}

/// `git config -z --list`: entries `key\nvalue\0`, or `key\0` when the key
/// has no value.
fn parse_list(out: &str) -> Entries {
    out.split('\0')
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once('\n') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (e.to_owned(), None),
        })
        .collect()
}

/// The filter drivers any configuration of `dir` names (every scope, with
/// includes): `filter.<driver>.clean|smudge|process|required`. Their names
/// are the repository's to choose, so each is switched off by name.
fn filter_drivers(
    settings: &Settings,
    dir: &Path,
    env: &[(String, OsString)],
) -> Result<Vec<String>, String> {
    let argv = [
        "-C",
        &dir.to_string_lossy(),
        "config",
        "--includes",
        "-z",
        "--name-only",
        "--get-regexp",
        r"^filter\.",
    ]
    .map(str::to_owned);
    let env: Vec<(&str, OsString)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let out = process::run("git", &argv, None, &env, settings.git_timeout)
        .map_err(|e| format!("git config (listing filter drivers) failed ({e})"))?;
    match out.code {
        Some(0) => Ok(driver_names(&out.stdout)),
        // No key matches.
        Some(1) => Ok(Vec::new()),
        _ => Err(format!(
            "git config (listing filter drivers) failed ({})",
            out.summary()
        )),
    }
}

fn driver_names(names: &str) -> Vec<String> {
    let mut drivers: Vec<String> = Vec::new();
    for key in names.split('\0').filter(|k| !k.is_empty()) {
        let Some(rest) = key.strip_prefix("filter.") else {
            continue;
        };
        let Some((driver, _)) = rest.rsplit_once('.') else {
            continue;
        };
        if !drivers.iter().any(|d| d == driver) {
            drivers.push(driver.to_owned());
        }
    }
    drivers
}

/// HOME's last value of `key` (lower-cased as git lists it).
fn home_value<'a>(home: &'a Entries, key: &str) -> Option<&'a str> {
    home.iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| v.as_deref())
}

/// The configuration every git of the engine gets, last (it wins over the
/// system's, HOME's and the repository's): `(key, value)` in order.
///
/// Kept from HOME when it sets them, else neutral: the hooks
/// (`core.hooksPath`, else `/dev/null`: no hook, `.git/hooks` included),
/// `core.fsmonitor` (false), signing (`commit.gpgSign`, `tag.gpgSign`,
/// `push.gpgSign` false; `gpg.format` openpgp; the programs git's defaults;
/// the ssh default-key command none), `core.sshCommand` (`ssh`),
/// `core.askPass` (none), the credential helpers (the list reset, then
/// HOME's, URL-scoped ones included) and each filter driver's
/// `clean`/`smudge`/`process` (none) and `required` (false).
///
/// Always, whatever HOME says: no pager and no editor (`cat`, `:`), no
/// external diff, no alternate-refs command, `protocol.ext.allow=never` (an
/// `ext::` URL runs a command), no automatic gc or maintenance, no
/// submodule recursion (a submodule's own configuration is not listed here).
fn overrides(home: &Entries, drivers: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut kept = |key: String, neutral: &str| {
        let value = home_value(home, &key).unwrap_or(neutral).to_owned();
        out.push((key, value));
    };
    for (parts, neutral) in KEPT {
        kept(key(parts), neutral);
    }
    for driver in drivers {
        for (var, neutral) in [
            ("clean", ""),
            ("smudge", ""),
            ("process", ""),
            ("required", "false"),
        ] {
            kept(key(&["filter", driver, var]), neutral);
        }
    }
    // `gpg.program` and `gpg.openpgp.program` are one setting: the last of
    // them read wins, so both get HOME's last.
    let openpgp = [
        key(&["gpg", "program"]),
        key(&["gpg", "openpgp", "program"]),
    ];
    let program = home
        .iter()
        .rev()
        .find(|(k, _)| openpgp.iter().any(|o| k.eq_ignore_ascii_case(o)))
        .and_then(|(_, v)| v.as_deref())
        .unwrap_or("gpg");
    for k in openpgp {
        out.push((k, program.to_owned()));
    }
    // An empty helper empties the list (URL-scoped helpers read before it
    // included); HOME's helpers follow, in HOME's order.
    out.push((key(&["credential", "helper"]), String::new()));
    for (k, value) in home {
        if k.starts_with("credential.")
            && k.ends_with(".helper")
            && let Some(value) = value
        {
            out.push((k.clone(), value.clone()));
        }
    }
    for (parts, value) in FORCED {
        out.push((key(parts), (*value).to_owned()));
    }
    out
}

/// A configuration key from its dot-separated parts.
fn key(parts: &[&str]) -> String {
    parts.join(".")
}

/// Settings that name (or enable) a program, kept from HOME when it sets
/// them, else given the neutral value: `(key parts, neutral)`.
const KEPT: &[(&[&str], &str)] = &[
    (&["core", "hooksPath"], "/dev/null"),
    (&["core", "fsmonitor"], "false"),
    (&["commit", "gpgSign"], "false"),
    (&["tag", "gpgSign"], "false"),
    (&["push", "gpgSign"], "false"),
    (&["gpg", "format"], "openpgp"),
    (&["gpg", "x509", "program"], "gpgsm"),
    (&["gpg", "ssh", "program"], "ssh-keygen"),
    (&["gpg", "ssh", "defaultKeyCommand"], ""),
    (&["core", "sshCommand"], "ssh"),
    (&["core", "askPass"], ""),
];

/// Settings given whatever HOME says: `(key parts, value)`.
const FORCED: &[(&[&str], &str)] = &[
    (&["core", "pager"], "cat"),
    (&["core", "editor"], ":"),
    (&["sequence", "editor"], ":"),
    (&["diff", "external"], ""),
    (&["core", "alternateRefsCommand"], ""),
    (&["protocol", "ext", "allow"], "never"),
    (&["gc", "auto"], "0"),
    (&["maintenance", "auto"], "false"),
    (&["submodule", "recurse"], "false"),
    (&["push", "recurseSubmodules"], "no"),
    (&["diff", "ignoreSubmodules"], "all"),
];

fn git(
    env: &GitEnv,
    worktree: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<process::Finished, String> {
    let mut argv = vec!["-C".to_owned(), worktree.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    process::run("git", &argv, None, &env.vars(), timeout).map_err(|e| e.to_string())
}

/// What publishing the deploy log came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `Ok` once the branch is on `origin`; else why not (commit or push).
    pub pushed: Result<(), String>,
    /// One line per step, for the report.
    pub notes: Vec<String>,
}

/// Commits the file at `rel` (relative to the worktree) **alone**, whatever
/// else is staged, and pushes the branch to `origin`. Git safety, as no value
/// from outside may steer git: `--` before every path, a full refspec for
/// the push, a branch that was validated as a branch name, and one git at a
/// time per worktree (items may share one; git's own `index.lock` would
/// otherwise fail all but one of them).
pub fn publish(
    settings: &Settings,
    worktree: &Path,
    rel: &Path,
    message: &str,
    branch: Option<&str>,
) -> Published {
    let mut notes = Vec::new();
    let pushed = match WorktreeLock::acquire(settings, worktree) {
        Ok(_lock) => GitEnv::new(settings, FINALIZER_NAME, worktree).and_then(|env| {
            commit_and_push(settings, &env, worktree, rel, message, branch, &mut notes)
        }),
        Err(e) => Err(e),
    };
    if let Err(why) = &pushed {
        notes.push(format!("not pushed: {why}"));
    }
    Published { pushed, notes }
}

fn commit_and_push(
    settings: &Settings,
    env: &GitEnv,
    worktree: &Path,
    rel: &Path,
    message: &str,
    branch: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let t = settings.git_timeout;
    let rel = rel.to_string_lossy();
    let step = |what: &str, out: Result<process::Finished, String>| match out {
        Ok(out) if out.success() => Ok(out),
        Ok(out) => Err(format!("git {what} failed ({})", out.summary())),
        Err(e) => Err(format!("git {what} failed ({e})")),
    };
    let branch = match branch {
        Some(b) => b.to_owned(),
        None => {
            let out = step(
                "symbolic-ref",
                git(env, worktree, &["symbolic-ref", "--short", "-q", "HEAD"], t),
            )
            .map_err(|e| format!("{e}: branch unknown, pass --branch"))?;
            out.stdout.trim().to_owned()
        }
    };
    // The worktree's own branch name is checked like a caller's.
    let branch = BranchName::new(&branch).map_err(|e| e.to_string())?;
    // The commit goes where HEAD is: pushing another branch would report a
    // push that never carried the log.
    let head = step(
        "symbolic-ref",
        git(env, worktree, &["symbolic-ref", "-q", "HEAD"], t),
    )?;
    if head.stdout.trim() != format!("refs/heads/{branch}") {
        return Err(format!(
            "the worktree {} is on {}, not on branch {branch}, so the log would not be on the pushed branch; check out {branch} there",
            worktree.display(),
            head.stdout.trim(),
        ));
    }
    clear_stale_index_lock(settings, env, worktree, notes)?;
    step("add", git(env, worktree, &["add", "--", &rel], t))?;
    // Nothing staged for this path: it was committed before (a retry).
    let staged = git(
        env,
        worktree,
        &[
            "diff",
            "--cached",
            "--quiet",
            "--no-ext-diff",
            "--no-textconv",
            "--",
            &rel,
        ],
        t,
    )?;
    if staged.code == Some(1) {
        step(
            "commit",
            git(
                env,
                worktree,
                &["commit", "-q", "-m", message, "--", &rel],
                t,
            ),
        )?;
        notes.push("git commit: done".to_owned());
    }
    // "Nothing to commit" and a commit that did not take the file (a path
    // git ignores, a nested repository) must not read as done: the committed
    // tree holds the log's exact bytes, or it is not recorded.
    let committed = git(
        env,
        worktree,
        &["ls-tree", "--object-only", "HEAD", "--", &rel],
        t,
    )?;
    let written = step(
        "hash-object",
        git(
            env,
            worktree,
            &["hash-object", "--no-filters", "--", &rel],
            t,
        ),
    )?;
    if !committed.success() || committed.stdout.trim().is_empty() {
        return Err(format!(
            "the deploy log {rel} is not in the committed tree (git ls-tree HEAD found nothing: is its directory ignored, or a nested repository?)"
        ));
    }
    if committed.stdout.trim() != written.stdout.trim() {
        return Err(format!(
            "the committed deploy log {rel} differs from the one written (blob {} committed, {} written)",
            committed.stdout.trim(),
            written.stdout.trim()
        ));
    }
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let receive_pack = receive_pack_option(env, worktree, t);
    match git(
        env,
        worktree,
        // git's own receive-pack: `remote.<name>.receivepack` is taken
        // from the first configuration that sets it, the repository's
        // before ours, so only the option overrides it.
        &["push", "-q", &receive_pack, "origin", &refspec],
        t,
    ) {
        Ok(out) if out.success() => {}
        Ok(out) => return Err(push_failure(&out, worktree, branch.as_str())),
        Err(e) => return Err(format!("git push failed ({e})")),
    }
    notes.push(format!("git push origin {branch}: done"));
    Ok(())
}

/// The `--receive-pack=...` option of a push to the worktree's `origin`
/// ([`receive_pack_for`] its push URL).
fn receive_pack_option(env: &GitEnv, worktree: &Path, t: Duration) -> String {
    let push_url = git(env, worktree, &["remote", "get-url", "--push", "origin"], t)
        .ok()
        .filter(process::Finished::success)
        .map(|out| out.stdout.trim().to_owned())
        .unwrap_or_default();
    format!("--receive-pack={}", receive_pack_for(&push_url))
}

/// `git push --dry-run origin refs/heads/<branch>:refs/heads/<branch>` from
/// the worktree, with the environment and the receive-pack of the
/// finalizer's push: whether that push would be accepted (reachable remote,
/// credentials, a fast-forward), without updating anything. `Ok` is what git
/// said about the ref.
pub fn push_dry_run(
    settings: &Settings,
    worktree: &Path,
    branch: &BranchName,
) -> Result<String, String> {
    if !worktree.is_dir() {
        return Err(format!("worktree {} does not exist", worktree.display()));
    }
    let t = settings.git_timeout;
    let env = GitEnv::new(settings, FINALIZER_NAME, worktree)?;
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let receive_pack = receive_pack_option(&env, worktree, t);
    match git(
        &env,
        worktree,
        &[
            "push",
            "--dry-run",
            "--porcelain",
            &receive_pack,
            "origin",
            &refspec,
        ],
        t,
    ) {
        Ok(out) if out.success() => {
            // `--porcelain`: one line per ref, `<flag>\t<from>:<to>\t<summary>`.
            let line = out
                .stdout
                .lines()
                .find(|l| l.contains(&refspec))
                .and_then(|l| l.rsplit('\t').next())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("accepted");
            Ok(line.to_owned())
        }
        Ok(out) => Err(push_failure(&out, worktree, branch.as_str())),
        Err(e) => Err(format!("git push failed ({e})")),
    }
}

/// Why a push failed, in git's own words: every line it wrote (a rejection
/// says which ref and why on its own line, after which `error:` and `hint:`
/// follow), bounded, and for a rejected update what to do about it.
fn push_failure(out: &process::Finished, worktree: &Path, branch: &str) -> String {
    const LIMIT: usize = 1200;
    let status = match out.code {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    let said: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut why: String = said.join(" | ").chars().take(LIMIT).collect();
    if why.is_empty() {
        why = "git said nothing".to_owned();
    }
    let rejected = said.iter().any(|l| {
        l.contains("[rejected]") || l.contains("non-fast-forward") || l.contains("fetch first")
    });
    let hint = if rejected {
        format!(
            "; the remote's {branch} has commits this worktree lacks: integrate them \
             (`git -C {} pull --rebase origin {branch}`), then poll again to retry the push",
            worktree.display()
        )
    } else {
        String::new()
    };
    format!("git push failed ({status}: {why}){hint}")
}

/// The receive-pack a push runs. A remote on this machine (a path or a
/// `file://` URL, which the worktree's own config may name) runs its
/// receive-pack here, as the engine's user, with that repository's config
/// and hooks (git clears our overrides for it): there it runs with no hooks,
/// no fsmonitor, no auto gc, no alternate-refs command and no checkout into
/// a work tree (a push to a checked-out branch is refused). A remote reached over ssh or http runs its
/// own server's programs, on that server: git's plain receive-pack.
fn receive_pack_for(push_url: &str) -> String {
    if !url_is_local(push_url) {
        return "git-receive-pack".to_owned();
    }
    let mut command = "git".to_owned();
    for (parts, value) in HOOKLESS_RECEIVE {
        command.push_str(&format!(" -c {}={value}", key(parts)));
    }
    command.push_str(" receive-pack");
    command
}

/// What a local remote's receive-pack runs with: `(key parts, value)`.
const HOOKLESS_RECEIVE: &[(&[&str], &str)] = &[
    (&["core", "hooksPath"], "/dev/null"),
    (&["core", "fsmonitor"], "false"),
    (&["receive", "autogc"], "false"),
    // Advertising the refs of the remote's alternates would run it.
    (&["core", "alternateRefsCommand"], ""),
    // `updateInstead` checks the pushed commit out in the remote's work
    // tree, through that repository's filters.
    (&["receive", "denyCurrentBranch"], "refuse"),
];

/// git's own rule: a `file://` URL, or a path, which is anything with no
/// `scheme://` and no `host:` before its first slash. An unreadable URL
/// counts as local: the safe side.
fn url_is_local(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme.eq_ignore_ascii_case("file");
    }
    match (url.find(':'), url.find('/')) {
        (None, _) => true,
        (Some(colon), Some(slash)) => slash < colon,
        (Some(_), None) => false,
    }
}

/// A git killed mid-commit (with the engine, kill -9) leaves
/// `.git/index.lock`, and every later git on the worktree fails. Holding the
/// worktree's own lock, the engine knows none of its gits runs there; a lock
/// older than the git timeout that no process holds open was left by a dead
/// git, and is removed (said in the report). Otherwise the error names it
/// and the exact command.
fn clear_stale_index_lock(
    settings: &Settings,
    env: &GitEnv,
    worktree: &Path,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let out = git(
        env,
        worktree,
        &["rev-parse", "--absolute-git-dir"],
        settings.git_timeout,
    )?;
    if !out.success() {
        return Ok(());
    }
    let lock = Path::new(out.stdout.trim()).join("index.lock");
    let Ok(meta) = std::fs::symlink_metadata(&lock) else {
        return Ok(());
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .unwrap_or_default();
    let remove = format!("rm -- '{}'", lock.display());
    if age < settings.git_timeout {
        return Err(format!(
            "{} exists ({} s old): another git is using the worktree; the next poll retries (if no git runs there, `{remove}`)",
            lock.display(),
            age.as_secs()
        ));
    }
    if let Some(pid) = process::holder_of(&lock) {
        return Err(format!(
            "{} is held open by process {pid}: a git still uses the worktree; the next poll retries (once it is gone, or if it is not git, `{remove}`)",
            lock.display()
        ));
    }
    std::fs::remove_file(&lock).map_err(|e| {
        format!(
            "{} is stale ({} s old, no process holds it) but cannot be removed: {e}; run `{remove}`",
            lock.display(),
            age.as_secs()
        )
    })?;
    notes.push(format!(
        "removed a stale {} ({} s old, no process held it: a git killed mid-commit left it)",
        lock.display(),
        age.as_secs()
    ));
    Ok(())
}

/// One git at a time per worktree: an exclusive flock on a file named after
/// the worktree's canonical path, under REPOS_DIR (outside any worktree).
struct WorktreeLock {
    _file: std::fs::File,
}

impl WorktreeLock {
    fn acquire(settings: &Settings, worktree: &Path) -> Result<WorktreeLock, String> {
        use sha2::Digest as _;
        let canonical = worktree
            .canonicalize()
            .map_err(|e| format!("worktree {}: {e}", worktree.display()))?;
        let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        let path = settings
            .repos_dir
            .join(".selfdeploy/git-locks")
            .join(format!("{}.lock", hex::encode(&digest[..12])));
        let lock = crate::store::ItemLock::acquire(&path, settings.lock_timeout)
            .map_err(|e| format!("git lock of {}: {e}", canonical.display()))?;
        Ok(WorktreeLock {
            _file: lock.into_file(),
        })
    }
}

/// Whether `worktree` is a directory inside a git work tree (the dispatch's
/// worktree guard: a deploy never starts that could not be recorded).
pub fn work_tree(settings: &Settings, worktree: &Path) -> Result<(), String> {
    if !worktree.is_dir() {
        return Err(format!("worktree {} does not exist", worktree.display()));
    }
    let env = GitEnv::new(settings, FINALIZER_NAME, worktree)?;
    let out = git(
        &env,
        worktree,
        &["rev-parse", "--is-inside-work-tree"],
        settings.git_timeout,
    )?;
    if out.success() && out.stdout.trim() == "true" {
        Ok(())
    } else {
        Err(format!(
            "{} is not a git work tree ({})",
            worktree.display(),
            out.summary()
        ))
    }
}

/// The ref HEAD names in the worktree (`refs/heads/<branch>`); an error
/// when HEAD is detached.
pub fn head_ref(settings: &Settings, worktree: &Path) -> Result<String, String> {
    let env = GitEnv::new(settings, FINALIZER_NAME, worktree)?;
    let out = git(
        &env,
        worktree,
        &["symbolic-ref", "--quiet", "HEAD"],
        settings.git_timeout,
    )?;
    let head = out.stdout.trim();
    if out.success() && !head.is_empty() {
        Ok(head.to_owned())
    } else if out.code == Some(1) {
        Err("HEAD is detached".to_owned())
    } else {
        Err(format!("git symbolic-ref HEAD failed: {}", out.summary()))
    }
}

/// The commit at the tip of `branch` (or HEAD) in the worktree.
pub fn branch_tip(
    settings: &Settings,
    worktree: &Path,
    branch: Option<&str>,
) -> Result<String, String> {
    if !worktree.is_dir() {
        return Err(format!("worktree {} does not exist", worktree.display()));
    }
    // A tag named like the branch wins over it in git's lookup: the branch
    // is named by its full ref.
    let rev = match branch {
        Some(branch) => format!("refs/heads/{branch}^{{commit}}"),
        None => "HEAD^{commit}".to_owned(),
    };
    let env = GitEnv::new(settings, FINALIZER_NAME, worktree)?;
    let out = git(
        &env,
        worktree,
        &["rev-parse", "--verify", "--quiet", &rev],
        settings.git_timeout,
    )?;
    let sha = out.stdout.trim();
    if out.success() && !sha.is_empty() {
        Ok(sha.to_owned())
    } else {
        Err(format!(
            "git rev-parse {} in {} found no commit",
            branch.unwrap_or("HEAD"),
            worktree.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rejected push keeps git's whole reason, not only its first line,
    /// and says how to integrate the branch.
    #[test]
    fn a_rejected_push_says_why_and_what_to_do() {
        let out = process::Finished {
            code: Some(1),
            stdout: String::new(),
            stderr: "To ../remote.git\n ! [rejected]        deploy/W-1 -> deploy/W-1 (fetch first)\nerror: failed to push some refs to '../remote.git'\nhint: Updates were rejected because the remote contains work that you do not\n".into(),
        };
        let why = push_failure(&out, Path::new("/wt"), "deploy/W-1");
        assert!(why.contains("! [rejected]"), "{why}");
        assert!(why.contains("(fetch first)"), "{why}");
        assert!(why.contains("failed to push some refs"), "{why}");
        assert!(
            why.contains("git -C /wt pull --rebase origin deploy/W-1"),
            "{why}"
        );
        let other = process::Finished {
            code: Some(128),
            stdout: String::new(),
            stderr: "fatal: could not read from remote repository\n".into(),
        };
        let why = push_failure(&other, Path::new("/wt"), "b");
        assert!(
            why.contains("exit status 128: fatal: could not read"),
            "{why}"
        );
        assert!(!why.contains("pull --rebase"), "{why}");
    }

    #[test]
    fn only_a_remote_on_this_machine_gets_the_hookless_receive_pack() {
        for local in [
            "",
            "../remote.git",
            "remote.git",
            "file://../remote.git",
            "FILE:///x",
            "./a:b",
        ] {
            assert!(url_is_local(local), "{local}");
            assert!(receive_pack_for(local).contains("hooksPath=/dev/null"));
        }
        for remote in [
            "deploy-host:org/repo.git",
            "ssh://deploy-host/org/repo.git",
            "https://deploy-host/org/repo.git",
            "host:repo",
        ] {
            assert!(!url_is_local(remote), "{remote}");
            assert_eq!(receive_pack_for(remote), "git-receive-pack");
        }
    }

    fn entries(pairs: &[(&[&str], &str)]) -> Entries {
        pairs
            .iter()
            .map(|(k, v)| (key(k), Some((*v).to_owned())))
            .collect()
    }

    fn value<'a>(out: &'a [(String, String)], parts: &[&str]) -> Vec<&'a str> {
        let k = key(parts);
        out.iter()
            .filter(|(o, _)| *o == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn with_nothing_in_home_every_program_is_switched_off() {
        let out = overrides(&Vec::new(), &["Lfs".to_owned()]);
        for (parts, neutral) in [
            (&["core", "hooksPath"][..], "/dev/null"),
            (&["core", "fsmonitor"], "false"),
            (&["commit", "gpgSign"], "false"),
            (&["tag", "gpgSign"], "false"),
            (&["push", "gpgSign"], "false"),
            (&["gpg", "program"], "gpg"),
            (&["gpg", "openpgp", "program"], "gpg"),
            (&["gpg", "ssh", "defaultKeyCommand"], ""),
            (&["core", "sshCommand"], "ssh"),
            (&["core", "askPass"], ""),
            (&["credential", "helper"], ""),
            (&["core", "pager"], "cat"),
            (&["core", "editor"], ":"),
            (&["sequence", "editor"], ":"),
            (&["diff", "external"], ""),
            (&["core", "alternateRefsCommand"], ""),
            (&["protocol", "ext", "allow"], "never"),
            (&["gc", "auto"], "0"),
            (&["filter", "Lfs", "clean"], ""),
            (&["filter", "Lfs", "smudge"], ""),
            (&["filter", "Lfs", "process"], ""),
            (&["filter", "Lfs", "required"], "false"),
        ] {
            assert_eq!(value(&out, parts), [neutral], "{parts:?}");
        }
    }

    #[test]
    fn what_home_configures_is_kept() {
        let url_helper = key(&["credential", "https://example", "test", "helper"]);
        let mut home = entries(&[
            (&["core", "hookspath"], "~/hooks"),
            (&["core", "sshcommand"], "ssh -i key"),
            (&["credential", "helper"], "store"),
            (&["gpg", "program"], "gpg2"),
            (&["filter", "lfs", "clean"], "git-lfs clean -- %f"),
            (&["protocol", "ext", "allow"], "always"),
            (&["core", "pager"], "less"),
        ]);
        home.insert(3, (url_helper.clone(), Some("cache".to_owned())));
        let out = overrides(&home, &["lfs".to_owned()]);
        assert_eq!(value(&out, &["core", "hooksPath"]), ["~/hooks"]);
        assert_eq!(value(&out, &["core", "sshCommand"]), ["ssh -i key"]);
        assert_eq!(value(&out, &["gpg", "openpgp", "program"]), ["gpg2"]);
        assert_eq!(
            value(&out, &["filter", "lfs", "clean"]),
            ["git-lfs clean -- %f"]
        );
        assert_eq!(value(&out, &["filter", "lfs", "smudge"]), [""]);
        // The list is emptied first, then HOME's helpers in HOME's order.
        let helpers: Vec<(&str, &str)> = out
            .iter()
            .filter(|(k, _)| k.starts_with("credential"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let generic = key(&["credential", "helper"]);
        assert_eq!(
            helpers,
            [
                (generic.as_str(), ""),
                (generic.as_str(), "store"),
                (url_helper.as_str(), "cache"),
            ]
        );
        // Never HOME's: ext stays forbidden, no pager.
        assert_eq!(value(&out, &["protocol", "ext", "allow"]), ["never"]);
        assert_eq!(value(&out, &["core", "pager"]), ["cat"]);
    }

    #[test]
    fn git_config_listings_parse() {
        assert_eq!(
            parse_list("a.b\nfalse\0c.d\0e.f.g\nx\ny\0"),
            vec![
                ("a.b".to_owned(), Some("false".to_owned())),
                ("c.d".to_owned(), None),
                ("e.f.g".to_owned(), Some("x\ny".to_owned())),
            ]
        );
        let names = [
            key(&["filter", "a", "clean"]),
            key(&["filter", "a", "required"]),
            key(&["filter", "B.c", "process"]),
        ]
        .join("\0");
        assert_eq!(driver_names(&names), ["a", "B.c"]);
    }
}
