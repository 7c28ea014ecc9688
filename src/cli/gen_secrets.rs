//! `selfdeploy gen-secrets`: fresh values for the secret settings, printed or
//! added to an env file without ever changing a value already there.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use selfdeploy::secrets;

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
    /// With --write: append the missing secrets to an existing file (every
    /// existing line is kept; the file becomes mode 0600).
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
    let existing = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let values = secrets::generate(&names)?;
            secrets::create_env_file(&path, secrets::addition(b"", &values).as_bytes())
                .with_context(|| format!("cannot create {shown}"))?;
            outln!("wrote {} to {shown} (mode 0600)", names.join(", "));
            return Ok(EXIT_OK);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
    };
    let values =
        secrets::read_env_file(&path).with_context(|| format!("cannot parse env file {shown}"))?;
    let missing = secrets::missing(&names, &values);
    if missing.is_empty() {
        outln!(
            "{shown} already has a value for {}: nothing changed",
            names.join(", ")
        );
        return Ok(EXIT_OK);
    }
    if !args.force {
        eprintln!(
            "selfdeploy: gen-secrets: {shown} exists and has no value for {}; left unchanged (add --force to append, keeping every existing line)",
            missing.join(", ")
        );
        return Ok(EXIT_USAGE);
    }
    let values = secrets::generate(&missing)?;
    append(&path, secrets::addition(&existing, &values).as_bytes())
        .with_context(|| format!("cannot append to {shown}"))?;
    outln!("appended {} to {shown} (mode 0600)", missing.join(", "));
    Ok(EXIT_OK)
}

/// Appends in one write, so the existing bytes, the owner and a symbolic
/// link stay as they are; the file becomes readable by its owner only
/// before the secret is written into it (a file that holds a secret is 0600,
/// whoever created it).
fn append(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().append(true).open(path)?;
    file.set_permissions(Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}
