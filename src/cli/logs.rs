//! `selfdeploy logs`: the hook's output of a run, as the host wrapper
//! appended it, streamed (a log of any size costs a buffer), and followed
//! until the run's result lands.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use selfdeploy::config::Settings;
use selfdeploy::contract::markers::{TicketFile, is_dispatch_id};
use selfdeploy::store::{self, ItemPaths, Snapshot};

use super::{EXIT_OK, ItemArgs};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy logs --repo orchestrator --work-item ORCH-42
  selfdeploy logs --repo orchestrator --work-item ORCH-42 -f
  selfdeploy logs --repo orchestrator --work-item ORCH-42 --dispatch b7a44579a15b6bbc

Without --dispatch: hook.log of the item's state directory, whole: the output
of every run since the item's last reset (usually one; the engine writes
nothing into it). A reset keeps that file as the log of the run it removes,
which --dispatch ID shows.")]
pub struct Args {
    #[command(flatten)]
    item: ItemArgs,
    /// The run to show, by its dispatch id (16 hex digits, as status and
    /// history name it): the current run's log, or one a reset kept.
    #[arg(long, value_name = "ID")]
    dispatch: Option<String>,
    /// Follow the log as the hook writes it until the run's result-<id>
    /// lands (or its ticket is revoked), then exit 0.
    #[arg(short = 'f', long)]
    follow: bool,
}

/// How often a followed log is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// Which file holds the run's output, and the run a follow waits for.
struct Source {
    path: PathBuf,
    /// The dispatch whose result ends a follow; `None`: nothing to wait for.
    run: Option<String>,
}

fn source(paths: &ItemPaths, dispatch: Option<&str>) -> anyhow::Result<Source> {
    let snap = Snapshot::load(paths)?;
    let current = snap.initiated_record().map(|r| r.dispatch_id.clone());
    let live =
        |id: &str| current.as_deref() == Some(id) || snap.kept_runs.iter().any(|k| k.id == id);
    let item = paths.identity();
    match dispatch {
        Some(id) if !is_dispatch_id(id) => {
            anyhow::bail!("invalid dispatch id {id:?}: expected 16 lower-case hex digits")
        }
        Some(id) if live(id) => Ok(Source {
            path: paths.hook_log(),
            run: Some(id.to_owned()),
        }),
        Some(id) => {
            let kept = paths.kept_hook_log(id);
            if std::fs::symlink_metadata(&kept).is_ok() {
                Ok(Source {
                    path: kept,
                    run: None,
                })
            } else {
                anyhow::bail!(
                    "no hook output of dispatch {id} for {item}: it is neither a run in its state directory nor one a reset kept ({} is not there)",
                    kept.display()
                )
            }
        }
        None => Ok(Source {
            path: paths.hook_log(),
            run: current,
        }),
    }
}

fn open(path: &std::path::Path) -> io::Result<Option<File>> {
    match store::open_regular(path, OpenOptions::new().read(true)) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Copies what the file holds from where it was read last.
fn drain(file: &mut File) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        super::write_stdout_bytes(&buf[..n])?;
    }
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let (repo, wi) = args.item.names()?;
    let paths = ItemPaths::new(&settings.repos_dir, &repo, &wi);
    let Source { path, run } = source(&paths, args.dispatch.as_deref())?;
    let shown = || format!("cannot read {}", path.display());
    let mut file = open(&path).with_context(shown)?;
    let Some(run) = run.filter(|_| args.follow) else {
        match file.as_mut() {
            Some(file) => drain(file).with_context(shown)?,
            None => anyhow::bail!(
                "no hook output for {repo}/{wi} yet: {} is not there (the host writes it once a run starts; a reset kept earlier runs' logs, see --dispatch)",
                path.display()
            ),
        }
        return Ok(EXIT_OK);
    };
    let exists =
        |kind: TicketFile| std::fs::symlink_metadata(paths.ticket_file(kind, &run)).is_ok();
    loop {
        // Whether the run is over is read before the log: what it wrote
        // before its result landed is then read below, whole.
        let ended = exists(TicketFile::Result)
            || !(exists(TicketFile::Dispatch) || exists(TicketFile::Claimed));
        if file.is_none() {
            file = open(&path).with_context(shown)?;
        }
        if let Some(file) = file.as_mut() {
            drain(file).with_context(shown)?;
        }
        if ended {
            return Ok(EXIT_OK);
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}
