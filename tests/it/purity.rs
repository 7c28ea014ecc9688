//! The machine decides and never performs: `src/machine.rs` and every module
//! of the crate it reaches (by `use crate::...`, `crate::...` paths,
//! `super::...` paths and `mod` declarations, transitively) must be free of
//! I/O, processes, the network, the environment and the clock. This test
//! enforces it.
//!
//! How it works: each file is tokenized by a real Rust lexer
//! (`proc_macro2`), so comments never reach the scan; `#[cfg(test)]` items are
//! skipped (unit tests may touch the disk). A file fails when it names any of
//! [`FORBIDDEN`]: `std::fs`, `std::process`, `std::net`, `std::env`, the
//! clock (`SystemTime::now`, `Instant::now`), or the crates that do I/O
//! (`tokio`, `duct`, `notify`, `which`, `libc`, `tempfile`, `dotenvy`,
//! `getrandom`), including inside a `use std::{...}` group.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// Where the pure core starts.
const ROOT: &str = "src/machine.rs";

/// Paths (as `::`-joined idents) whose mention means I/O, a clock or the
/// environment.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::process",
    "std::net",
    "std::env",
    "SystemTime::now",
    "Instant::now",
    "tokio",
    "duct",
    "notify",
    "which",
    "libc",
    "tempfile",
    "dotenvy",
    "getrandom",
];

/// The idents of a token stream, with `::` kept as its own item and groups
/// flattened, `#[cfg(test)]` items left out.
fn words(stream: TokenStream, out: &mut Vec<String>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                if let Some(TokenTree::Group(g)) = tokens.get(i + 1)
                    && g.delimiter() == Delimiter::Bracket
                    && g.stream().to_string().replace(' ', "") == "cfg(test)"
                {
                    // Skip the attribute and the item it guards: up to and
                    // including its body (a brace group) or its `;`.
                    i += 2;
                    while i < tokens.len() {
                        match &tokens[i] {
                            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => break,
                            TokenTree::Punct(p) if p.as_char() == ';' => break,
                            _ => i += 1,
                        }
                    }
                    i += 1;
                    continue;
                }
                out.push("#".into());
            }
            TokenTree::Punct(p) if p.as_char() == ':' => {
                if let Some(TokenTree::Punct(q)) = tokens.get(i + 1)
                    && q.as_char() == ':'
                {
                    out.push("::".into());
                    i += 2;
                    continue;
                }
                out.push(":".into());
            }
            TokenTree::Punct(p) => out.push(p.as_char().to_string()),
            TokenTree::Ident(id) => out.push(id.to_string()),
            TokenTree::Literal(_) => out.push("<lit>".into()),
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                out.push(open.into());
                words(g.stream(), out);
                out.push(close.into());
            }
        }
        i += 1;
    }
}

fn lex(text: &str) -> Vec<String> {
    let stream = TokenStream::from_str(text).expect("the file lexes");
    let mut out = Vec::new();
    words(stream, &mut out);
    out
}

/// The forbidden names a file's words mention.
fn offences(words: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, w) in words.iter().enumerate() {
        for bad in FORBIDDEN {
            let parts: Vec<&str> = bad.split("::").collect();
            let mut at = i;
            let mut ok = true;
            for (k, part) in parts.iter().enumerate() {
                if k > 0 {
                    if words.get(at).map(String::as_str) != Some("::") {
                        ok = false;
                        break;
                    }
                    at += 1;
                }
                if words.get(at).map(String::as_str) != Some(part) {
                    ok = false;
                    break;
                }
                at += 1;
            }
            // A single name counts only as a path's first segment.
            let is_path_start = parts.len() > 1
                || words.get(i + 1).map(String::as_str) == Some("::")
                || i > 0 && words[i - 1] == "use";
            // A crate or `std` path starts a path; a clock call may stand
            // anywhere in one (`std::time::SystemTime::now`).
            let anchored = bad.ends_with("::now") || i == 0 || words[i - 1] != "::";
            if ok && is_path_start && anchored {
                found.push((*bad).to_owned());
            }
        }
        // `use std::{fs, ...}`: a group after `std::`.
        if w == "std"
            && words.get(i + 1).map(String::as_str) == Some("::")
            && words.get(i + 2).map(String::as_str) == Some("{")
        {
            let mut depth = 0;
            for inner in &words[i + 2..] {
                match inner.as_str() {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    name if depth == 1 && ["fs", "process", "net", "env"].contains(&name) => {
                        found.push(format!("std::{name}"));
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

/// The module files a file reaches: `crate::a::b` paths, `super::` paths and
/// `mod x;` declarations, resolved to files under `src/`.
fn reached(src: &Path, file: &Path, words: &[String]) -> BTreeSet<PathBuf> {
    let module_dir = |f: &Path| -> PathBuf {
        // The directory a file's child modules live in.
        if f.file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            f.parent().unwrap().to_path_buf()
        } else {
            f.with_extension("")
        }
    };
    let resolve = |mut dir: PathBuf, segments: &[&String]| -> Vec<PathBuf> {
        let mut files = Vec::new();
        for seg in segments {
            let flat = dir.join(format!("{seg}.rs"));
            let nested = dir.join(seg.as_str()).join("mod.rs");
            if flat.is_file() {
                files.push(flat);
            } else if nested.is_file() {
                files.push(nested);
            } else {
                break;
            }
            dir = dir.join(seg.as_str());
        }
        files
    };
    let path_after = |start: usize| -> Vec<&String> {
        let mut segs = Vec::new();
        let mut at = start;
        while words.get(at).map(String::as_str) == Some("::") {
            match words.get(at + 1) {
                Some(w)
                    if w.chars()
                        .next()
                        .is_some_and(|c| c.is_alphabetic() || c == '_') =>
                {
                    segs.push(w);
                    at += 2;
                }
                _ => break,
            }
        }
        segs
    };
    let mut out = BTreeSet::new();
    for (i, w) in words.iter().enumerate() {
        match w.as_str() {
            "crate" => out.extend(resolve(src.to_path_buf(), &path_after(i + 1))),
            "super" => {
                let parent = if file.file_name().is_some_and(|n| n == "mod.rs") {
                    file.parent().unwrap().parent().unwrap().to_path_buf()
                } else {
                    file.parent().unwrap().to_path_buf()
                };
                out.extend(resolve(parent, &path_after(i + 1)));
            }
            "mod" => {
                if let (Some(name), Some(";")) =
                    (words.get(i + 1), words.get(i + 2).map(String::as_str))
                {
                    out.extend(resolve(module_dir(file), &[name]));
                }
            }
            _ => {}
        }
    }
    out
}

/// Every file the pure core reaches from `root`, with what each names that
/// it must not.
fn scan(src: &Path, root: &Path) -> (BTreeSet<PathBuf>, Vec<String>) {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    let mut problems = Vec::new();
    while let Some(file) = todo.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let words = lex(&text);
        for bad in offences(&words) {
            problems.push(format!("{} uses {bad}", file.display()));
        }
        todo.extend(reached(src, &file, &words));
    }
    (seen, problems)
}

#[test]
fn the_machine_and_what_it_imports_are_pure() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = crate_dir.join("src");
    let (files, problems) = scan(&src, &crate_dir.join(ROOT));
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    // The closure is what it should be, so the test cannot pass vacuously.
    for expected in [
        "machine.rs",
        "effect.rs",
        "config/mod.rs",
        "config/registry.rs",
        "contract/mod.rs",
        "contract/remote.rs",
        "contract/deploy_log.rs",
        "contract/markers.rs",
        "contract/hook_result.rs",
        "contract/names.rs",
        "contract/pytext.rs",
    ] {
        assert!(
            names.contains(expected),
            "{expected} not reached: {names:?}"
        );
    }
    assert!(
        problems.is_empty(),
        "the pure core does I/O; move it to the executor or the engine:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scan_sees_what_it_must_and_nothing_else() {
    let flagged = |text: &str| offences(&lex(text));
    assert_eq!(flagged("fn f() { std::fs::read(\"x\"); }"), ["std::fs"]);
    assert_eq!(
        flagged("use std::{fmt, process::Command};"),
        ["std::process"]
    );
    assert_eq!(flagged("use std::{fmt, env};"), ["std::env"]);
    assert_eq!(flagged("use tokio::time;"), ["tokio"]);
    assert_eq!(
        flagged("let t = std::time::SystemTime::now();"),
        ["SystemTime::now"]
    );
    assert_eq!(flagged("let c = duct::cmd(\"x\", [\"y\"]);"), ["duct"]);
    // Comments, doc text, string contents, other crates' paths and
    // `#[cfg(test)]` items are not code of the core.
    assert!(flagged("// std::fs::read\nfn g() {}").is_empty());
    assert!(flagged("/// uses std::process\nfn g() {}").is_empty());
    assert!(flagged("fn g() -> &'static str { \"std::net\" }").is_empty());
    assert!(flagged("use crate::exec::which_one;").is_empty());
    assert!(flagged("#[cfg(test)]\nmod tests { fn t() { std::fs::read(\"x\"); } }").is_empty());
    assert!(flagged("fn h(which: u8) -> u8 { which }").is_empty());
}

#[test]
fn a_planted_import_of_io_is_found_through_the_closure() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("contract")).unwrap();
    std::fs::write(
        src.join("machine.rs"),
        "use crate::contract::remote;\nfn f() {}\n",
    )
    .unwrap();
    std::fs::write(src.join("contract/mod.rs"), "pub mod remote;\nmod io;\n").unwrap();
    std::fs::write(src.join("contract/remote.rs"), "pub fn quote() {}\n").unwrap();
    std::fs::write(
        src.join("contract/io.rs"),
        "pub fn leak() { let _ = std::process::Command::new(\"sh\"); }\n",
    )
    .unwrap();
    let (files, problems) = scan(&src, &src.join("machine.rs"));
    assert_eq!(files.len(), 4, "{files:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].ends_with("contract/io.rs uses std::process"),
        "{problems:?}"
    );
}
