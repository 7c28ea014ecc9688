//! `selfdeploy demo`: watch a whole deploy happen in a sandbox.

use selfdeploy::demo::{self, Options};
use selfdeploy::machine::StateName;

use super::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy demo
  selfdeploy demo --fail --keep
  selfdeploy demo --ssh \"$(id -un)@loopback\"   # with scripts/loopback-sshd.sh's PATH")]
pub struct Args {
    /// Deploy an unhealthy image: the hook rolls back (exit code 1) and the deploy ends finalized_failed.
    #[arg(long)]
    fail: bool,
    /// Keep the sandbox directory and print where it is.
    #[arg(long)]
    keep: bool,
    /// Dispatch over ssh to TARGET, a user and a host joined by @, instead of running the hook locally:
    /// a host that sees this machine's files at the same paths, such as a
    /// loopback sshd (docs/operations/LOOPBACK.md).
    #[arg(long, value_name = "TARGET", value_parser = parse_target)]
    ssh: Option<(String, String)>,
}

fn parse_target(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('@') {
        Some((user, host)) if !user.is_empty() && !host.is_empty() => {
            Ok((user.to_owned(), host.to_owned()))
        }
        _ => Err(format!(
            "expected a user and a host joined by @, not {raw:?}"
        )),
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let opts = Options {
        fail: args.fail,
        keep: args.keep,
        ssh: args.ssh,
    };
    let end = demo::run(&opts, &mut std::io::stdout())?;
    let expected = if args.fail {
        StateName::FinalizedFailed
    } else {
        StateName::FinalizedSuccess
    };
    Ok(if end == expected { EXIT_OK } else { EXIT_ERROR })
}
