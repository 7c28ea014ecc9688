//! `selfdeploy explain`: why an event would be accepted or refused, without
//! doing anything.

use selfdeploy::config::Settings;
use selfdeploy::engine::{self, SystemClock};

use super::event::{EventArgs, print_report};
use super::{EXIT_OK, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: EventArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let request = match args.target.request(true)? {
        Ok(request) => request,
        Err(code) => return Ok(code),
    };
    let x = engine::explain(settings, &request, &SystemClock)?;
    if args.json {
        print_json(&x);
        return Ok(EXIT_OK);
    }
    let files = if x.snapshot.files.is_empty() {
        "none".to_owned()
    } else {
        x.snapshot.files.join(", ")
    };
    println!("state on disk: {} (files: {files})", x.snapshot.state);
    if let Some(result) = &x.snapshot.result {
        println!("result: exit code {}", result.code);
    }
    println!("dispatch guards, in the order they are checked:");
    for g in &x.guards {
        let verdict = if g.passes { "pass" } else { "FAIL" };
        println!("  {:<18} {verdict}  {}", g.guard.name(), g.detail);
    }
    println!("what {} would do now:", request.event);
    print_report(&x.report);
    Ok(EXIT_OK)
}
