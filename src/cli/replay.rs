//! `selfdeploy replay`: the regression corpus, offline.

use std::path::PathBuf;

use selfdeploy::{replay, table};

use super::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy replay
  selfdeploy replay fixtures/crash_after_revoke.ron --uncovered")]
pub struct Args {
    /// Fixture files or directories of them.
    #[arg(default_value = "fixtures")]
    paths: Vec<PathBuf>,
    /// List the rows of the transition table that no replay took.
    #[arg(long)]
    uncovered: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut files = Vec::new();
    for path in &args.paths {
        files.extend(
            replay::fixture_files(path)
                .map_err(|e| anyhow::anyhow!("cannot read fixtures at {}: {e}", path.display()))?,
        );
    }
    if files.is_empty() {
        anyhow::bail!("no fixtures (*.ron) found; give a file or a directory");
    }
    let mut failed = 0;
    let mut taken = Vec::new();
    for file in &files {
        let verdict = replay::replay_file(file);
        match &verdict.failure {
            None => outln!(
                "PASS {} ({})",
                file.display(),
                selfdeploy::text_table::counted(verdict.steps as u64, "step", "steps")
            ),
            Some(why) => {
                failed += 1;
                outln!("FAIL {}: {}", file.display(), why.trim_end());
            }
        }
        taken.extend(verdict.rows);
    }
    let rows = table::derive();
    let uncovered = replay::uncovered(&rows, &taken);
    outln!(
        "{} passed, {failed} failed; table rows covered: {}/{}",
        files.len() - failed,
        rows.len() - uncovered.len(),
        rows.len()
    );
    for row in uncovered.iter().filter(|_| args.uncovered) {
        outln!("  not covered: {}", table::one_line(row));
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_ERROR })
}
