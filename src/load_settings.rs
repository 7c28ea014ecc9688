//! Reading the settings from the process environment and an env file (the
//! environment wins), and the typo warnings for names that are not settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, REGISTRY, Settings, Source, strict, unknown_settings};

impl Settings {
    /// Settings from the process environment and an env file: `path` when
    /// given (it must exist), else `.env` in the working directory if there is
    /// one. The real environment wins over the file.
    pub fn load(env_file: Option<&Path>) -> Result<Settings, ConfigError> {
        strict(Settings::load_lenient(env_file)?)
    }

    /// Like `load`, but a value that does not parse reads as its default and
    /// is returned among the errors, so that every problem can be reported.
    pub fn load_lenient(
        env_file: Option<&Path>,
    ) -> Result<(Settings, Vec<ConfigError>), ConfigError> {
        let (file_values, file_path) = match env_file {
            Some(path) => (read_env_file(path)?, Some(path.to_path_buf())),
            None => {
                let path = PathBuf::from(".env");
                if path.is_file() {
                    (read_env_file(&path)?, Some(path))
                } else {
                    (BTreeMap::new(), None)
                }
            }
        };
        let mut names: Vec<String> = file_values.keys().cloned().collect();
        names.extend(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
        let warnings = unknown_settings(&names);
        let mut raw = Vec::new();
        for spec in REGISTRY {
            if let Some(value) = std::env::var_os(spec.name) {
                let value = value.into_string().map_err(|_| ConfigError::NotUtf8 {
                    name: spec.name,
                    origin: Source::Environment,
                })?;
                raw.push((spec.name, value, Source::Environment));
            } else if let (Some(value), Some(path)) = (file_values.get(spec.name), &file_path) {
                raw.push((spec.name, value.clone(), Source::DotEnv(path.clone())));
            }
        }
        let (mut settings, errors) = Settings::resolve(raw);
        settings.warnings = warnings;
        Ok((settings, errors))
    }
}

pub(crate) fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let err = |problem: String| ConfigError::EnvFile {
        path: path.to_path_buf(),
        problem,
    };
    let iter = dotenvy::from_path_iter(path).map_err(|e| err(env_file_problem(&e)))?;
    let mut values = BTreeMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| err(env_file_problem(&e)))?;
        values.insert(k, v);
    }
    Ok(values)
}

/// What is wrong with an env file, without its content: the line that does
/// not parse may hold a secret.
fn env_file_problem(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, at) => {
            let number = line.lines().count().max(1);
            format!(
                "a line does not parse (at character {at} of a {number}-line entry); quote values that hold spaces or '#'"
            )
        }
        other => other.to_string(),
    }
}
