//! The deploy log the platform's quality gate reads (its frontmatter is
//! machine-read, byte for byte) and the merge stamp. Pure: text in, text out.

use std::path::PathBuf;

use crate::contract::hook_result::Verdict;
use crate::contract::names::WorkItem;
use crate::contract::pytext;

/// The log's path inside a work item's worktree.
pub fn relative_path(work_item: &WorkItem) -> PathBuf {
    PathBuf::from(format!("docs/work-items/{work_item}/14-deploy-log.md"))
}

/// What the body of the log tells a human reader; only the frontmatter is
/// machine-read.
#[derive(Debug, Clone, Default)]
pub struct Details<'a> {
    pub repo: &'a str,
    pub approved_by: Option<&'a str>,
    pub revision: Option<&'a str>,
    pub garbage: Option<&'a str>,
}

/// The whole file. Deterministic: the same inputs give the same bytes, so a
/// retried finalize rewrites an identical file.
pub fn render(work_item: &WorkItem, exit_code: &str, verdict: Verdict, d: &Details<'_>) -> String {
    let mut out = format!(
        "---\ndeploy_status: {verdict}\nwork_item: {work_item}\nhook_exit_code: {exit_code}\n\
         deployed_by: deploy-finalizer\n---\n\n"
    );
    out.push_str("# Deploy log\n\n");
    out.push_str(&format!(
        "The host deploy hook of `{}` exited with code `{exit_code}`, so the deploy is \
         `{verdict}`.\n\n",
        d.repo
    ));
    if exit_code == crate::contract::hook_result::TIMEOUT_EXIT_CODE {
        out.push_str(
            "The hook wrote no result before the result deadline; the deploy is counted as \
             failed (fail-closed). Check the host: the hook may still be running.\n\n",
        );
    }
    if let Some(raw) = d.garbage {
        out.push_str(&format!(
            "The result file did not hold an integer ({raw:?}); it is read as exit code 1 \
             (fail-closed).\n\n"
        ));
    }
    if let Some(who) = d.approved_by {
        out.push_str(&format!("- approved by: {who}\n"));
    }
    if let Some(rev) = d.revision {
        out.push_str(&format!("- expected revision: {rev}\n"));
    }
    out.push_str(
        "- verdict: computed by the deterministic finalizer from the exit code \
         (0 success; 1 rolled back; 2 rollback failed; anything else failed)\n",
    );
    out
}

/// What stamping did to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stamp {
    /// The new content to write.
    Rewritten(String),
    /// The file has no frontmatter: left untouched, as the original does.
    NoFrontmatter,
}

/// Stamps `merged_to_main: true|false` into the frontmatter as the original
/// does it, including its reading of the file with universal newlines and
/// Python's `str.splitlines` line boundaries; the one difference is where the
/// frontmatter closes (see below).
pub fn stamp_merged(content: &str, merged: bool) -> Stamp {
    let content = pytext::universal_newlines(content);
    if !content.starts_with("---") {
        return Stamp::NoFrontmatter;
    }
    // The frontmatter closes at the first later `---` that begins a line.
    // The original splits at any `---`, which cuts a value such as a work
    // item `A---B` in two; wherever the first `---` does begin a line, the
    // two splits are the same.
    let after_open = &content[3..];
    let Some(close) = after_open.find("\n---").map(|i| i + 1) else {
        return Stamp::NoFrontmatter;
    };
    let (frontmatter, rest) = (&after_open[..close], &after_open[close + 3..]);
    let stamp = format!("merged_to_main: {merged}");
    let mut lines: Vec<&str> = Vec::new();
    let mut replaced = false;
    for line in pytext::splitlines(frontmatter) {
        if pytext::strip(line)
            .to_lowercase()
            .starts_with("merged_to_main:")
        {
            lines.push(&stamp);
            replaced = true;
        } else {
            lines.push(line);
        }
    }
    if !replaced {
        if lines.first() == Some(&"") {
            lines.remove(0);
        }
        lines.push(&stamp);
    }
    let joined = lines.join("\n");
    Stamp::Rewritten(format!("---\n{}\n---{rest}", joined.trim_matches('\n')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::hook_result::TIMEOUT_EXIT_CODE;

    fn wi() -> WorkItem {
        WorkItem::new("ORCH-36").unwrap()
    }

    #[test]
    fn frontmatter_bytes_are_the_contract() {
        let log = render(&wi(), "0", Verdict::Success, &Details::default());
        assert!(log.starts_with(
            "---\ndeploy_status: SUCCESS\nwork_item: ORCH-36\nhook_exit_code: 0\n\
             deployed_by: deploy-finalizer\n---\n\n"
        ));
        let log = render(&wi(), "2", Verdict::Failed, &Details::default());
        assert!(log.starts_with(
            "---\ndeploy_status: FAILED\nwork_item: ORCH-36\nhook_exit_code: 2\n\
             deployed_by: deploy-finalizer\n---\n\n"
        ));
    }

    #[test]
    fn render_is_deterministic() {
        let d = Details {
            repo: "orchestrator",
            approved_by: Some("alice"),
            revision: Some("abc"),
            garbage: Some("x"),
        };
        assert_eq!(
            render(&wi(), "1", Verdict::Failed, &d),
            render(&wi(), "1", Verdict::Failed, &d)
        );
    }

    fn stamped(content: &str, merged: bool) -> String {
        match stamp_merged(content, merged) {
            Stamp::Rewritten(s) => s,
            Stamp::NoFrontmatter => panic!("expected a rewrite of {content:?}"),
        }
    }

    #[test]
    fn stamp_appends_as_last_frontmatter_line() {
        let log = render(&wi(), "0", Verdict::Success, &Details::default());
        let out = stamped(&log, true);
        assert!(out.starts_with(
            "---\ndeploy_status: SUCCESS\nwork_item: ORCH-36\nhook_exit_code: 0\n\
             deployed_by: deploy-finalizer\nmerged_to_main: true\n---\n\n# Deploy log"
        ));
        assert_eq!(
            &out[out.find("\n---\n").unwrap()..],
            &log[log.find("\n---\n").unwrap()..]
        );
    }

    #[test]
    fn stamp_replaces_the_line_in_any_case() {
        let out = stamped(
            "---\na: 1\n  MERGED_TO_MAIN: true  \nb: 2\n---\nbody\n",
            false,
        );
        assert_eq!(out, "---\na: 1\nmerged_to_main: false\nb: 2\n---\nbody\n");
        let again = stamped(&out, false);
        assert_eq!(again, out, "idempotent");
    }

    #[test]
    fn stamp_leaves_files_without_frontmatter_alone() {
        assert_eq!(stamp_merged("# title\n---\n", true), Stamp::NoFrontmatter);
        assert_eq!(stamp_merged("", true), Stamp::NoFrontmatter);
        assert_eq!(
            stamp_merged("---\nonly one fence\n", true),
            Stamp::NoFrontmatter
        );
    }

    #[test]
    fn stamp_turns_every_cr_into_lf() {
        let out = stamped(
            "---\r\ndeploy_status: FAILED\r\n---\r\nline\rnext\r\n",
            true,
        );
        assert_eq!(
            out,
            "---\ndeploy_status: FAILED\nmerged_to_main: true\n---\nline\nnext\n"
        );
    }

    #[test]
    fn stamp_edge_shapes_match_the_original() {
        // Values computed by hand from the original's algorithm.
        assert_eq!(
            stamped("---\n\n\na: 1\n\n---x", true),
            "---\na: 1\n\nmerged_to_main: true\n---x"
        );
        // Where the first later `---` does not begin a line the original cuts
        // there; the contract closes only at a `---` that begins a line.
        assert_eq!(stamp_merged("------", true), Stamp::NoFrontmatter);
        assert_eq!(stamp_merged("---a\x0cb---", false), Stamp::NoFrontmatter);
        assert_eq!(
            stamped("---\nwork_item: A---B\n---\n", true),
            "---\nwork_item: A---B\nmerged_to_main: true\n---\n"
        );
        assert_eq!(
            stamped("---\n---\n---\n", true),
            "---\nmerged_to_main: true\n---\n---\n"
        );
    }

    #[test]
    fn only_a_timeout_says_the_hook_may_still_run() {
        let timeout = render(
            &wi(),
            TIMEOUT_EXIT_CODE,
            Verdict::Failed,
            &Details::default(),
        );
        let failed = render(&wi(), "1", Verdict::Failed, &Details::default());
        let says = "no result before the result deadline";
        assert!(timeout.contains(says), "{timeout}");
        assert!(!failed.contains(says), "{failed}");
    }
}
