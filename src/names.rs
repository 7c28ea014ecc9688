//! Validated names that become path components.
//!
//! Repo and work-item names are joined into state-directory paths on two
//! machines, so they are checked once, at the edge, and carried as newtypes
//! afterwards: nothing downstream can build a path from an unchecked string.

use std::fmt;

use serde::Serialize;

/// The longest name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} {shown}: {problem}; use 1 to {MAX_NAME_BYTES} characters from A-Z a-z 0-9 . _ - not starting with '-'"
)]
pub struct NameError {
    what: &'static str,
    shown: String,
    problem: String,
}

fn check(what: &'static str, raw: &str) -> Result<(), NameError> {
    let fail = |problem: String| NameError {
        what,
        shown: format!("{raw:?}"),
        problem,
    };
    if raw.is_empty() {
        return Err(fail("it is empty".into()));
    }
    if raw.len() > MAX_NAME_BYTES {
        return Err(fail(format!("it is {} bytes long", raw.len())));
    }
    if raw == "." || raw == ".." {
        return Err(fail("it names a directory itself".into()));
    }
    if raw.starts_with('-') {
        return Err(fail("it starts with '-'".into()));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(fail(format!("it contains {bad:?}")));
    }
    Ok(())
}

macro_rules! path_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(raw: &str) -> Result<Self, NameError> {
                check($what, raw)?;
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(raw: &str) -> Result<Self, NameError> {
                Self::new(raw)
            }
        }
    };
}

/// A repository, by its identity: the name lower-cased (contract section 3).
/// `applies` ignores case, so the state directory, the lock and the history
/// do too: `Orchestrator` and `orchestrator` are one repo, never two
/// dispatches. The spelling the caller gave is kept for what reaches the
/// repo's own files (the worktree template's `{repo}`).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RepoName {
    key: String,
    #[serde(skip)]
    given: String,
}

impl RepoName {
    pub fn new(raw: &str) -> Result<Self, NameError> {
        check("repo name", raw)?;
        Ok(RepoName {
            key: raw.to_ascii_lowercase(),
            given: raw.to_owned(),
        })
    }

    /// The identity: lower-cased.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The spelling the caller gave.
    pub fn given(&self) -> &str {
        &self.given
    }
}

impl PartialEq for RepoName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for RepoName {}

impl std::hash::Hash for RepoName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialOrd for RepoName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RepoName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl std::str::FromStr for RepoName {
    type Err = NameError;
    fn from_str(raw: &str) -> Result<Self, NameError> {
        Self::new(raw)
    }
}

path_name!(
    /// A work item id (`ORCH-36`), stable for the whole life of the task.
    WorkItem,
    "work item"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in [
            "orchestrator",
            "ORCH-036",
            "a.b_c-d",
            "x",
            ".hidden",
            "a..b",
        ] {
            assert_eq!(WorkItem::new(ok).unwrap().as_str(), ok);
            assert_eq!(RepoName::new(ok).unwrap().given(), ok);
        }
        assert!(WorkItem::new(&"a".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn rejects_what_could_escape_or_confuse_a_path() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "", ".", "..", "a/b", "../x", "-rf", "a b", "é", "a\nb", "a\0b", &long,
        ] {
            let err = WorkItem::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid work item"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_repo_is_its_lower_cased_name() {
        let a = RepoName::new("Orchestrator").unwrap();
        let b = RepoName::new("ORCHESTRATOR").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "orchestrator");
        assert_eq!(a.to_string(), "orchestrator");
        assert_eq!(a.given(), "Orchestrator");
    }

    #[test]
    fn error_names_the_problem() {
        let err = RepoName::new("a/b").unwrap_err().to_string();
        assert!(err.contains("\"a/b\"") && err.contains("'/'"), "{err}");
    }
}
