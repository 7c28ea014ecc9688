//! The subcommands, one file each.

mod config;
mod demo;
mod doctor;
mod event;
mod explain;
mod gen_secrets;
mod history;
mod machine;
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

#[derive(Debug, Parser)]
#[command(
    name = "selfdeploy",
    version,
    about = "Deploys a service that cannot restart itself: a persisted state machine with a human approval in the loop"
)]
pub struct Cli {
    /// Read settings from this env file instead of ./.env (the environment still wins).
    #[arg(long, global = true, value_name = "PATH")]
    env_file: Option<PathBuf>,
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
    /// Show what happened to a work item.
    History(history::Args),
    /// Show every setting, its value and where it came from.
    Config(config::Args),
    /// Print fresh values for the secret settings, or add the missing ones to an env file.
    GenSecrets(gen_secrets::Args),
    /// Check that this installation can deploy: settings, tools, the shared mount, the hook.
    Doctor(doctor::Args),
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
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let settings = || -> anyhow::Result<Settings> {
        let settings = Settings::load(cli.env_file.as_deref()).context("bad configuration")?;
        for warning in &settings.warnings {
            eprintln!("selfdeploy: warning: {warning}");
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
        Command::Config(args) => config::run(cli.env_file.as_deref(), args),
        Command::GenSecrets(args) => gen_secrets::run(args),
        Command::Doctor(args) => doctor::run(cli.env_file.as_deref(), args),
        Command::Demo(args) => demo::run(args),
        Command::Machine(args) => machine::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Snapshot(args) => snapshot::run(&state()?, args),
        Command::Watch(args) => {
            let settings = state()?;
            let problems = settings.acting_problems();
            if !problems.is_empty() {
                return Err(engine::EngineError::Settings(problems).into());
            }
            watch::run(settings, args)
        }
    }
}

/// `--repo R --work-item W`, for commands about one work item.
#[derive(Debug, clap::Args)]
pub struct ItemArgs {
    #[arg(long, allow_hyphen_values = true)]
    repo: String,
    #[arg(long, allow_hyphen_values = true)]
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
    println!(
        "{}",
        serde_json::to_string(value).expect("reports serialize")
    );
}
