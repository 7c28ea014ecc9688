//! `selfdeploy completions <SHELL>`: the shell's completion script on stdout.

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, EXIT_OK};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy completions bash > selfdeploy.bash && . ./selfdeploy.bash
  selfdeploy completions zsh > \"${fpath[1]}/_selfdeploy\"")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "selfdeploy",
        &mut std::io::stdout(),
    );
    Ok(EXIT_OK)
}
