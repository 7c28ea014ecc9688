//! Fresh values for the secret settings, and what adding the missing ones to
//! an env file means: `selfdeploy gen-secrets`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::config::REGISTRY;

/// Bytes of randomness in one generated secret (64 hex characters).
pub const SECRET_BYTES: usize = 32;

/// The names of the secret settings that get fresh values, in registry
/// order. Earlier keys kept for verification are never generated.
pub fn secret_names() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|s| s.is_secret() && !s.name.ends_with("_PREVIOUS_KEYS"))
        .map(|s| s.name)
        .collect()
}

/// One secret: 32 bytes from the operating system's random source, as 64
/// lowercase hex characters.
pub fn token() -> io::Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| io::Error::other(format!("no random bytes from the system: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Creates the env file `path` holding `bytes`, mode 0600 from the start,
/// whole or not at all, never over a file that appeared meanwhile.
pub fn create_env_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic::create_private(path, bytes)
}

/// A fresh value for each name.
pub fn generate(names: &[&'static str]) -> io::Result<Vec<(&'static str, String)>> {
    names.iter().map(|n| Ok((*n, token()?))).collect()
}

/// The values an env file gives, read exactly as the settings loader reads
/// it (a key given twice: the last value; a line that does not parse is
/// named by its position, never shown).
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, crate::config::ConfigError> {
    crate::load_settings::read_env_file(path)
}

/// The names that `existing` gives no value, or an empty one.
pub fn missing(names: &[&'static str], existing: &BTreeMap<String, String>) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|n| existing.get(*n).is_none_or(|v| v.is_empty()))
        .collect()
}

/// The text to append to a file holding `existing` so that it gives these
/// values: `KEY=value` lines, after a line break if the file's last line has
/// none. Appended, a key that the file already names with an empty value is
/// given by the later line, which is the one the loader keeps.
pub fn addition(existing: &[u8], values: &[(&str, String)]) -> String {
    let mut text = String::new();
    if existing.last().is_some_and(|b| *b != b'\n') {
        text.push('\n');
    }
    for (name, value) in values {
        text.push_str(&format!("{name}={value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_key_is_a_secret() {
        assert!(secret_names().contains(&"HISTORY_HMAC_KEY"));
        assert!(!secret_names().contains(&"REPOS_DIR"));
    }

    #[test]
    fn tokens_are_64_lowercase_hex_and_differ() {
        let a = token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{a}");
        assert_ne!(a, token().unwrap());
    }

    #[test]
    fn missing_means_absent_or_empty() {
        let names = ["A", "B", "C"];
        let existing = BTreeMap::from([
            ("A".to_owned(), "x".to_owned()),
            ("B".to_owned(), String::new()),
        ]);
        assert_eq!(missing(&names, &existing), vec!["B", "C"]);
    }

    #[test]
    fn addition_keeps_the_last_line_whole() {
        let values = [("K", "v".to_owned())];
        assert_eq!(addition(b"", &values), "K=v\n");
        assert_eq!(addition(b"A=1\n", &values), "K=v\n");
        assert_eq!(addition(b"A=1", &values), "\nK=v\n");
    }
}
