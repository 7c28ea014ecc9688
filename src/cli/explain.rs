//! `selfdeploy explain`: why an event would be accepted or refused, without
//! doing anything.

use selfdeploy::config::Settings;
use selfdeploy::engine;
use selfdeploy::probe::HostProbe;

use super::event::{EventArgs, print_report};
use super::print_json;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy explain approved --repo orchestrator --work-item ORCH-42
  selfdeploy explain poll --repo orchestrator --work-item ORCH-42 --json

Exits as `event --dry-run` would: 3 when the event would be refused or illegal.")]
pub struct Args {
    #[command(flatten)]
    target: EventArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let request = match args.target.request()? {
        Ok(request) => request,
        Err(code) => return Ok(code),
    };
    let x = engine::explain(settings, &request, &mut HostProbe)?;
    // Exits as `event --dry-run` would: 3 when the event would be refused.
    let code = x.report.outcome.exit_code() as u8;
    if args.json {
        print_json(&x);
        return Ok(code);
    }
    let files = if x.snapshot.files.is_empty() {
        "none".to_owned()
    } else {
        x.snapshot.files.join(", ")
    };
    outln!("state on disk: {} (files: {files})", x.snapshot.state);
    if let Some(result) = &x.snapshot.result {
        outln!("result: exit code {}", result.code);
    }
    outln!("dispatch guards, in the order they are checked:");
    for g in &x.guards {
        let verdict = if g.passes { "pass" } else { "FAIL" };
        outln!("  {:<18} {verdict}  {}", g.guard.name(), g.detail);
    }
    outln!("what {} would do now:", request.event);
    print_report(&x.report);
    Ok(code)
}
