//! Performs effects. `remote` and `deploy_log` are pure (they build bytes);
//! `process`, `git` and the executors below touch processes and files. This
//! is the one place where ssh is spawned and files outside the state
//! directory are written.

pub mod git;
pub mod process;

use std::fs;
use std::io;

use crate::atomic;
use crate::config::Settings;
use crate::contract::deploy_log;
use crate::effect::{Effect, Launch};
use crate::store::{ItemPaths, Revoke};

/// What performing an effect produced, as far as the caller cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Performed {
    Done,
    /// Done, with lines worth reporting (best-effort steps, skipped writes).
    Notes(Vec<String>),
    /// A dispatch: launched, or why not. Fed back to the machine.
    Dispatched(Result<(), String>),
    /// What a revoke's rename found. Fed back to the machine.
    Revoke(Revoke),
    /// What the commit and push came to, with a line per step. Fed back.
    Published(git::Published),
}

/// An effect that could not be performed; the event stops there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// Performs effects for one work item. What the world looks like before a
/// step is read by the other interface, `crate::probe::Probe`.
pub trait Perform {
    fn perform(&mut self, paths: &ItemPaths, effect: &Effect) -> Result<Performed, ExecError>;

    /// A dry run: the engine takes no lock and writes nothing, the history
    /// included. Only the recording performer is one.
    fn dry_run(&self) -> bool {
        false
    }
}

/// The real performer: files, ssh (or local bash) and git.
pub struct HostPerformer<'a> {
    pub settings: &'a Settings,
}

impl Perform for HostPerformer<'_> {
    fn perform(&mut self, paths: &ItemPaths, effect: &Effect) -> Result<Performed, ExecError> {
        let fail = |what: String, e: io::Error| ExecError(format!("{what}: {e}"));
        match effect {
            Effect::WriteMarker { marker, content } => paths
                .write_marker(*marker, content)
                .map(|()| Performed::Done)
                .map_err(|e| {
                    fail(
                        format!("cannot write {}", paths.marker(*marker).display()),
                        e,
                    )
                }),
            Effect::RemoveMarker { marker } => paths
                .remove_marker(*marker)
                .map(|()| Performed::Done)
                .map_err(|e| {
                    fail(
                        format!("cannot remove {}", paths.marker(*marker).display()),
                        e,
                    )
                }),
            Effect::WriteTicket { dispatch_id } => paths
                .write_ticket(dispatch_id, "")
                .map(|()| Performed::Done)
                .map_err(|e| {
                    fail(
                        format!("cannot write the ticket of dispatch {dispatch_id}"),
                        e,
                    )
                }),
            Effect::RevokeTicket { dispatch_id, .. } => paths
                .revoke_ticket(dispatch_id)
                .map(Performed::Revoke)
                .map_err(|e| fail(format!("cannot revoke dispatch {dispatch_id}"), e)),
            Effect::Launch(Launch { argv, .. }) => Ok(Performed::Dispatched(self.launch(argv))),
            Effect::WriteDeployLog {
                worktree,
                path,
                content,
            } => {
                if !worktree.is_dir() {
                    return Err(ExecError(format!(
                        "worktree {} does not exist; create it or pass --worktree (the deploy stays initiated; the next poll retries)",
                        worktree.display()
                    )));
                }
                no_symlink_below(worktree, path)?;
                let dir = path.parent().unwrap_or(worktree);
                atomic::create_dir_all(dir)
                    .and_then(|()| atomic::write(path, content.as_bytes()))
                    .map(|()| Performed::Done)
                    .map_err(|e| fail(format!("cannot write deploy log {}", path.display()), e))
            }
            Effect::GitPublish {
                worktree,
                path,
                message,
                branch,
                ..
            } => Ok(Performed::Published(git::publish(
                self.settings,
                worktree,
                path,
                message,
                branch.as_deref(),
            ))),
            Effect::StampMerged {
                worktree,
                path,
                merged,
            } => {
                no_symlink_below(worktree, path)?;
                stamp(path, *merged)
            }
            Effect::RemoveStateDir => match paths.reset_state_dir() {
                Ok(kept) if kept.is_empty() => Ok(Performed::Done),
                Ok(kept) => Ok(Performed::Notes(
                    kept.iter()
                        .map(|id| {
                            let result = crate::contract::markers::TicketFile::Result.name(id);
                            if paths.state_dir.join(&result).exists() {
                                // It ended before the reset (after a deadline
                                // verdict): not "still running".
                                format!(
                                    "dispatch {id} has ended ({result} is there) but its own verdict is not in the history yet: its place is kept (reset-{id}), and the next event or watch pass records it"
                                )
                            } else {
                                format!(
                                    "dispatch {id} was claimed by the host and has no verdict yet: its place is kept (reset-{id}), its result and hook.log still land there, and the history records its verdict when it does"
                                )
                            }
                        })
                        .collect(),
                )),
                Err(e) => Err(fail(format!("cannot reset {}", paths.state_dir.display()), e)),
            },
        }
    }
}

impl HostPerformer<'_> {
    fn launch(&self, argv: &[String]) -> Result<(), String> {
        let (program, args) = argv.split_first().ok_or("empty dispatch command")?;
        match process::run(program, args, None, &[], self.settings.ssh_timeout) {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err(format!("{program} failed: {}", out.summary())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The deploy log must land inside the worktree: no component of its path
/// below the worktree may be a symbolic link (a committed symlink
/// `docs/work-items/<item>` would send it anywhere).
fn no_symlink_below(worktree: &std::path::Path, path: &std::path::Path) -> Result<(), ExecError> {
    let rel = path.strip_prefix(worktree).map_err(|_| {
        ExecError(format!(
            "deploy log {} is not below the worktree {}",
            path.display(),
            worktree.display()
        ))
    })?;
    let mut at = worktree.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ExecError(format!(
                    "{} is a symbolic link: the deploy log is not written through it (the deploy stays as it is; replace the link with a directory, then poll again)",
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(ExecError(format!("cannot inspect {}: {e}", at.display()))),
        }
    }
    Ok(())
}

fn stamp(path: &std::path::Path, merged: bool) -> Result<Performed, ExecError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ExecError(format!(
                "deploy log {} not found: nothing to stamp; pass --worktree if it lives elsewhere",
                path.display()
            )));
        }
        Err(e) => return Err(ExecError(format!("cannot read {}: {e}", path.display()))),
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        ExecError(format!(
            "deploy log {} is not valid UTF-8; nothing stamped",
            path.display()
        ))
    })?;
    match deploy_log::stamp_merged(&text, merged) {
        deploy_log::Stamp::NoFrontmatter => Ok(Performed::Notes(vec![format!(
            "{} has no frontmatter: left untouched",
            path.display()
        )])),
        deploy_log::Stamp::Rewritten(new) if new == text => Ok(Performed::Notes(vec![format!(
            "merged_to_main: {merged} already stamped"
        )])),
        deploy_log::Stamp::Rewritten(new) => atomic::write(path, new.as_bytes())
            .map(|()| Performed::Notes(vec![format!("merged_to_main: {merged} stamped")]))
            .map_err(|e| ExecError(format!("cannot write {}: {e}", path.display()))),
    }
}

/// Performs nothing: every effect is recorded as if it succeeded. A dry run
/// is this performer.
#[derive(Debug, Default)]
pub struct RecordingPerformer {
    pub performed: Vec<Effect>,
}

impl Perform for RecordingPerformer {
    fn dry_run(&self) -> bool {
        true
    }

    fn perform(&mut self, _paths: &ItemPaths, effect: &Effect) -> Result<Performed, ExecError> {
        self.performed.push(effect.clone());
        Ok(match effect {
            Effect::Launch(_) => Performed::Dispatched(Ok(())),
            Effect::RevokeTicket { .. } => Performed::Revoke(Revoke::Revoked),
            Effect::GitPublish { .. } => Performed::Published(git::Published {
                pushed: Ok(()),
                notes: Vec::new(),
            }),
            _ => Performed::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn notes(performed: Result<Performed, ExecError>) -> Vec<String> {
        match performed {
            Ok(Performed::Notes(notes)) => notes,
            other => panic!("{other:?}"),
        }
    }

    /// The stamp says what it did: written, found already there (the file
    /// left as it was, not rewritten), or nothing to stamp; and a log it
    /// cannot read is named as missing or as unreadable, which differ in
    /// what the operator does next.
    #[test]
    fn stamp_writes_once_and_says_what_it_found() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("14-deploy-log.md");
        fs::write(&log, "---\ndeploy_status: SUCCESS\n---\nbody\n").unwrap();
        assert_eq!(notes(stamp(&log, true)), ["merged_to_main: true stamped"]);
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "---\ndeploy_status: SUCCESS\nmerged_to_main: true\n---\nbody\n"
        );
        let written = fs::metadata(&log).unwrap().ino();
        assert_eq!(
            notes(stamp(&log, true)),
            ["merged_to_main: true already stamped"]
        );
        assert_eq!(fs::metadata(&log).unwrap().ino(), written);

        let plain = dir.path().join("plain.md");
        fs::write(&plain, "no frontmatter\n").unwrap();
        assert_eq!(
            notes(stamp(&plain, false)),
            [format!(
                "{} has no frontmatter: left untouched",
                plain.display()
            )]
        );

        let missing = dir.path().join("missing.md");
        let err = stamp(&missing, true).unwrap_err();
        assert_eq!(
            err.0,
            format!(
                "deploy log {} not found: nothing to stamp; pass --worktree if it lives elsewhere",
                missing.display()
            )
        );
        let err = stamp(dir.path(), true).unwrap_err();
        assert!(
            err.0
                .starts_with(&format!("cannot read {}: ", dir.path().display())),
            "{err}"
        );
    }

    /// A component of the log's path that cannot be inspected (here: below
    /// a regular file) stops the write with its name; only a component that
    /// does not exist yet ends the check.
    #[test]
    fn a_log_path_that_cannot_be_inspected_is_refused_by_name() {
        let wt = tempfile::tempdir().unwrap();
        let wt = wt.path();
        fs::write(wt.join("docs"), "a file where a directory belongs").unwrap();
        let err =
            no_symlink_below(wt, &wt.join("docs/work-items/W-1/14-deploy-log.md")).unwrap_err();
        assert!(
            err.0.starts_with(&format!(
                "cannot inspect {}: ",
                wt.join("docs/work-items").display()
            )),
            "{err}"
        );
        assert_eq!(
            no_symlink_below(wt, &wt.join("new/work-items/W-1/14-deploy-log.md")),
            Ok(())
        );
    }
}
