//! `selfdeploy config`: every setting, its value and where it came from; with
//! `--check`, every problem of the configuration at once.

use std::path::Path;

use serde::Serialize;

use selfdeploy::config::{REGISTRY, Settings};

use super::{EXIT_ERROR, EXIT_OK, print_json};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy config
  selfdeploy config --check
  selfdeploy config --check --strict
  selfdeploy --env-file selfdeploy.env config --json

The env file is the first of: --env-file, the file SELFDEPLOY_ENV_FILE names
(set but empty: none), ./.env, the system env file; the first line says which.")]
pub struct Args {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Validate the whole configuration; print every problem; exit 1 on any.
    #[arg(long)]
    check: bool,
    /// With --check: warnings (a misspelled setting, one set twice) fail too.
    #[arg(long, requires = "check")]
    strict: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    name: &'a str,
    value: String,
    source: String,
    default: &'a str,
    meaning: &'a str,
}

pub fn run(env_file: Option<&Path>, quiet: bool, args: Args) -> anyhow::Result<u8> {
    if args.check {
        return Ok(check(env_file, args.strict));
    }
    let settings = Settings::load(env_file)?;
    if !quiet {
        for warning in &settings.warnings {
            eprintln!("selfdeploy: warning: {warning}");
        }
    }
    let lines: Vec<Line> = settings
        .resolved
        .iter()
        .zip(REGISTRY)
        .map(|(r, spec)| Line {
            name: r.name,
            // Secrets are never printed; whether one is set is.
            value: if spec.is_secret() && !r.value.is_empty() {
                "(set, not shown)".to_owned()
            } else {
                r.value.clone()
            },
            source: r.source.to_string(),
            default: spec.default,
            meaning: spec.meaning,
        })
        .collect();
    if args.json {
        lines.iter().for_each(print_json);
    } else {
        outln!("env file: {}", settings.env_file);
        let rows: Vec<[String; 3]> = lines
            .iter()
            .map(|l| [l.name.to_owned(), l.value.clone(), l.source.clone()])
            .collect();
        out!(
            "{}",
            selfdeploy::text_table::render(&["SETTING", "VALUE", "SOURCE"], &rows)
        );
    }
    Ok(EXIT_OK)
}

fn check(env_file: Option<&Path>, strict: bool) -> u8 {
    let (problems, warnings): (Vec<String>, Vec<String>) = match Settings::load_lenient(env_file) {
        Ok((settings, errors)) => {
            outln!("env file: {}", settings.env_file);
            (
                errors
                    .iter()
                    .map(ToString::to_string)
                    .chain(settings.problems())
                    .collect(),
                settings.warnings,
            )
        }
        Err(e) => (vec![e.to_string()], Vec::new()),
    };
    for w in &warnings {
        if strict {
            outln!("warning: {w}");
        } else {
            eprintln!("selfdeploy: warning: {w}");
        }
    }
    let failing = problems.len() + if strict { warnings.len() } else { 0 };
    if failing == 0 {
        outln!("configuration OK ({} settings)", REGISTRY.len());
        return EXIT_OK;
    }
    for p in &problems {
        outln!("problem: {p}");
    }
    if strict && !warnings.is_empty() {
        outln!(
            "{} problem(s), {} warning(s) (--strict: warnings fail); fix them in the environment or the env file",
            problems.len(),
            warnings.len()
        );
    } else {
        outln!(
            "{} problem(s); fix them in the environment or the env file",
            problems.len()
        );
    }
    EXIT_ERROR
}
