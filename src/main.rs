//! The `selfdeploy` command: parse, load the settings, call the library,
//! print, exit with the contract's status.

// No panic in shipped code: an I/O path returns an error; a call that cannot
// fail says why, with an `#[allow]` on the smallest item
// (tests/it/purity.rs checks that this stays).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented,
        clippy::unreachable
    )
)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser as _;

mod cli;

fn main() -> ExitCode {
    // Die quietly when the reader of stdout goes away (`selfdeploy ... | head`),
    // as command-line tools do, instead of panicking on a failed print.
    // SAFETY: restoring a signal's default disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            // One line, like every other error: clap's first line, and where to look.
            let text = err.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            eprintln!("selfdeploy: error: {first} (see --help)");
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    let filter = args.log_filter();
    let logger = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        );
    // Under systemd (stderr connected to the journal, which says so in
    // JOURNAL_STREAM) the journal stamps every line: no second time.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logger.without_time().init();
    } else {
        logger.init();
    }
    let acts = args.acts();
    let mut ran = cli::run(args);
    // What an event did is done and recorded; only its report is lost, and
    // its exit code stays the documented one. A read command has failed.
    if let Some(why) = cli::stdout_failure() {
        eprintln!(
            "selfdeploy: error: cannot write to stdout ({why}): the output is incomplete{}",
            if acts {
                "; what the event did is in its history (selfdeploy history)"
            } else {
                ""
            }
        );
        if !acts && matches!(ran, Ok(cli::EXIT_OK)) {
            ran = Ok(cli::EXIT_ERROR);
        }
    }
    match ran {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("selfdeploy: error: {}", one_line(&err));
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}

fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
