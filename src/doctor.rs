//! `selfdeploy doctor`: the smoke procedure of a new installation as one
//! command. Each check passes, fails (why, and what to do) or is skipped
//! because a check it needs failed (or, for the worktree and its push dry
//! run, because no worktree was given); each is reported as soon as it ends.
//!
//! The host is probed once, with a short connect timeout, before any check
//! that needs it: an unreachable host is one failure, not three failures
//! with the wrong advice after three ssh timeouts.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::atomic;
use crate::config::Settings;
use crate::contract::names::BranchName;
use crate::contract::remote::{self, shell_quote};
use crate::exec::{git, process};

/// The longest the reachability probe waits for the connection (ssh's
/// `ConnectTimeout`), or the ssh timeout setting when that is shorter.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not run: a check it needs failed, or (the worktree checks) nothing
    /// was given to check; the reason says which.
    Skip,
}

impl Status {
    /// `PASS`, `FAIL`, `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// How long the check ran; 0 for a skipped one.
    pub duration_ms: u64,
    /// What was found; for a skipped check, why it was not run.
    pub detail: String,
    /// What to do; only for a failed check.
    pub fix: Option<String>,
}

/// What a check found.
enum Outcome {
    Pass(String),
    Fail(String, String),
    Skip(String),
}

fn pass(detail: String) -> Outcome {
    Outcome::Pass(detail)
}

fn fail(detail: String, fix: &str) -> Outcome {
    Outcome::Fail(detail, fix.to_owned())
}

/// The worktree doctor checks (`--worktree`, or the worktree template
/// rendered for `--repo --work-item`) and the branch its HEAD must name.
#[derive(Debug, Clone)]
pub struct Worktree {
    pub path: PathBuf,
    pub branch: Option<BranchName>,
}

/// Runs the checks one by one, timing each and reporting it as it ends.
struct Runner<'a> {
    report: &'a mut dyn FnMut(&Check),
    checks: Vec<Check>,
}

impl Runner<'_> {
    fn check(&mut self, name: &'static str, run: impl FnOnce() -> Outcome) -> Status {
        let start = Instant::now();
        let outcome = run();
        let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, detail, fix) = match outcome {
            Outcome::Pass(detail) => (Status::Pass, detail, None),
            Outcome::Fail(detail, fix) => (Status::Fail, detail, Some(fix)),
            Outcome::Skip(why) => (Status::Skip, why, None),
        };
        let check = Check {
            name,
            status,
            duration_ms: if status == Status::Skip {
                0
            } else {
                duration_ms
            },
            detail,
            fix,
        };
        (self.report)(&check);
        self.checks.push(check);
        status
    }
}

/// Runs every check, calling `report` with each as soon as it ends, and
/// returns them all; `config_problems` are what `config --check` found.
pub fn run(
    settings: &Settings,
    config_problems: &[String],
    worktree: Option<&Worktree>,
    report: &mut dyn FnMut(&Check),
) -> Vec<Check> {
    let mut r = Runner {
        report,
        checks: Vec::new(),
    };
    r.check("configuration", || {
        if config_problems.is_empty() {
            pass("every setting is valid".into())
        } else {
            fail(
                config_problems.join("; "),
                "run `selfdeploy config --check --strict` and fix each problem and warning (a misspelled name sets nothing: correct it to the setting named)",
            )
        }
    });

    let program = settings.transport.program();
    let mut transport = Ok(());
    r.check("transport program", || match process::find(program) {
        Ok(path) => pass(format!("{program} is {}", path.display())),
        Err(e) => {
            transport = Err(e.to_string());
            fail(
                e.to_string(),
                "install it (openssh-client for ssh) or fix PATH",
            )
        }
    });
    let has_git = r.check("git", || match process::find("git") {
        Ok(path) => pass(format!("git is {}", path.display())),
        Err(e) => fail(e.to_string(), "install git or fix PATH"),
    }) == Status::Pass;

    let token = token();
    let probe_dir = settings.repos_dir.join(".selfdeploy").join("doctor");
    let probe = probe_dir.join(format!("probe-{token}"));
    // Files under REPOS_DIR are created by its owner alone: as anybody
    // else, doctor writes nothing there either.
    let owned = r.check("REPOS_DIR owner", || {
        if !settings.repos_dir.is_dir() {
            return Outcome::Skip("REPOS_DIR is not a directory".into());
        }
        match crate::engine::check_owner(settings) {
            Ok(()) => pass(format!(
                "{} belongs to this user ({})",
                settings.repos_dir.display(),
                crate::store::owner::user_name(
                    // SAFETY: geteuid cannot fail.
                    unsafe { libc::geteuid() }
                )
            )),
            Err(e) => fail(
                e.to_string(),
                "run selfdeploy as the owner of REPOS_DIR (the service user)",
            ),
        }
    }) != Status::Fail;
    // An unmounted share is an empty directory that exists: without its
    // identity, nothing is written there (it would land on the wrong disk).
    let identified = r.check("REPOS_DIR identity", || {
        if let Err(e) = crate::engine::check_repos_dir_exists(settings) {
            return fail(
                e.to_string(),
                "mount the shared directory at REPOS_DIR (or fix REPOS_DIR); if it is new, run `selfdeploy init` once",
            );
        }
        match crate::store::identity::read(&settings.repos_dir) {
            Ok(identity) => pass(format!(
                "{} has identity {} (made {} by {})",
                settings.repos_dir.display(),
                identity.id,
                identity.created_at,
                identity.created_by
            )),
            Err(e @ crate::store::identity::IdentityError::Missing { .. }) => fail(
                e.to_string(),
                "mount the shared directory at REPOS_DIR; if it is mounted and new, run `selfdeploy init` once",
            ),
            Err(e) => fail(
                e.to_string(),
                "restore the identity file, or move it away and run `selfdeploy init`",
            ),
        }
    }) == Status::Pass;
    let writable = r.check("REPOS_DIR writable", || {
        if !owned {
            return Outcome::Skip(
                "needs the owner of REPOS_DIR: nothing is written as another user".into(),
            );
        }
        if !identified {
            return Outcome::Skip(
                "needs REPOS_DIR's identity: nothing is written where the share may not be mounted"
                    .into(),
            );
        }
        let written = if settings.repos_dir.is_dir() {
            atomic::create_dir_all(&probe_dir)
                .and_then(|()| atomic::write(&probe, token.as_bytes()))
        } else {
            Err(std::io::Error::other(
                "it does not exist (is the shared directory mounted?)",
            ))
        };
        match written {
            Ok(()) => pass(format!("wrote {}", probe.display())),
            Err(e) => fail(
                format!("cannot write {}: {e}", probe.display()),
                "create REPOS_DIR and make it writable by the engine's user",
            ),
        }
    }) == Status::Pass;

    // The branch the push dry run pushes, once the worktree check passed.
    let mut push_branch: Result<BranchName, String> =
        Err("needs the worktree check to pass".to_owned());
    r.check("worktree", || {
        let Some(wt) = worktree else {
            return Outcome::Skip(
                "give --worktree PATH [--branch B] (or --repo R --work-item W) to check a worktree"
                    .into(),
            );
        };
        if !has_git {
            return Outcome::Skip("needs git".into());
        }
        let shown = wt.path.display();
        if let Err(why) = git::work_tree(settings, &wt.path) {
            return fail(
                why,
                "give the worktree of the work item (--worktree, or fix SELF_DEPLOY_WORKTREE),                  or create it (`git worktree add`)",
            );
        }
        let head = git::head_ref(settings, &wt.path);
        match (&wt.branch, head) {
            (Some(branch), Ok(head)) if head == format!("refs/heads/{branch}") => {
                push_branch = Ok(branch.clone());
                pass(format!("{shown} is a git work tree on {head}"))
            }
            (Some(branch), head) => fail(
                format!(
                    "{shown} is a git work tree, but {}, not on refs/heads/{branch}",
                    match head {
                        Ok(head) => format!("on {head}"),
                        Err(why) => why,
                    }
                ),
                "check the branch out in the worktree (`git switch <branch>`), or give the branch \
                 it is on",
            ),
            (None, Ok(head)) => {
                push_branch = head
                    .strip_prefix("refs/heads/")
                    .ok_or_else(|| format!("HEAD names {head}, not a branch"))
                    .and_then(|b| BranchName::new(b).map_err(|e| e.to_string()));
                pass(format!("{shown} is a git work tree on {head}"))
            }
            (None, Err(why)) => {
                push_branch = Err(format!("{why}: give --branch B"));
                pass(format!("{shown} is a git work tree ({why})"))
            }
        }
    });
    r.check("push dry run", || {
        let (Some(wt), Ok(branch)) = (worktree, &push_branch) else {
            return Outcome::Skip(match &push_branch {
                Err(why) => why.clone(),
                Ok(_) => "needs a worktree".to_owned(),
            });
        };
        match git::push_dry_run(settings, &wt.path, branch) {
            Ok(said) => pass(format!(
                "git push --dry-run origin refs/heads/{branch}:refs/heads/{branch} from {}: {said}",
                wt.path.display()
            )),
            Err(why) => fail(
                format!("{why} (a dry run from {})", wt.path.display()),
                "make the finalizer's push work as the engine's user: origin's URL \
                 (`git remote get-url --push origin`), its credentials under the agent's HOME, \
                 and a branch that fast-forwards origin's",
            ),
        }
    });

    // Why the checks that need the host cannot run, if they cannot.
    let mut host_down: Option<String> = None;
    r.check("host reachable", || match &transport {
        Err(why) => {
            host_down = Some(why.clone());
            Outcome::Skip(format!("needs the transport program: {why}"))
        }
        Ok(()) => match reach(settings) {
            Ok(detail) => pass(detail),
            Err(why) => {
                let target = settings.transport.target(settings);
                host_down = Some(format!("{program} to {target} failed"));
                fail(
                    format!("{program} to {target} failed: {why}"),
                    "check that the host is up and DEPLOY_SSH_HOST names it, that its sshd \
                     listens on the port ssh uses (22 unless ~/.ssh/config says otherwise), \
                     that the key of the engine's user is authorized for DEPLOY_SSH_USER \
                     (doctor never answers a password prompt), and that known_hosts holds \
                     no other key for the host",
                )
            }
        },
    });

    let host_probe_dir = Path::new(&settings.host_repos_dir)
        .join(".selfdeploy")
        .join("doctor");
    let on_host = |what: &str| -> Result<String, String> {
        let argv = remote::dispatch_argv(settings, what.to_owned());
        match process::run(&argv[0], &argv[1..], None, &[], settings.ssh_timeout) {
            Ok(out) if out.success() => Ok(out.stdout),
            Ok(out) => Err(out.summary()),
            Err(e) => Err(e.to_string()),
        }
    };
    // The exit status (when there is one) and the summary of a failure.
    let on_host_status = |what: &str| -> Result<(), (Option<i32>, String)> {
        let argv = remote::dispatch_argv(settings, what.to_owned());
        match process::run(&argv[0], &argv[1..], None, &[], settings.ssh_timeout) {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err((out.code, out.summary())),
            Err(e) => Err((None, e.to_string())),
        }
    };
    let where_ = settings.transport.place(settings);
    let needs_host = |why: &str| Outcome::Skip(format!("needs the host: {why}"));

    let host_probe = host_probe_dir.join(format!("probe-{token}"));
    r.check("shared mount", || {
        if let Some(why) = &host_down {
            return needs_host(why);
        }
        if !writable {
            return Outcome::Skip("needs REPOS_DIR writable: no probe file was written".into());
        }
        match on_host(&format!(
            "cat {}",
            shell_quote(&host_probe.to_string_lossy())
        )) {
            Ok(seen) if seen.trim() == token => pass(format!(
                "{} {where_} shows the probe written under REPOS_DIR",
                host_probe.display()
            )),
            Ok(seen) => fail(
                format!(
                    "{} {where_} holds {:?}, not the probe",
                    host_probe.display(),
                    seen.trim()
                ),
                "HOST_REPOS_DIR must be the same directory as REPOS_DIR, seen from the host",
            ),
            Err(why) => fail(
                format!("{} is not readable {where_}: {why}", host_probe.display()),
                "HOST_REPOS_DIR must be the same directory as REPOS_DIR, seen from the host; \
                 check ssh access",
            ),
        }
    });

    r.check("hook on host", || {
        if let Some(why) = &host_down {
            return needs_host(why);
        }
        // The wrapper runs `bash <hook>`: a readable regular file is enough,
        // it need not be executable.
        let hook = shell_quote(&settings.hook_script);
        let hook_test = format!(
            "cd {} || exit 3; if [ ! -e {hook} ]; then exit 4; elif [ ! -f {hook} ]; then exit 5; \
             elif [ ! -r {hook} ]; then exit 6; fi",
            shell_quote(&settings.host_repo_path),
        );
        let (hook, dir) = (&settings.hook_script, &settings.host_repo_path);
        match on_host_status(&hook_test) {
            Ok(()) => pass(format!(
                "{hook} is a readable regular file in {dir} {where_} (the wrapper runs `bash {hook}`)"
            )),
            Err((Some(5), _)) => fail(
                format!("{hook} in {dir} {where_} is not a regular file"),
                "fix DEPLOY_HOOK_SCRIPT: it names the hook script the wrapper runs with bash",
            ),
            Err((Some(6), _)) => fail(
                format!("{hook} in {dir} {where_} is not readable by the ssh user"),
                "make the hook readable by the ssh user (the wrapper runs `bash <hook>`: \
                 readable suffices)",
            ),
            Err((Some(4), _)) => fail(
                format!("{hook} not found in {dir} {where_}"),
                "fix DEPLOY_HOST_REPO_PATH or DEPLOY_HOOK_SCRIPT, or install the hook",
            ),
            Err((_, why)) => fail(
                format!("{hook} not found in {dir} {where_}: {why}"),
                "fix DEPLOY_HOST_REPO_PATH or DEPLOY_HOOK_SCRIPT, or install the hook",
            ),
        }
    });

    let host_written = host_probe_dir.join(format!("host-{token}"));
    let local_view = probe_dir.join(format!("host-{token}"));
    r.check("host writes state", || {
        if let Some(why) = &host_down {
            return needs_host(why);
        }
        // Without REPOS_DIR (and its probe directory) here, what the host
        // writes cannot be looked for: a failure would blame permissions.
        if !writable {
            return Outcome::Skip(
                "needs REPOS_DIR writable: there is nowhere to look for what the host writes"
                    .into(),
            );
        }
        let write = format!(
            "echo {token} > {}",
            shell_quote(&host_written.to_string_lossy())
        );
        match on_host(&write) {
            Ok(_) if fs::read_to_string(&local_view).is_ok_and(|s| s.trim() == token) => {
                pass(format!(
                    "the host wrote {} and the engine reads it",
                    host_written.display()
                ))
            }
            Ok(_) => fail(
                format!(
                    "the host wrote {} but the engine does not see it at {}",
                    host_written.display(),
                    local_view.display()
                ),
                "HOST_REPOS_DIR must be the same directory as REPOS_DIR, seen from the host",
            ),
            Err(why) => fail(
                format!("the host cannot write {}: {why}", host_written.display()),
                "give the ssh user write access to the state directory on the host",
            ),
        }
    });

    r.check("docker on host", || {
        if let Some(why) = &host_down {
            return needs_host(why);
        }
        match on_host(&format!(
            "docker version --format {}",
            shell_quote("{{.Server.Version}}")
        )) {
            Ok(version) if !version.trim().is_empty() => pass(format!(
                "docker answers {where_}: server version {}",
                version.trim()
            )),
            Ok(_) => fail(
                format!("docker {where_} names no server version"),
                "start the docker engine on the host and let the ssh user use it",
            ),
            Err(why) => fail(
                format!("docker does not answer {where_}: {why}"),
                "install and start the docker engine on the host, and let the ssh user use it \
                 (the docker group, or the socket's permissions)",
            ),
        }
    });

    let _ = fs::remove_file(&probe);
    let _ = fs::remove_file(&local_view);
    r.checks
}

/// Runs `true` on the host through the transport's probe argv, connecting
/// for at most [`CONNECT_TIMEOUT`] (or the ssh timeout when shorter). The
/// error is the transport's own last word: ssh's last line of stderr.
fn reach(settings: &Settings) -> Result<String, String> {
    let connect = CONNECT_TIMEOUT.min(settings.ssh_timeout);
    let argv = settings.transport.probe_argv(settings, connect);
    match process::run(&argv[0], &argv[1..], None, &[], settings.ssh_timeout) {
        Ok(out) if out.success() => {
            Ok(format!("ran `true` {}", settings.transport.place(settings)))
        }
        Ok(out) => Err(last_line(&out.stderr).unwrap_or_else(|| out.summary())),
        Err(e) => Err(e.to_string()),
    }
}

/// The last non-empty line of `text`, trimmed and at most 200 characters.
fn last_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

/// A value no stale file can hold by chance.
fn token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}
