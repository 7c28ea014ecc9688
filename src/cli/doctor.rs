//! `selfdeploy doctor`: is this installation ready to deploy?

use std::path::Path;

use selfdeploy::config::Settings;
use selfdeploy::doctor;

use super::{EXIT_ERROR, EXIT_OK, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per check.
    #[arg(long)]
    json: bool,
}

pub fn run(env_file: Option<&Path>, args: Args) -> anyhow::Result<u8> {
    // A configuration with problems is still checked as far as it goes.
    let (settings, errors) = Settings::load_lenient(env_file)?;
    let problems: Vec<String> = errors
        .iter()
        .map(ToString::to_string)
        .chain(settings.problems())
        .collect();
    let checks = doctor::run(&settings, &problems);
    let failed = checks.iter().filter(|c| !c.passed).count();
    if args.json {
        checks.iter().for_each(print_json);
    } else {
        for c in &checks {
            println!(
                "{} {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
            if let Some(fix) = &c.fix {
                println!("     fix: {fix}");
            }
        }
        println!("{} passed, {failed} failed", checks.len() - failed);
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_ERROR })
}
