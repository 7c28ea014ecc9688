//! `selfdeploy init`: gives REPOS_DIR the identity every other command that
//! touches the state requires (an unmounted share then reads as an error,
//! never as "nothing in flight").

use selfdeploy::config::Settings;
use selfdeploy::engine;
use selfdeploy::store::identity::{self, Initialized};

use super::EXIT_OK;
use super::event::default_actor;

#[derive(Debug, clap::Args)]
#[command(
    long_about = "Give REPOS_DIR the identity every command that reads or writes the state \
requires. Run it once, as the user who owns REPOS_DIR, after the shared directory is \
mounted; it never replaces an identity that is there (nor creates REPOS_DIR).",
    after_help = "Examples:
  selfdeploy init
  selfdeploy init --json
  sudo -u selfdeploy selfdeploy init   # as REPOS_DIR's owner"
)]
pub struct Args {
    /// Print the identity as one JSON line.
    #[arg(long)]
    json: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    engine::check_repos_dir_exists(settings)?;
    engine::check_owner(settings)?;
    let dir = &settings.repos_dir;
    let now = selfdeploy::clock::rfc3339_seconds(std::time::SystemTime::now());
    let done = identity::init(dir, &default_actor(), &now)?;
    let (identity, created) = match &done {
        Initialized::Created(identity) => (identity, true),
        Initialized::Existing(identity) => (identity, false),
    };
    if args.json {
        let line = serde_json::json!({
            "repos_dir": dir.display().to_string(),
            "id": identity.id,
            "created_at": identity.created_at,
            "created_by": identity.created_by,
            "created": created,
        });
        outln!("{line}");
        return Ok(EXIT_OK);
    }
    if created {
        outln!(
            "REPOS_DIR {} initialized: identity {}",
            dir.display(),
            identity.id
        );
        if identity::is_mount_point(dir) == Some(false) {
            eprintln!(
                "selfdeploy: note: {} is not a mount point; if the shared directory should be mounted there, \
                 remove {} and run init again once it is",
                dir.display(),
                identity::path(dir).display()
            );
        }
    } else {
        outln!(
            "REPOS_DIR {} already has identity {} (made {} by {}); nothing written",
            dir.display(),
            identity.id,
            identity.created_at,
            identity.created_by
        );
    }
    Ok(EXIT_OK)
}
