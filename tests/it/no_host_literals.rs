//! Host-specific literals (paths, hosts, ports, domains) live only in the
//! settings registry, `src/config/registry.rs`. This test enforces that rule.
//!
//! How it works: every `.rs` file under `src/` (recursively) is tokenized with
//! `proc_macro2::TokenStream::from_str`, a real Rust lexer, so comments never
//! reach the scan. Doc comments (`///`, `//!`, `/** */`) come out of the lexer
//! as `#[doc = "..."]` / `#![doc = "..."]` attributes; any attribute whose
//! bracket group starts with the ident `doc` is skipped, at every nesting
//! depth. What is left and scanned:
//!
//! - every string literal (normal, raw `r"…"`/`r#"…"#`, byte `b"…"`, C `c"…"`),
//!   decoded to its value (the common escapes, `\x..`, `\u{..}`, line
//!   continuations, raw strings as they are);
//! - every integer literal (decimal, hex, octal, binary; `_` and a type
//!   suffix allowed);
//! - every bracket group and every call of `Ipv4Addr::new` / `Ipv6Addr::new`
//!   (an address written as numbers, below).
//!
//! `src/config/registry.rs` is the single structural exception; there is no allowlist.
//!
//! The heuristics, applied to a string literal's value:
//!
//! - **IPv4 address**: a word (a maximal run of ASCII letters, digits, `.`,
//!   `-`, `_`, `@`; trailing dots dropped) that is exactly four dot-separated
//!   numbers of 1-3 digits, each 0-255, or `user@` such an address. Anywhere
//!   in the literal.
//! - **IPv6 address**: a maximal run of hex digits, `:` and `.` (a single
//!   trailing `:` or `.` dropped: punctuation) that holds a `:` and a decimal
//!   digit, parses as an `Ipv6Addr`, and touches no letter, digit or `_` on
//!   either side (so `fe80::1`, `::1`, `2001:db8::1` and the `::1` of
//!   `[::1]:22` are caught, while `Self::f`, `std::fmt`, `12:30:45` and a bare
//!   `::` are not).
//! - **absolute host path**: `/home`, `/opt`, `/srv`, `/var`, `/root`, `/etc`,
//!   `/mnt` or `/media`, followed by `/`, a quote, white space or the end of the literal,
//!   and standing at the start of the literal or after white space, `=`, `:`
//!   or a quote (so `docs/var/x` or `./etc/x` are not flagged).
//! - **e-mail address**: a word `local@domain` with a non-empty local part
//!   whose domain is a host name as below.
//! - **ssh target**: a word `user@host` (a host without a dot, which the
//!   host-name rule cannot tell from any other word) where `user` is a plain
//!   label (ASCII letters, digits, `-`, `_`, starting with a letter or `_`)
//!   and `host` one label (ASCII letters, digits, `-`, starting with a
//!   letter), in the same context as a host name below (so `deploy@prodhost`
//!   is caught, while `HEAD@{1}`, `{user}@{host}` and the `j@k` of `i%j@k`
//!   are not).
//! - **host name**: a word of the form `label(.label)+`, where each label is
//!   non-empty and made of ASCII letters, digits and `-` (an `_` anywhere means
//!   an identifier, not a host), whose last label is 2-24 ASCII letters and
//!   not a common file extension (rs md ron sh json toml lock log txt yml yaml
//!   git jsonl svg png dot tmp py env bash zsh fish, any case). The word must not be preceded by
//!   `/`, `{`, `}`, `.`, `$` or `%` (a path component, a template such as
//!   `{}.lock` or `{repo}.service`), nor followed by `/` (a directory) or `(`
//!   (a method call quoted in a message). So `docs/x/14-deploy-log.md`,
//!   `{}.lock`, `state.ron`, `e.g.` and `self.x()` pass, while
//!   `deploy.example.org` and `host.internal` are caught.
//! - **production/staging port**: the number 8500 or 8501 as a whole word of
//!   the literal (not touching a letter, digit, `_` or `.`).
//!
//! Integer literals are flagged when their value is 8500 or 8501.
//!
//! An IP address written as numbers is flagged: a bracket group that is
//! exactly four integer literals, each 0-255, separated by commas (a trailing
//! comma allowed), such as `[127, 0, 0, 1]` or `[10,0,0,5]`; and
//! `Ipv4Addr::new(a, b, c, d)` / `Ipv6Addr::new(..)` whose arguments are all
//! integer literals (four of 0-255, or eight of 0-0xffff). `[0u8; 4]`,
//! `[1, 2, 3]`, five numbers, a number over 255 or a non-literal argument are
//! not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// The production and staging ports.
const PORTS: &[u64] = &[8500, 8501];

/// Prefixes of absolute paths that are specific to a host.
const HOST_DIRS: &[&str] = &[
    "/home", "/opt", "/srv", "/var", "/root", "/etc", "/mnt", "/media",
];

/// Last labels that mark a file name, not a host name.
const FILE_EXTENSIONS: &[&str] = &[
    "rs", "md", "ron", "sh", "json", "toml", "lock", "log", "txt", "yml", "yaml", "git", "jsonl",
    "svg", "png", "dot", "tmp", "py", "env", "bash", "zsh", "fish",
];

/// The one file allowed to hold host-specific literals, relative to the crate.
const CONFIG_FILE: &str = "src/config/registry.rs";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Offender {
    path: String,
    line: usize,
    col: usize,
    literal: String,
    why: String,
}

impl fmt::Display for Offender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line per offender: a multi-line literal is shown on one line.
        let mut literal = self
            .literal
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if literal.chars().count() > 100 {
            literal = literal.chars().take(97).collect::<String>() + "...";
        }
        write!(
            f,
            "{}:{}:{}: {} ({})",
            self.path, self.line, self.col, literal, self.why
        )
    }
}

#[derive(Debug, Default)]
struct Scan {
    tokens: usize,
    offenders: Vec<Offender>,
}

/// Tokenizes `src` and returns every offending literal in it.
fn scan_source(path: &str, src: &str) -> Result<Scan, String> {
    let stream = TokenStream::from_str(src).map_err(|e| format!("{path}: cannot lex: {e:?}"))?;
    let mut scan = Scan::default();
    walk(path, stream, &mut scan);
    Ok(scan)
}

/// True for a bracket group whose first token is the ident `doc`.
fn is_doc_attribute_body(tree: Option<&TokenTree>) -> bool {
    match tree {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket => {
            matches!(g.stream().into_iter().next(), Some(TokenTree::Ident(i)) if i == "doc")
        }
        _ => false,
    }
}

fn walk(path: &str, stream: TokenStream, scan: &mut Scan) {
    let trees: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < trees.len() {
        // `#[doc ...]` or `#![doc ...]`: a doc comment, skipped whole.
        if let TokenTree::Punct(p) = &trees[i]
            && p.as_char() == '#'
        {
            let bang = matches!(
                trees.get(i + 1),
                Some(TokenTree::Punct(q)) if q.as_char() == '!' && q.spacing() == Spacing::Alone
            );
            let body = if bang { i + 2 } else { i + 1 };
            if is_doc_attribute_body(trees.get(body)) {
                scan.tokens += body + 1 - i;
                i = body + 1;
                continue;
            }
        }
        scan.tokens += 1;
        if let Some((why, shown)) = address_in_numbers(&trees[i..]) {
            let start = trees[i].span().start();
            scan.offenders.push(Offender {
                path: path.to_string(),
                line: start.line,
                col: start.column + 1,
                literal: shown,
                why,
            });
        }
        match &trees[i] {
            TokenTree::Group(g) => walk(path, g.stream(), scan),
            TokenTree::Literal(lit) => {
                let text = lit.to_string();
                let start = lit.span().start();
                let mut push = |why: String| {
                    scan.offenders.push(Offender {
                        path: path.to_string(),
                        line: start.line,
                        col: start.column + 1,
                        literal: text.clone(),
                        why,
                    })
                };
                if let Some(value) = decode_string(&text) {
                    let mut whys = check_string(&value);
                    whys.dedup();
                    for why in whys {
                        push(why);
                    }
                } else if let Some(n) = decode_integer(&text)
                    && PORTS.contains(&n)
                {
                    push(format!("port number {n}"));
                }
            }
            TokenTree::Ident(_) | TokenTree::Punct(_) => {}
        }
        i += 1;
    }
}

/// The value of a string literal token (normal, raw, byte or C string), or
/// `None` when the token is not a string literal.
fn decode_string(text: &str) -> Option<String> {
    let rest = text
        .strip_prefix("br")
        .or_else(|| text.strip_prefix("cr"))
        .or_else(|| text.strip_prefix('r'));
    if let Some(rest) = rest {
        // Raw string: r"...", r#"..."#, ...
        let hashes = rest.len() - rest.trim_start_matches('#').len();
        let body = rest[hashes..].strip_prefix('"')?;
        let end = body.rfind(&format!("\"{}", "#".repeat(hashes)))?;
        return Some(body[..end].to_string());
    }
    let rest = text
        .strip_prefix('b')
        .or_else(|| text.strip_prefix('c'))
        .unwrap_or(text);
    let body = rest.strip_prefix('"')?;
    let body = &body[..body.rfind('"')?];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                if let Ok(b) = u8::from_str_radix(&hex, 16) {
                    out.push(char::from(b));
                }
            }
            Some('u') => {
                let hex: String = chars
                    .by_ref()
                    .take_while(|&c| c != '}')
                    .filter(|&c| c != '{' && c != '_')
                    .collect();
                if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some('\n') | Some('\r') => {
                // Line continuation: the newline and the leading white space
                // of the next line are not part of the value.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Some(out)
}

/// The value of an integer literal token, or `None` for any other token.
fn decode_integer(text: &str) -> Option<u64> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let text = text.replace('_', "");
    let (radix, digits) = if let Some(d) = text.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = text.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = text.strip_prefix("0b") {
        (2, d)
    } else {
        (10, text.as_str())
    };
    // Drop an integer type suffix (u16, usize, i64...); a float is not an
    // integer and is left alone.
    let digits = match digits.find(['u', 'i']) {
        Some(at) => &digits[..at],
        None => digits,
    };
    u64::from_str_radix(digits, radix).ok()
}

/// The integer literals of `stream` when it is exactly integer literals
/// separated by commas (a trailing comma allowed); `None` otherwise.
fn integer_list(stream: TokenStream) -> Option<Vec<u64>> {
    let mut values = Vec::new();
    let mut comma_next = false;
    for tree in stream {
        match tree {
            TokenTree::Punct(p) if comma_next && p.as_char() == ',' => comma_next = false,
            TokenTree::Literal(lit) if !comma_next => {
                values.push(decode_integer(&lit.to_string())?);
                comma_next = true;
            }
            _ => return None,
        }
    }
    Some(values)
}

fn octets(values: &[u64]) -> bool {
    values.len() == 4 && values.iter().all(|&n| n <= 255)
}

/// An IP address written as numbers at the start of `trees`: a bracket group
/// of four octets, or `Ipv4Addr::new` / `Ipv6Addr::new` called with integer
/// literals only. The reason and the code as shown.
fn address_in_numbers(trees: &[TokenTree]) -> Option<(String, String)> {
    let list = |tree: &TokenTree, delimiter| match tree {
        TokenTree::Group(g) if g.delimiter() == delimiter => integer_list(g.stream()),
        _ => None,
    };
    if let Some(values) = list(&trees[0], Delimiter::Bracket)
        && octets(&values)
    {
        let shown = trees[0].to_string();
        return Some((format!("IPv4 address as an array `{shown}`"), shown));
    }
    // `Ipv4Addr` `:` `:` `new` `( .. )`
    let TokenTree::Ident(ty) = &trees[0] else {
        return None;
    };
    let is_path = matches!(
        trees.get(1..4),
        Some([TokenTree::Punct(a), TokenTree::Punct(b), TokenTree::Ident(new)])
            if a.as_char() == ':' && b.as_char() == ':' && new == "new"
    );
    let values = list(trees.get(4)?, Delimiter::Parenthesis).filter(|_| is_path)?;
    let address = match ty.to_string().as_str() {
        "Ipv4Addr" => octets(&values),
        "Ipv6Addr" => values.len() == 8 && values.iter().all(|&n| n <= 0xffff),
        _ => false,
    };
    address.then(|| {
        let shown = trees[..5]
            .iter()
            .map(ToString::to_string)
            .collect::<String>();
        (format!("IP address as numbers `{shown}`"), shown)
    })
}

/// Every IPv6 address in `s`: a maximal run of hex digits, `:` and `.` that
/// holds a `:` and a decimal digit, parses as one, and is not glued to a
/// letter, digit or `_`.
fn ipv6_addresses(s: &str) -> Vec<&str> {
    let is_run = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '.');
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = Vec::new();
    let mut start = None;
    for (at, c) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
        match (start, at < s.len() && is_run(c)) {
            (None, true) => start = Some(at),
            (Some(from), false) => {
                start = None;
                if glued(s[..from].chars().next_back()) || glued(s[at..].chars().next()) {
                    continue;
                }
                let mut run = &s[from..at];
                // A sentence's `:` or `.` after the address is not part of it.
                if !run.ends_with("::") {
                    run = run.strip_suffix([':', '.']).unwrap_or(run);
                }
                if run.contains(':')
                    && run.chars().any(|c| c.is_ascii_digit())
                    && run.parse::<std::net::Ipv6Addr>().is_ok()
                {
                    out.push(run);
                }
            }
            _ => {}
        }
    }
    out
}

/// `user@host` with both plain labels: an ssh target whose host has no dot.
fn is_ssh_target(local: &str, domain: &str) -> bool {
    let starts = |l: &str, underscore: bool| {
        l.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || (underscore && c == '_'))
    };
    starts(local, true)
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        && starts(domain, false)
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A character of a "word" in a string: what hosts, e-mails and IPs are made of.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')
}

/// Splits `s` into maximal runs of word characters, each with the character
/// just before and just after it (if any).
fn words(s: &str) -> Vec<(Option<char>, &str, Option<char>)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (at, c) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
        let word = at < s.len() && is_word_char(c);
        match (start, word) {
            (None, true) => start = Some(at),
            (Some(from), false) => {
                let before = s[..from].chars().next_back();
                let after = s[at..].chars().next();
                out.push((before, &s[from..at], after));
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn is_ipv4(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            (1..=3).contains(&p.len())
                && p.chars().all(|c| c.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// `label(.label)+` whose last label is 2-24 letters and no file extension.
fn is_host_name(word: &str) -> bool {
    let labels: Vec<&str> = word.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
    };
    if !labels.iter().all(label_ok) {
        return false;
    }
    let last = labels[labels.len() - 1];
    (2..=24).contains(&last.len())
        && last.chars().all(|c| c.is_ascii_alphabetic())
        && !FILE_EXTENSIONS.contains(&last.to_ascii_lowercase().as_str())
}

/// Every reason why the string value `s` holds a host-specific literal.
fn check_string(s: &str) -> Vec<String> {
    let mut found = Vec::new();

    // Absolute paths under host directories.
    for dir in HOST_DIRS {
        for (at, _) in s.match_indices(dir) {
            let before = s[..at].chars().next_back();
            let after = s[at + dir.len()..].chars().next();
            let starts_ok =
                before.is_none_or(|c| c.is_whitespace() || matches!(c, '=' | ':' | '"' | '\''));
            let ends_ok = after.is_none_or(|c| c.is_whitespace() || matches!(c, '/' | '"' | '\''));
            if starts_ok && ends_ok {
                found.push(format!("absolute path under {dir}"));
            }
        }
    }

    // The ports as whole words: a run of digits not touching a letter, a
    // digit, `_` or `.`.
    let bytes = s.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if !bytes[at].is_ascii_digit() {
            at += 1;
            continue;
        }
        let from = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        let glued = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
        let before_ok = from == 0 || !glued(bytes[from - 1]);
        let after_ok = at == bytes.len() || !glued(bytes[at]);
        if before_ok
            && after_ok
            && let Ok(n) = s[from..at].parse::<u64>()
            && PORTS.contains(&n)
        {
            found.push(format!("port number {n}"));
        }
    }

    for address in ipv6_addresses(s) {
        found.push(format!("IPv6 address `{address}`"));
    }

    for (before, raw, after) in words(s) {
        let word = raw.trim_end_matches('.');
        // A trailing dot ends a sentence; the word is then followed by it.
        let after = if word.len() < raw.len() {
            Some('.')
        } else {
            after
        };
        if word.is_empty() {
            continue;
        }

        if is_ipv4(word) {
            found.push(format!("IPv4 address `{word}`"));
            continue;
        }

        let host_context = before.is_none_or(|c| !matches!(c, '/' | '{' | '}' | '.' | '$' | '%'))
            && after.is_none_or(|c| !matches!(c, '/' | '('));

        if let Some((local, domain)) = word.split_once('@') {
            if local.is_empty() {
                continue;
            }
            if is_host_name(domain) {
                found.push(format!("e-mail address `{word}`"));
            } else if is_ipv4(domain) {
                found.push(format!("IPv4 address `{word}`"));
            } else if host_context && is_ssh_target(local, domain) {
                found.push(format!("ssh target `{word}` (a host without a dot)"));
            }
            continue;
        }

        if host_context && is_host_name(word) {
            found.push(format!("host name `{word}`"));
        }
    }
    found
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn host_specific_literals_live_only_in_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();

    let mut read = 0;
    let mut tokens = 0;
    let mut offenders = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .expect("file under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        let src = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        let scan = scan_source(&rel, &src).unwrap_or_else(|e| panic!("{e}"));
        read += 1;
        tokens += scan.tokens;
        if rel != CONFIG_FILE {
            offenders.extend(scan.offenders);
        }
    }

    assert!(
        read >= 15,
        "expected to scan at least 15 .rs files under src/, found {read}"
    );
    assert!(
        tokens > 500,
        "expected more than 500 tokens under src/, found {tokens}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("config/registry.rs")),
        "{CONFIG_FILE} not found"
    );

    let list: Vec<String> = offenders.iter().map(ToString::to_string).collect();
    assert!(
        offenders.is_empty(),
        "host-specific literals (paths, hosts, ports, domains) found outside {CONFIG_FILE}; \
         move each value into {CONFIG_FILE} (a setting or a constant there) and use it from \
         there:\n{}\n",
        list.join("\n")
    );
}

/// The planted literals, one per kind, with the reason each must produce.
const PLANTED: &[(&str, &str)] = &[
    (r#""10.0.0.7""#, "IPv4 address"),
    (r#""/srv/orchestrator/app""#, "absolute path under /srv"),
    (r#""deploy.example.org""#, "host name"),
    (r#""ops@deploy.example.org""#, "e-mail address"),
    ("8500", "port number 8500"),
    ("8_501u16", "port number 8501"),
    (r#""127.0.0.1:8500""#, "port number 8500"),
    (
        r##"r#"ssh root@box "cat /etc/hosts""#"##,
        "absolute path under /etc",
    ),
    (r#"b"HOME=/home/ops""#, "absolute path under /home"),
    (r#""user\x40deploy.example.org""#, "e-mail address"),
    (r#""deploy@prodhost""#, "ssh target `deploy@prodhost`"),
    (r#""ssh -p 22 ops_1@prod-host-2 true""#, "ssh target"),
    (r#""deploy@10.0.0.5:/x""#, "IPv4 address `deploy@10.0.0.5`"),
    (r#""/mnt/shared/repos""#, "absolute path under /mnt"),
    (r#""REPOS=/media/usb/repos""#, "absolute path under /media"),
    (r#""::1""#, "IPv6 address `::1`"),
    (r#""fe80::1%eth0""#, "IPv6 address `fe80::1`"),
    (r#""at 2001:db8::1: refused""#, "IPv6 address `2001:db8::1`"),
    (r#""[::1]:22""#, "IPv6 address `::1`"),
    (r#""::ffff:10.0.0.7""#, "IPv6 address `::ffff:10.0.0.7`"),
    ("[127, 0, 0, 1]", "IPv4 address as an array"),
    ("[10,0,0,5]", "IPv4 address as an array"),
    ("[192u8, 168, 0x00, 1,]", "IPv4 address as an array"),
    ("Ipv4Addr::new(10, 0, 0, 5)", "IP address as numbers"),
    (
        "Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)",
        "IP address as numbers",
    ),
];

#[test]
fn scanner_catches_planted_literals_in_code() {
    for (literal, why) in PLANTED {
        let src = format!("fn f() {{ let _ = {literal}; }}\n");
        let scan = scan_source("planted.rs", &src).expect("lexes");
        assert!(
            scan.offenders.iter().any(|o| o.why.starts_with(why)),
            "{literal} should be flagged ({why}); got {:?}",
            scan.offenders
        );
        let o = &scan.offenders[0];
        assert_eq!((o.line, o.col), (1, 18), "position of {literal}");
        assert!(
            o.to_string().starts_with("planted.rs:1:18: "),
            "message: {o}"
        );
    }

    // Inside other code: a call's argument, a qualified path, a tuple.
    for (src, col) in [
        ("fn f() { g(Ipv4Addr::from([10, 1, 2, 3])); }\n", 27),
        (
            "fn f() { let _ = std::net::Ipv4Addr::new(127, 0, 0, 1); }\n",
            28,
        ),
        (
            "fn f() { let _ = SocketAddr::from(([127, 0, 0, 1], 22)); }\n",
            36,
        ),
    ] {
        let scan = scan_source("inner.rs", src).expect("lexes");
        assert_eq!(scan.offenders.len(), 1, "{src}: {:?}", scan.offenders);
        assert_eq!(
            (scan.offenders[0].line, scan.offenders[0].col),
            (1, col),
            "{src}"
        );
    }

    let src = "mod m {\n    fn f() -> &'static str {\n        \"10.0.0.7\"\n    }\n}\n";
    let scan = scan_source("nested.rs", src).expect("lexes");
    assert_eq!(scan.offenders.len(), 1, "{:?}", scan.offenders);
    assert_eq!(
        scan.offenders[0].to_string(),
        "nested.rs:3:9: \"10.0.0.7\" (IPv4 address `10.0.0.7`)"
    );
}

#[test]
fn scanner_ignores_comments_and_doc_comments() {
    for (literal, _) in PLANTED {
        for src in [
            format!("// {literal}\nfn f() {{}}\n"),
            format!("fn f() {{}} /* {literal} */\n"),
            format!("/// {literal}\nfn f() {{}}\n"),
            format!("//! {literal}\nfn f() {{}}\n"),
            format!("/** {literal} */\nfn f() {{}}\n"),
            format!("mod m {{\n    //! {literal}\n    /// {literal}\n    fn f() {{}}\n}}\n"),
            format!("#[doc = {literal:?}]\nfn f() {{}}\n"),
        ] {
            let scan = scan_source("comment.rs", &src).expect("lexes");
            assert!(
                scan.offenders.is_empty(),
                "a comment must not be flagged:\n{src}\n{:?}",
                scan.offenders
            );
            assert!(scan.tokens > 0);
        }
    }
}

#[test]
fn scanner_leaves_ordinary_code_alone() {
    let src = r##"
        fn f(work_item: &str, repo: &str) -> Vec<String> {
            let _port: u16 = 8080;
            let _n = 850 + 85_000 + 1_8500;
            vec![
                format!("docs/work-items/{work_item}/14-deploy-log.md"),
                format!("{}.lock", repo),
                format!("{repo}.service"),
                "state.ron".to_string(),
                "Cargo.toml".into(),
                "README.MD".into(),
                "e.g. see the log.".into(),
                "call self.retry() again".into(),
                "docs/var/x and ./etc/y".into(),
                "version 1.2.3".into(),
                r#"{"a": "b"}"#.into(),
                "port=85000 id=x8500".into(),
                "/run/app/state.json".into(),
                "~/.config/x.yml".into(),
                "docs/mnt/x and ./media/y and /mntx/z".into(),
                "std::fmt::Display, Self::new, crate::config::REGISTRY, a::b".into(),
                "base64::encode, sha1::digest, x509::parse".into(),
                "at 12:30:45 on 2026-01-01T00:00:00Z, id 0123456789abcdef".into(),
                "a :: b, ::, port :22, orch:staging, sha256:abc123".into(),
                "mac ab:cd:ef:01:23:45".into(),
                "HEAD@{1} and {user}@{host} and deploy@ and @prodhost".into(),
                format!("{}@{}", repo, work_item),
                "a-b_c.d/e:f,g=h+i%j@k".into(),
                "first.last@host".into(),
            ]
        }
        fn g(a: u8, b: u8, c: u8, d: u8) {
            let _ = [0u8; 4];
            let _ = [1, 2, 3];
            let _ = [1, 2, 3, 4, 5];
            let _ = [256, 0, 0, 1];
            let _ = [a, b, c, d];
            let _ = [-1, 0, 0, 1];
            let _ = [1.0, 2.0, 3.0, 4.0];
            let _ = [[1, 2], [3, 4]];
            let _ = (127, 0, 0, 1);
            let _ = Ipv4Addr::new(a, b, c, d);
            let _ = Ipv4Addr::new(127, 0, 0, a);
            let _ = Ipv4Addr::from(bits);
            let _ = Range::new(1, 2, 3, 4);
            let _ = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0x1_0000, 1);
        }
    "##;
    let scan = scan_source("ordinary.rs", src).expect("lexes");
    assert!(scan.offenders.is_empty(), "{:#?}", scan.offenders);
}

#[test]
fn literal_decoding() {
    assert_eq!(decode_string(r#""a\nb\t\\\"\'""#).unwrap(), "a\nb\t\\\"'");
    assert_eq!(decode_string(r##"r#"a "b" \n"#"##).unwrap(), r#"a "b" \n"#);
    assert_eq!(decode_string(r#"r"x\y""#).unwrap(), r"x\y");
    assert_eq!(decode_string(r#"b"x""#).unwrap(), "x");
    assert_eq!(decode_string(r#"br"x""#).unwrap(), "x");
    assert_eq!(decode_string(r#"c"x""#).unwrap(), "x");
    assert_eq!(decode_string("\"a\\\n    b\"").unwrap(), "ab");
    assert_eq!(decode_string(r#""\u{40}\x41""#).unwrap(), "@A");
    assert_eq!(decode_string("'a'"), None);
    assert_eq!(decode_string("8500"), None);
    assert_eq!(decode_integer("8500"), Some(8500));
    assert_eq!(decode_integer("8_501u16"), Some(8501));
    assert_eq!(decode_integer("0x2134"), Some(8500));
    assert_eq!(decode_integer("8500.0"), None);
    assert_eq!(decode_integer("\"8500\""), None);
}
