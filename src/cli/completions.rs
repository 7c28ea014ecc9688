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
    // clap_complete panics when its writer fails (a closed or full stdout):
    // the script is made in memory, and written like every other output.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "selfdeploy", &mut script);
    super::write_stdout(format_args!("{}", String::from_utf8_lossy(&script)));
    Ok(EXIT_OK)
}
