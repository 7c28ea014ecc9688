//! The subcommands, one file each.

/// Writes a line to stdout without ever panicking: a full disk or a closed
/// pipe behind stdout must not turn an event that acted into a crash (its
/// report is in the history anyway). A failed write is remembered and said
/// once on stderr before exit.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `outln!` without the line end.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

static STDOUT_FAILED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        let _ = STDOUT_FAILED.set(e.to_string());
    }
}

/// Writes bytes to stdout as they are (a hook's output need not be UTF-8);
/// a failed write is an error of the read command.
pub fn write_stdout_bytes(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::io::stdout().lock().write_all(bytes)
}

impl Cli {
    /// Whether the command acts (its exit code tells what it did, printed or
    /// not); a read command whose output is lost has failed.
    pub fn acts(&self) -> bool {
        matches!(
            self.command,
            Command::Event(_)
                | Command::Watch(_)
                | Command::Init(_)
                | Command::Lock(_)
                | Command::Unlock(_)
        )
    }
}

/// Flushes stdout; the error of any write to it that failed.
pub fn stdout_failure() -> Option<String> {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().flush() {
        let _ = STDOUT_FAILED.set(e.to_string());
    }
    STDOUT_FAILED.get().cloned()
}

mod completions;
mod config;
mod demo;
mod doctor;
mod event;
mod explain;
mod gen_secrets;
mod history;
mod init;
mod lock;
mod logs;
mod machine;
mod man;
mod replay;
mod snapshot;
mod status;
mod watch;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use selfdeploy::config::Settings;
use selfdeploy::contract::names::{RepoName, WorkItem};
use selfdeploy::engine;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
/// The event ran (its report says how) but its history entry could not be
/// appended: it is kept and written by the next event or watch pass.
pub const EXIT_UNRECORDED: u8 = 4;
/// An error after the event had changed something: the message says what.
pub const EXIT_ERROR_AFTER_CHANGE: u8 = 5;
/// A signal stopped the event before it acted: nothing done.
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "selfdeploy",
    version,
    about = "Deploys a service that cannot restart itself: a persisted state machine with a human approval in the loop"
)]
pub struct Cli {
    /// Read settings from this env file (default: the file SELFDEPLOY_ENV_FILE names, else ./.env, else the system env file); the environment still wins.
    #[arg(long, global = true, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Log less: errors only (and no warnings about the settings).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log more: -v for each step, -vv for everything (RUST_LOG, when set, wins).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deliver one event to a work item's machine.
    Event(event::Args),
    /// Show why an event would be accepted or refused now; changes nothing.
    Explain(explain::Args),
    /// Show the state of one work item, or of all of them.
    Status(status::Args),
    /// Show what happened to a work item, or to all of them (an audit trail).
    History(history::Args),
    /// Show the hook's output of a work item's run (and follow it).
    Logs(logs::Args),
    /// Show every setting, its value and where it came from.
    Config(config::Args),
    /// Print fresh values for the secret settings, or add the missing ones to an env file.
    GenSecrets(gen_secrets::Args),
    /// Check that this installation can deploy: settings, tools, the shared mount, the hook.
    Doctor(doctor::Args),
    /// Lock a repo against deploys (a deploy freeze), with a message.
    Lock(lock::LockArgs),
    /// Lift a repo's deploy freeze.
    Unlock(lock::UnlockArgs),
    /// Give REPOS_DIR the identity every command requires (once, after mounting it).
    Init(init::Args),
    /// Run a whole deploy in a throwaway sandbox on this machine.
    Demo(demo::Args),
    /// Print the machine's transition table (or diagram).
    Machine(machine::Args),
    /// Replay recorded fixtures offline (no ssh, no git) and check them.
    Replay(replay::Args),
    /// Print one work item's live state as a fixture for `replay`.
    Snapshot(snapshot::Args),
    /// Finalize each deploy as soon as its result is written, until SIGTERM.
    Watch(watch::Args),
    /// Print a shell completion script.
    Completions(completions::Args),
    /// Print the manual page (roff).
    Man(man::Args),
}

impl Cli {
    /// The log filter the flags ask for: `watch`, a daemon, says what it
    /// does at info level; every other command speaks up only for warnings.
    pub fn log_filter(&self) -> String {
        const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
        let base: i32 = if matches!(self.command, Command::Watch(_)) {
            2
        } else {
            1
        };
        let level = (base + i32::from(self.verbose) - i32::from(self.quiet)).clamp(0, 4);
        let level = LEVELS[level as usize];
        match level {
            // Other crates' debug output is noise even at -vv.
            "debug" | "trace" => format!("warn,selfdeploy={level}"),
            // The watch says what it did in its own lines; the engine's line
            // per event (a failing poll's at every retry) waits for -v.
            "info" if self.verbose == 0 => "info,selfdeploy::engine=warn".to_owned(),
            _ => level.to_owned(),
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let quiet = cli.quiet;
    let settings = || -> anyhow::Result<Settings> {
        let settings = Settings::load(cli.env_file.as_deref()).context("bad configuration")?;
        if !quiet {
            for warning in &settings.warnings {
                eprintln!("selfdeploy: warning: {warning}");
            }
        }
        Ok(settings)
    };
    // Commands that read the state: an unmounted share is an error, never an
    // empty list.
    let state = || -> anyhow::Result<Settings> {
        let settings = settings()?;
        engine::check_repos_dir(&settings)?;
        Ok(settings)
    };
    match cli.command {
        Command::Event(args) => event::run(&settings()?, args),
        Command::Explain(args) => explain::run(&settings()?, args),
        Command::Status(args) => status::run(&state()?, args),
        Command::History(args) => history::run(&state()?, args),
        Command::Logs(args) => logs::run(&state()?, args),
        Command::Config(args) => config::run(cli.env_file.as_deref(), quiet, args),
        Command::GenSecrets(args) => gen_secrets::run(args),
        Command::Doctor(args) => doctor::run(cli.env_file.as_deref(), args),
        Command::Init(args) => init::run(&settings()?, args),
        Command::Lock(args) => lock::lock(&settings()?, args),
        Command::Unlock(args) => lock::unlock(&settings()?, args),
        Command::Demo(args) => demo::run(args),
        Command::Machine(args) => machine::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Snapshot(args) => snapshot::run(&state()?, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Watch(args) => {
            let settings = state()?;
            let problems = settings.acting_problems();
            if !problems.is_empty() {
                return Err(engine::EngineError::Settings(problems).into());
            }
            // The owner first: a probe written as another user is what
            // acting commands never do.
            engine::check_owner(&settings)?;
            engine::check_writable(&settings)?;
            watch::run(settings, args)
        }
    }
}

/// A value parser for a closed set of names: `parse` checks a value (and
/// words its error), `names` lists the set, so that completion scripts offer
/// them and `--help` shows them.
#[derive(Clone)]
pub struct OneOf<T> {
    parse: fn(&str) -> Result<T, String>,
    names: fn() -> Vec<&'static str>,
}

impl<T> OneOf<T> {
    pub fn new(parse: fn(&str) -> Result<T, String>, names: fn() -> Vec<&'static str>) -> Self {
        OneOf { parse, names }
    }
}

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for OneOf<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        self.parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            (self.names)()
                .into_iter()
                .map(clap::builder::PossibleValue::new),
        ))
    }
}

/// `--repo R --work-item W`, for commands about one work item.
#[derive(Debug, clap::Args)]
pub struct ItemArgs {
    /// The repository the work item belongs to (case does not matter).
    #[arg(long, allow_hyphen_values = true, value_name = "REPO")]
    repo: String,
    /// The work item, as the stage engine names it (e.g. ORCH-42).
    #[arg(long, allow_hyphen_values = true, value_name = "ID")]
    work_item: String,
}

impl ItemArgs {
    fn names(&self) -> anyhow::Result<(RepoName, WorkItem)> {
        item_names(&self.repo, &self.work_item)
    }
}

/// Validates the names given on the command line (exit 1 on a bad one).
fn item_names(repo: &str, work_item: &str) -> anyhow::Result<(RepoName, WorkItem)> {
    Ok((RepoName::new(repo)?, WorkItem::new(work_item)?))
}

/// Prints one JSON value on one line.
fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(line) => outln!("{line}"),
        Err(e) => eprintln!("selfdeploy: error: cannot write JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory as _;

    use super::Cli;

    fn subcommands() -> Vec<clap::Command> {
        let mut cli = Cli::command();
        cli.build();
        cli.get_subcommands()
            .filter(|s| s.get_name() != "help")
            .cloned()
            .collect()
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every argument of every subcommand says what it is, and every
    /// subcommand shows examples.
    #[test]
    fn every_argument_has_help_and_every_subcommand_examples() {
        let subs = subcommands();
        assert!(subs.len() >= 14, "{}", subs.len());
        let mut args = 0;
        let mut missing = Vec::new();
        for sub in &subs {
            if sub.get_about().is_none() {
                missing.push(format!("{}: no about", sub.get_name()));
            }
            let examples = sub.get_after_help().map(ToString::to_string);
            if !examples.is_some_and(|e| e.starts_with("Examples:\n  selfdeploy ")) {
                missing.push(format!("{}: no examples", sub.get_name()));
            }
            for arg in sub.get_arguments() {
                args += 1;
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{} {}", sub.get_name(), arg.get_id()));
                }
            }
        }
        assert!(args > 50, "walked only {args} arguments");
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    /// The README's synopsis names every subcommand, and only options that
    /// exist.
    #[test]
    fn the_readme_synopsis_is_the_binary_s() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## The command line\n")
            .nth(1)
            .expect("README has a command-line section");
        let block = section
            .split("```")
            .nth(1)
            .expect("the section opens with the synopsis");
        let mut documented = BTreeSet::new();
        let mut current = String::new();
        let mut wrong = Vec::new();
        for line in block.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"selfdeploy") {
                current = words.get(1).copied().unwrap_or_default().to_owned();
                documented.insert(current.clone());
            }
            let Some(sub) = subcommands().into_iter().find(|s| s.get_name() == current) else {
                continue;
            };
            for word in words.iter().filter_map(|w| {
                let w = w.trim_matches(|c| "[]|".contains(c));
                w.strip_prefix("--").map(|l| l.trim_end_matches([']', '|']))
            }) {
                let known =
                    word == "help" || sub.get_arguments().any(|a| a.get_long() == Some(word));
                if !known {
                    wrong.push(format!("{current} --{word}"));
                }
            }
        }
        let actual: BTreeSet<String> = subcommands()
            .iter()
            .map(|s| s.get_name().to_owned())
            .collect();
        assert_eq!(documented, actual, "README synopsis vs the binary");
        assert!(
            wrong.is_empty(),
            "options the binary does not have: {wrong:?}"
        );
    }
}
