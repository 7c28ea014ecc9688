//! `selfdeploy lock` / `unlock`: a deploy freeze on a repo. While a repo is
//! locked, `approved` is refused for each of its items with the freeze's
//! message and who set it (the freeze guard); deploys already dispatched
//! still finish (poll and watch are unaffected).

use selfdeploy::config::Settings;
use selfdeploy::contract::names::RepoName;
use selfdeploy::engine;
use selfdeploy::machine::Freeze;
use selfdeploy::store::freeze;

use super::EXIT_OK;
use super::event::default_actor;

#[derive(Debug, clap::Args)]
#[command(
    long_about = "Lock a repo against deploys (a deploy freeze): `approved` is refused for each \
of its work items, with this message and who locked it, until `selfdeploy unlock`. Deploys \
already dispatched still finish. No --force passes a freeze. The lock and its unlock are \
recorded in the repo's freeze trail (`selfdeploy status` shows a freeze in place).",
    after_help = "Examples:
  selfdeploy lock --repo orchestrator --message \"release week: no deploys until Monday\"
  sudo -u selfdeploy selfdeploy lock --repo orchestrator --message \"incident 42\" --actor alice"
)]
pub struct LockArgs {
    /// The repository to lock (case does not matter).
    #[arg(long, allow_hyphen_values = true, value_name = "REPO")]
    repo: String,
    /// Why deploys must wait; shown to whoever approves meanwhile.
    #[arg(long, value_name = "TEXT", value_parser = shown_text)]
    message: String,
    /// Who locks it, recorded with the freeze [default: $SUDO_USER, else
    /// $USER, else selfdeploy].
    #[arg(long, value_name = "NAME", value_parser = shown_text)]
    actor: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(
    long_about = "Lift a repo's deploy freeze (set by `selfdeploy lock`): approvals are \
accepted again. A freeze file that cannot be read is removed too. Recorded in the repo's \
freeze trail.",
    after_help = "Examples:
  selfdeploy unlock --repo orchestrator
  sudo -u selfdeploy selfdeploy unlock --repo orchestrator --actor alice"
)]
pub struct UnlockArgs {
    /// The repository to unlock (case does not matter).
    #[arg(long, allow_hyphen_values = true, value_name = "REPO")]
    repo: String,
    /// Who unlocks it, recorded in the freeze trail [default: $SUDO_USER,
    /// else $USER, else selfdeploy].
    #[arg(long, value_name = "NAME", value_parser = shown_text)]
    actor: Option<String>,
}

/// A message or an actor is shown as it is to whoever approves, and in
/// `status`: one line without control characters (an escape sequence would
/// rewrite the reader's terminal, a line break forge a line).
fn shown_text(raw: &str) -> Result<String, String> {
    if raw.contains(char::is_control) {
        return Err(
            "must be one line without control characters (no line break, tab or escape sequence)"
                .to_owned(),
        );
    }
    Ok(raw.to_owned())
}

/// What every acting command checks before it writes under REPOS_DIR: the
/// settings, REPOS_DIR's identity, its owner.
fn acting(settings: &Settings) -> anyhow::Result<()> {
    engine::check_repos_dir(settings)?;
    engine::check_owner(settings)?;
    Ok(())
}

fn now() -> String {
    selfdeploy::clock::rfc3339_seconds(std::time::SystemTime::now())
}

pub fn lock(settings: &Settings, args: LockArgs) -> anyhow::Result<u8> {
    let repo = RepoName::new(&args.repo)?;
    let message = args.message.trim();
    if message.is_empty() {
        anyhow::bail!(
            "--message must say why the repo is locked (it is shown to whoever approves)"
        );
    }
    if message.contains(['\n', '\r']) {
        anyhow::bail!("--message must be one line");
    }
    acting(settings)?;
    let freeze = Freeze {
        repo: repo.to_string(),
        message: message.to_owned(),
        actor: args.actor.unwrap_or_else(default_actor),
        time: now(),
    };
    freeze::lock(&settings.repos_dir, &freeze, settings.durability)?;
    outln!(
        "{repo}: locked by {} at {}: {}; `approved` is refused until `selfdeploy unlock --repo {repo}` (deploys in flight finish)",
        freeze.actor,
        freeze.time,
        freeze.message
    );
    Ok(EXIT_OK)
}

pub fn unlock(settings: &Settings, args: UnlockArgs) -> anyhow::Result<u8> {
    let repo = RepoName::new(&args.repo)?;
    acting(settings)?;
    let actor = args.actor.unwrap_or_else(default_actor);
    let lifted = freeze::unlock(
        &settings.repos_dir,
        &repo,
        &actor,
        &now(),
        settings.durability,
    )?;
    match lifted {
        Some(f) => outln!(
            "{repo}: unlocked by {actor} (locked by {} at {}: {})",
            f.actor,
            f.time,
            f.message
        ),
        None => outln!("{repo}: unlocked by {actor} (its freeze file could not be read)"),
    }
    Ok(EXIT_OK)
}
