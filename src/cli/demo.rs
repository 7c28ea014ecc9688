//! `selfdeploy demo`: watch a whole deploy happen in a sandbox.

use selfdeploy::demo::{self, Options};
use selfdeploy::machine::StateName;

use super::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy demo
  selfdeploy demo --fail --keep")]
pub struct Args {
    /// Make the hook's health check fail (the deploy ends finalized_failed).
    #[arg(long)]
    fail: bool,
    /// Keep the sandbox directory and print where it is.
    #[arg(long)]
    keep: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let opts = Options {
        fail: args.fail,
        keep: args.keep,
    };
    let end = demo::run(&opts, &mut std::io::stdout())?;
    let expected = if args.fail {
        StateName::FinalizedFailed
    } else {
        StateName::FinalizedSuccess
    };
    Ok(if end == expected { EXIT_OK } else { EXIT_ERROR })
}
