//! Reading the settings from the process environment and an env file (the
//! environment wins), and the warnings for names that look like settings but
//! are not, and for settings given twice in the file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::config::env_file::{self, Entry};
use crate::config::{
    ChosenBy, ConfigError, ENV_FILE_VARIABLE, EnvFile, REGISTRY, SYSTEM_ENV_FILE,
    SYSTEM_ENV_FILE_GROUP, Settings, Source, closest_setting, strict,
};

impl Settings {
    /// Settings from the process environment and an env file, the first of:
    /// `path` when given, the file `SELFDEPLOY_ENV_FILE` names (each must
    /// exist; the variable set but empty: no file), `.env` in the working
    /// directory, the system env file. The real environment wins over the
    /// file.
    pub fn load(env_file: Option<&Path>) -> Result<Settings, ConfigError> {
        strict(Settings::load_lenient(env_file)?)
    }

    /// Like `load`, but a value that does not parse reads as its default and
    /// is returned among the errors, so that every problem can be reported.
    pub fn load_lenient(
        env_file: Option<&Path>,
    ) -> Result<(Settings, Vec<ConfigError>), ConfigError> {
        let chosen = choose_env_file(env_file, std::env::var_os(ENV_FILE_VARIABLE))?;
        let (entries, file_path) = match &chosen {
            EnvFile::Read { path, .. } => (read_entries(path)?, Some(path.clone())),
            _ => (Vec::new(), None),
        };
        let mut warnings = Vec::new();
        let mut file_values: BTreeMap<&str, &str> = BTreeMap::new();
        let mut first_line: BTreeMap<&str, usize> = BTreeMap::new();
        let mut last_line: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &entries {
            file_values.insert(&e.name, &e.value);
            first_line.entry(&e.name).or_insert(e.line);
            last_line.insert(&e.name, e.line);
        }
        if let Some(path) = &file_path {
            for (name, first) in &first_line {
                let last = last_line.get(name).copied().unwrap_or(*first);
                if last != *first {
                    warnings.push(format!(
                        "{name} is set more than once in {} (lines {first} and {last}): line {last} is the one in force; keep one",
                        path.display()
                    ));
                }
            }
            for (name, line) in &first_line {
                if let Some(closest) = closest_setting(name) {
                    warnings.push(typo(
                        name,
                        closest,
                        &format!("{}, line {line}", path.display()),
                    ));
                }
            }
        }
        for (name, _) in std::env::vars_os() {
            let Ok(name) = name.into_string() else {
                continue;
            };
            if first_line.contains_key(name.as_str()) {
                continue; // warned about as the file's (under systemd, both hold it)
            }
            if let Some(closest) = closest_setting(&name) {
                warnings.push(typo(&name, closest, "the environment"));
            }
        }
        let mut raw = Vec::new();
        for spec in REGISTRY {
            if let Some(value) = std::env::var_os(spec.name) {
                let value = value.into_string().map_err(|_| ConfigError::NotUtf8 {
                    name: spec.name,
                    origin: Source::Environment,
                })?;
                raw.push((spec.name, value, Source::Environment));
            } else if let (Some(value), Some(path)) = (file_values.get(spec.name), &file_path) {
                raw.push((spec.name, (*value).to_owned(), Source::DotEnv(path.clone())));
            }
        }
        let (mut settings, errors) = Settings::resolve(raw);
        settings.warnings = warnings;
        settings.env_file = chosen;
        Ok((settings, errors))
    }
}

fn typo(name: &str, closest: &str, origin: &str) -> String {
    format!(
        "{name} (from {origin}) is not a setting (did you mean {closest}?); its value is not used; `selfdeploy config` lists them all"
    )
}

/// Which env file to read: `--env-file`, else `SELFDEPLOY_ENV_FILE` (set
/// but empty: none), else `./.env`, else the system file when it exists.
fn choose_env_file(
    flag: Option<&Path>,
    variable: Option<OsString>,
) -> Result<EnvFile, ConfigError> {
    if let Some(path) = flag {
        return Ok(EnvFile::Read {
            path: path.to_path_buf(),
            chosen_by: ChosenBy::Flag,
        });
    }
    if let Some(value) = variable {
        if value.is_empty() {
            return Ok(EnvFile::Off);
        }
        return Ok(EnvFile::Read {
            path: PathBuf::from(value),
            chosen_by: ChosenBy::Variable,
        });
    }
    let local = PathBuf::from(".env");
    if local.is_file() {
        return Ok(EnvFile::Read {
            path: local,
            chosen_by: ChosenBy::WorkingDirectory,
        });
    }
    let system = PathBuf::from(SYSTEM_ENV_FILE);
    match std::fs::metadata(&system) {
        Ok(_) => Ok(EnvFile::Read {
            path: system,
            chosen_by: ChosenBy::System,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(EnvFile::NotFound { system }),
        Err(e) => Err(ConfigError::EnvFile {
            problem: read_problem(&system, &e),
            path: system,
        }),
    }
}

/// The entries of an env file, read as `parse` reads them; an error names
/// the file, and the line for one that the grammar refuses.
fn read_entries(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let bytes = open_env_file(path)
        .and_then(|file| read_env_bytes(&file))
        .map_err(|e| ConfigError::EnvFile {
            path: path.to_path_buf(),
            problem: read_problem(path, &e),
        })?;
    env_file::parse(&bytes).map_err(|e| ConfigError::EnvFileLine {
        path: path.to_path_buf(),
        line: e.line,
        problem: e.problem,
    })
}

/// The most an env file may hold: a few settings take a few hundred bytes;
/// more is not an env file (or is `/dev/zero`), and is refused rather than
/// read into memory.
pub const ENV_FILE_LIMIT: u64 = 1024 * 1024;

/// Opens an env file for reading (through a symbolic link, as every reader
/// of it does) without ever waiting: a FIFO, a socket or a device is
/// refused, never opened for a read that blocks until a writer comes.
pub(crate) fn open_env_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        return Err(io::Error::from(io::ErrorKind::IsADirectory));
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(io::Error::other(format!(
        "it is {what}, not a regular file; name the env file itself (to read none, set {ENV_FILE_VARIABLE} empty)"
    )))
}

/// The bytes of an opened env file, refused past `ENV_FILE_LIMIT`.
pub(crate) fn read_env_bytes(file: &std::fs::File) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    file.take(ENV_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > ENV_FILE_LIMIT {
        return Err(io::Error::other(format!(
            "it is larger than {} KiB, too large for an env file",
            ENV_FILE_LIMIT / 1024
        )));
    }
    Ok(bytes)
}

/// Why a file cannot be read, and what to do.
fn read_problem(path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!(
            "it does not exist; create it (from .env.example), or name another with --env-file or {ENV_FILE_VARIABLE}"
        ),
        io::ErrorKind::PermissionDenied => {
            let group = std::fs::metadata(path)
                .ok()
                .and_then(|m| group_name(m.gid()))
                .filter(|g| g != "root")
                .unwrap_or_else(|| SYSTEM_ENV_FILE_GROUP.to_owned());
            format!(
                "permission denied; add yourself to the {group} group that may read it (sudo usermod -aG {group} \"$USER\", then log in again), or run selfdeploy as the service user (sudo -u {SYSTEM_ENV_FILE_GROUP} selfdeploy ...)"
            )
        }
        io::ErrorKind::IsADirectory => "it is a directory; name the env file itself".to_owned(),
        _ => e.to_string(),
    }
}

/// The name of the group `gid`, from the system's group database.
fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed `group` is a valid out-parameter; `getgrgid_r` writes
    // into it and into `buf` (whose length it is given) only, and sets
    // `result` to null or to `grp`.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: on success `gr_name` points at a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The values of an env file (a name given twice: the last value), for
/// `gen-secrets`; errors as the settings loader gives them.
pub(crate) fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    Ok(read_entries(path)?
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_then_the_variable_choose_the_file() {
        let flag = Path::new("a.env");
        assert_eq!(
            choose_env_file(Some(flag), Some("b.env".into())).unwrap(),
            EnvFile::Read {
                path: flag.into(),
                chosen_by: ChosenBy::Flag
            }
        );
        assert_eq!(
            choose_env_file(None, Some("b.env".into())).unwrap(),
            EnvFile::Read {
                path: "b.env".into(),
                chosen_by: ChosenBy::Variable
            }
        );
        assert_eq!(
            choose_env_file(None, Some("".into())).unwrap(),
            EnvFile::Off
        );
    }

    #[test]
    fn root_s_group_has_a_name() {
        assert_eq!(group_name(0).as_deref(), Some("root"));
    }
}
