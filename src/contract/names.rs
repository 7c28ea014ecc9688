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
    // Git never stores a path component that reads as `.git` (in any case,
    // with trailing dots: NTFS and HFS+ protection are on by default): a
    // deploy log below it would never be committed.
    if raw.to_ascii_lowercase().trim_end_matches('.') == ".git" {
        return Err(fail(
            "git cannot store it as a path component (it reads as .git)".into(),
        ));
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

/// A repository, by its identity: the name lower-cased.
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

/// A git branch a caller names: the push target and the freshness guard's
/// branch. Checked when the event is received, with git's rules for a branch
/// name (`git check-ref-format --branch`) and never starting with `-`, so
/// that nothing from outside can reach git as an option (`--mirror`,
/// `--receive-pack=...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BranchName(String);

/// Why a branch name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid branch {shown}: {problem}; use a git branch name (see git check-ref-format), not starting with '-'"
)]
pub struct BranchError {
    shown: String,
    problem: String,
}

/// The longest branch name accepted, in bytes.
pub const MAX_BRANCH_BYTES: usize = 255;

impl BranchName {
    pub fn new(raw: &str) -> Result<Self, BranchError> {
        let fail = |problem: &str| BranchError {
            shown: format!("{raw:?}"),
            problem: problem.to_owned(),
        };
        if raw.is_empty() {
            return Err(fail("it is empty"));
        }
        if raw.len() > MAX_BRANCH_BYTES {
            return Err(fail("it is too long"));
        }
        if raw.starts_with('-') {
            return Err(fail("it starts with '-' and would be read as an option"));
        }
        if raw == "HEAD" || raw == "@" {
            return Err(fail("it names no branch"));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| c.is_ascii_control() || " ~^:?*[\\".contains(*c))
        {
            return Err(fail(&format!("it contains {c:?}")));
        }
        for (bad, why) in [
            ("..", "it contains '..'"),
            ("@{", "it contains '@{'"),
            ("//", "it contains '//'"),
        ] {
            if raw.contains(bad) {
                return Err(fail(why));
            }
        }
        if raw.starts_with('/') || raw.ends_with('/') || raw.ends_with('.') {
            return Err(fail("it begins or ends with '/', or ends with '.'"));
        }
        if raw
            .split('/')
            .any(|part| part.starts_with('.') || part.ends_with(".lock"))
        {
            return Err(fail("a part of it begins with '.' or ends with '.lock'"));
        }
        Ok(BranchName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exactly what git refuses as a path component on this platform (each
    /// checked against a real `git add`: `tests/it/git_safety.rs`).
    #[test]
    fn names_that_read_as_dot_git_are_rejected() {
        for bad in [".git", ".GIT", ".Git", ".git.", ".git..", ".gIt..."] {
            for err in [
                WorkItem::new(bad).unwrap_err(),
                RepoName::new(bad).unwrap_err(),
            ] {
                assert!(
                    err.to_string().contains("git cannot store it"),
                    "{bad}: {err}"
                );
            }
        }
        for ok in [
            ".gitmodules",
            ".gitignore",
            "a.git",
            ".git_",
            "..git",
            ".git-",
            "git",
        ] {
            assert!(WorkItem::new(ok).is_ok(), "{ok}");
        }
    }

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
    fn branch_names_follow_git_and_never_look_like_options() {
        for ok in ["main", "feat/x", "deploy/ORCH-7", "ä", "a.b", "a-b_c"] {
            assert_eq!(BranchName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "-d",
            "--mirror",
            "--receive-pack=touch x",
            "-fdelete",
            "a..b",
            "x y",
            "HEAD",
            "@",
            "a@{1}",
            "a/",
            "/a",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a\nb",
            "a\x7fb",
        ] {
            let err = BranchName::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid branch"), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn error_names_the_problem() {
        let err = RepoName::new("a/b").unwrap_err().to_string();
        assert!(err.contains("\"a/b\"") && err.contains("'/'"), "{err}");
    }

    #[test]
    fn repos_compare_hash_and_sort_by_identity() {
        use std::collections::HashSet;
        let a = RepoName::new("Orchestrator").unwrap();
        let b = RepoName::new("orchestrator").unwrap();
        let c = RepoName::new("billing").unwrap();
        assert_ne!(a, c);
        let set: HashSet<RepoName> = [a.clone(), b, c.clone()].into_iter().collect();
        assert_eq!(set.len(), 2);
        let mut sorted = vec![a.clone(), c.clone()];
        sorted.sort();
        assert_eq!(sorted, [c.clone(), a.clone()]);
        assert_eq!(a.partial_cmp(&c), Some(std::cmp::Ordering::Greater));
    }

    #[test]
    fn a_branch_shows_as_it_was_given() {
        assert_eq!(
            BranchName::new("deploy/ORCH-7").unwrap().to_string(),
            "deploy/ORCH-7"
        );
    }
}
