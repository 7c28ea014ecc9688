//! `selfdeploy gen-secrets`: fresh values for the secret settings, printed or
//! added to an env file without ever changing a value already there.

use std::path::PathBuf;

use anyhow::Context as _;

use selfdeploy::secrets::{self, Added};

use super::{EXIT_OK, EXIT_USAGE};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy gen-secrets
  selfdeploy gen-secrets --write .env
  selfdeploy gen-secrets --write selfdeploy.env --force")]
pub struct Args {
    /// Add the secrets that have no value to this env file instead of printing
    /// them; a new file is created with mode 0600.
    #[arg(long, value_name = "PATH")]
    write: Option<PathBuf>,
    /// With --write: give the missing secrets values in an existing file (an
    /// empty `NAME=` line is filled in place, others appended; every other
    /// line, the owner, group and mode are kept, less any access for others).
    #[arg(long, requires = "write")]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let names = secrets::secret_names();
    let Some(path) = args.write else {
        for (name, value) in secrets::generate(&names)? {
            outln!("{name}={value}");
        }
        return Ok(EXIT_OK);
    };
    let shown = path.display();
    let added = secrets::add_to_env_file(&path, &names, args.force)
        .with_context(|| format!("gen-secrets --write {shown}"))?;
    match added {
        Added::Created(names) => {
            outln!("wrote {} to {shown} (mode 0600)", names.join(", "));
        }
        Added::Nothing => outln!(
            "{shown} already has a value for {}: nothing changed",
            names.join(", ")
        ),
        Added::Refused(missing) => {
            eprintln!(
                "selfdeploy: gen-secrets: {shown} exists and has no value for {}; left unchanged (add --force to fill them in, keeping every other line)",
                missing.join(", ")
            );
            return Ok(EXIT_USAGE);
        }
        Added::Filled { names, mode } => outln!(
            "gave {} a value in {shown} (mode {mode:04o}, owner and group kept)",
            names.join(", ")
        ),
    }
    Ok(EXIT_OK)
}
