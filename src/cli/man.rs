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
    // No `help` subcommand: it has no page, so the list of subcommands on
    // selfdeploy(1) must not name one.
    let mut command = Cli::command().disable_help_subcommand(true);
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

fn render(command: clap::Command, see_also: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    out.extend_from_slice(common_sections(see_also).as_bytes());
    Ok(out)
}

/// Text for roff: a backslash and a hyphen escaped, and no line that starts
/// with a control character.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// `.TP` paragraphs: a bold tag, then its text.
fn tagged(out: &mut String, tag: &str, text: &str) {
    out.push_str(".TP\n");
    out.push_str(&format!("\\fB{}\\fR\n", roff_text(tag)));
    out.push_str(&roff_text(text));
    out.push('\n');
}

/// The exit statuses, as the README gives them.
pub const EXIT_STATUSES: &[(u8, &str)] = &[
    (
        super::EXIT_OK,
        "success; for an event: transitioned, unchanged or deferred",
    ),
    (
        super::EXIT_ERROR,
        "an error (bad configuration, a bad name, I/O): one line on stderr; an event changed nothing",
    ),
    (super::EXIT_USAGE, "a usage error (the command line)"),
    (3, "an event was refused, illegal, or its dispatch failed"),
    (
        super::EXIT_UNRECORDED,
        "the event ran as its report says, but its history entry could not be appended; it is kept and written by the next event or watch pass",
    ),
    (
        super::EXIT_ERROR_AFTER_CHANGE,
        "an error after the event had changed something: the line on stderr says what was done and the state on disk",
    ),
    (
        super::EXIT_INTERRUPTED,
        "a signal (Ctrl-C, SIGTERM) arrived before the event acted: nothing done",
    ),
];

/// The files selfdeploy reads and writes.
const FILES: &[(&str, &str)] = &[
    (
        selfdeploy::config::SYSTEM_ENV_FILE,
        "the settings of the packaged service (its EnvironmentFile); pass it to a command with --env-file",
    ),
    (
        "./.env",
        "the settings, when --env-file is not given and the file is present; the environment wins over it",
    ),
    (
        "REPOS_DIR/.selfdeploy/identity.json",
        "the identity selfdeploy init gives REPOS_DIR; every command that reads or writes the state requires it",
    ),
    (
        "REPOS_DIR/.deploy-state-REPO/ITEM/",
        "a work item's state: its markers, dispatch tickets, results, hook.log and history",
    ),
    (
        "REPOS_DIR/.selfdeploy/pending/REPO/ITEM.json",
        "an event's record, written before its first effect, appended to the history by the next event or watch pass",
    ),
    (
        selfdeploy::config::PACKAGE_HOME,
        "the home of the packaged service's user: its ssh key and known_hosts in .ssh",
    ),
];

/// ENVIRONMENT, FILES, EXIT STATUS and SEE ALSO, on every page.
fn common_sections(see_also: &[String]) -> String {
    let mut out = String::from(".SH ENVIRONMENT\n");
    out.push_str(&roff_text(
        "Every setting is read from the environment or from the env file (the environment wins); \
         an unset setting has its default, the production value. selfdeploy config shows the values in force.",
    ));
    out.push('\n');
    for spec in selfdeploy::config::REGISTRY {
        let default = if spec.is_secret() {
            "a secret: no default".to_owned()
        } else if spec.default.is_empty() {
            "default: empty".to_owned()
        } else {
            format!("default: {}", spec.default)
        };
        tagged(
            &mut out,
            spec.name,
            &format!("{} ({default}).", spec.meaning),
        );
    }
    tagged(
        &mut out,
        "RUST_LOG",
        "the log filter; when set, it wins over -q and -v.",
    );
    out.push_str(".SH FILES\n");
    for (path, what) in FILES {
        tagged(&mut out, path, &format!("{what}."));
    }
    out.push_str(".SH \"EXIT STATUS\"\n");
    for (code, what) in EXIT_STATUSES {
        tagged(&mut out, &code.to_string(), &format!("{what}."));
    }
    out.push_str(".SH \"SEE ALSO\"\n");
    out.push_str(&roff_text(&see_also.join(", ")));
    out.push('\n');
    out
}

/// The pages a page points to, each one that exists: selfdeploy(1) names
/// every subcommand's page, a subcommand's page names selfdeploy(1).
fn see_also(pages: &[(String, clap::Command)], file: &str) -> Vec<String> {
    let main = "selfdeploy.1";
    pages
        .iter()
        .filter(|(f, _)| f != file && (file == main || f == main))
        .map(|(f, _)| format!("{}(1)", f.trim_end_matches(".1")))
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if let Some(dir) = &args.out_dir {
        return write_all(dir);
    }
    let file = match &args.subcommand {
        None => "selfdeploy.1".to_owned(),
        Some(sub) => format!("selfdeploy-{sub}.1"),
    };
    let pages = pages();
    let see_also = see_also(&pages, &file);
    let Some((_, command)) = pages.into_iter().find(|(f, _)| *f == file) else {
        anyhow::bail!(
            "no subcommand {:?}; see `selfdeploy --help` for the list",
            args.subcommand.unwrap_or_default()
        );
    };
    let page = render(command, &see_also)?;
    super::write_stdout(format_args!("{}", String::from_utf8_lossy(&page)));
    Ok(EXIT_OK)
}

fn write_all(dir: &Path) -> anyhow::Result<u8> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory; create it first", dir.display());
    }
    let pages = pages();
    for (file, command) in &pages {
        let path = dir.join(file);
        std::fs::write(&path, render(command.clone(), &see_also(&pages, file))?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(EXIT_OK)
}
