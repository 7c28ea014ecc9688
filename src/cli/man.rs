//! `selfdeploy man`: manual pages (roff), as git has them: `selfdeploy(1)`
//! for the command and `selfdeploy-<subcommand>(1)` for each subcommand.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::{Cli, EXIT_OK};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy man | man -l -
  selfdeploy man status | man -l -
  selfdeploy man --out-dir /usr/share/man/man1")]
pub struct Args {
    /// The subcommand whose page to print (default: the command's own page).
    #[arg(value_name = "SUBCOMMAND", conflicts_with = "out_dir")]
    subcommand: Option<String>,
    /// Write every page (selfdeploy.1, selfdeploy-<subcommand>.1) into this
    /// existing directory instead.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Every page: its file name and the command it documents.
fn pages() -> Vec<(String, clap::Command)> {
    let mut command = Cli::command();
    command.build();
    let mut pages = vec![("selfdeploy.1".to_owned(), command.clone())];
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("selfdeploy-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((format!("{name}.1"), page));
    }
    pages
}

fn render(command: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if let Some(dir) = &args.out_dir {
        return write_all(dir);
    }
    let file = match &args.subcommand {
        None => "selfdeploy.1".to_owned(),
        Some(sub) => format!("selfdeploy-{sub}.1"),
    };
    let Some((_, command)) = pages().into_iter().find(|(f, _)| *f == file) else {
        anyhow::bail!(
            "no subcommand {:?}; see `selfdeploy --help` for the list",
            args.subcommand.unwrap_or_default()
        );
    };
    let page = render(command)?;
    super::write_stdout(format_args!("{}", String::from_utf8_lossy(&page)));
    Ok(EXIT_OK)
}

fn write_all(dir: &Path) -> anyhow::Result<u8> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory; create it first", dir.display());
    }
    for (file, command) in pages() {
        let path = dir.join(&file);
        std::fs::write(&path, render(command)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(EXIT_OK)
}
