//! No panic in shipped code, for good: the crate roots `src/lib.rs` and
//! `src/main.rs` deny clippy's lints for `unwrap`, `expect`, `panic!`,
//! `todo!`, `unimplemented!` and `unreachable!` outside tests, so that
//! `cargo clippy --all-targets -- -D warnings` fails on a new one. This test
//! fails when the attribute goes (or loses a lint, or becomes a warning, or
//! applies to tests only).
//!
//! How it works: each root is tokenized by a real Rust lexer (`proc_macro2`),
//! so a commented-out attribute does not count; the inner attributes at the
//! top level are read: `#![deny(...)]`/`#![forbid(...)]`, or the same inside
//! `#![cfg_attr(not(test), ...)]`.

use std::collections::BTreeSet;
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The clippy lints every crate root denies outside tests.
const LINTS: &[&str] = &[
    "unwrap_used",
    "expect_used",
    "panic",
    "todo",
    "unimplemented",
    "unreachable",
];

const ROOTS: &[&str] = &["src/lib.rs", "src/main.rs"];

/// A token stream as text without white space (`not(test)`,
/// `clippy::unwrap_used`).
fn squeeze(stream: TokenStream) -> String {
    stream
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// The clippy lints named by `deny(...)` or `forbid(...)` in `tokens`.
fn lints_of_levels(tokens: &[TokenTree], out: &mut BTreeSet<String>) {
    for pair in tokens.windows(2) {
        let (TokenTree::Ident(level), TokenTree::Group(args)) = (&pair[0], &pair[1]) else {
            continue;
        };
        if (level == "deny" || level == "forbid") && args.delimiter() == Delimiter::Parenthesis {
            for lint in squeeze(args.stream()).split(',') {
                if let Some(name) = lint.strip_prefix("clippy::") {
                    out.insert(name.to_owned());
                }
            }
        }
    }
}

/// The clippy lints the file's top-level inner attributes deny in a build
/// that is not a test build.
fn denied_outside_tests(text: &str) -> BTreeSet<String> {
    let stream = TokenStream::from_str(text).expect("the crate root lexes");
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut out = BTreeSet::new();
    for three in tokens.windows(3) {
        let (TokenTree::Punct(hash), TokenTree::Punct(bang), TokenTree::Group(attr)) =
            (&three[0], &three[1], &three[2])
        else {
            continue;
        };
        if hash.as_char() != '#' || bang.as_char() != '!' || attr.delimiter() != Delimiter::Bracket
        {
            continue;
        }
        let inner: Vec<TokenTree> = attr.stream().into_iter().collect();
        match inner.as_slice() {
            [TokenTree::Ident(name), TokenTree::Group(args)] if name == "cfg_attr" => {
                let args: Vec<TokenTree> = args.stream().into_iter().collect();
                let comma = args
                    .iter()
                    .position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','));
                let Some(comma) = comma else { continue };
                let predicate: TokenStream = args[..comma].iter().cloned().collect();
                if squeeze(predicate) == "not(test)" {
                    lints_of_levels(&args[comma + 1..], &mut out);
                }
            }
            _ => lints_of_levels(&inner, &mut out),
        }
    }
    out
}

#[test]
fn the_crate_roots_deny_panics_outside_tests() {
    for root in ROOTS {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
        let text = std::fs::read_to_string(&path).unwrap();
        let denied = denied_outside_tests(&text);
        let missing: Vec<&str> = LINTS
            .iter()
            .copied()
            .filter(|l| !denied.contains(*l))
            .collect();
        assert!(
            missing.is_empty(),
            "{root} must deny these clippy lints outside tests, with \
             #![cfg_attr(not(test), deny(clippy::...))] at its top: {missing:?}"
        );
    }
}

#[test]
fn the_attribute_reader_sees_what_it_must_and_nothing_else() {
    let all = "clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo, \
               clippy::unimplemented, clippy::unreachable";
    let full: BTreeSet<String> = LINTS.iter().map(|l| (*l).to_owned()).collect();
    for (text, want) in [
        (
            format!("#![cfg_attr(not(test), deny({all}))]\nfn f() {{}}"),
            &full,
        ),
        (format!("#![deny({all})]"), &full),
        (format!("#![forbid({all})]"), &full),
        (
            format!("#![cfg_attr(not(test), deny(clippy::todo), deny({all}))]"),
            &full,
        ),
    ] {
        assert_eq!(&denied_outside_tests(&text), want, "{text}");
    }
    let none = BTreeSet::new();
    for text in [
        format!("// #![deny({all})]"),
        format!("/* #![deny({all})] */"),
        format!("#![cfg_attr(test, deny({all}))]"),
        format!("#![warn({all})]"),
        format!("#[deny({all})]\nfn f() {{}}"),
        format!("fn f() {{ let s = \"#![deny({all})]\"; }}"),
    ] {
        assert_eq!(denied_outside_tests(&text), none, "{text}");
    }
    assert_eq!(
        denied_outside_tests("#![deny(clippy::unwrap_used, unsafe_code)]"),
        BTreeSet::from(["unwrap_used".to_owned()])
    );
}
