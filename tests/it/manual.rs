//! The manual pages and completion scripts an operator gets, checked over
//! whatever subcommands the binary has: every page has ENVIRONMENT (every
//! setting of the registry), FILES, EXIT STATUS (the README's codes) and
//! SEE ALSO naming only pages that exist; completions offer the events and
//! the states.

use std::collections::BTreeSet;
use std::fs;
use std::process::Output;

use selfdeploy::config::REGISTRY;
use selfdeploy::machine::{EventName, StateName};

use crate::support::sandbox::{Sandbox, tool};

fn stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A roff text as a reader sees it: the escapes of `-` and `\` undone.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\e", "\\")
        .replace("\\&", "")
}

/// The text of a page's section `name` (to the next `.SH`).
fn section<'a>(page: &'a str, name: &str) -> Option<&'a str> {
    let header = if name.contains(' ') {
        format!(".SH \"{name}\"\n")
    } else {
        format!(".SH {name}\n")
    };
    let at = page.find(&header)? + header.len();
    let rest = &page[at..];
    Some(&rest[..rest.find("\n.SH ").map_or(rest.len(), |e| e + 1)])
}

/// The exit codes the README gives for `event`, in its order.
fn readme_exit_codes() -> Vec<u8> {
    let readme = include_str!("../../README.md");
    let at = readme
        .find("Exit status of `event`:")
        .expect("README: exit status");
    let paragraph = &readme[at..at + readme[at..].find("\n\n").unwrap()];
    paragraph
        .split("**")
        .skip(1)
        .step_by(2)
        .map(|code| code.parse().unwrap())
        .collect()
}

#[test]
fn man_pages_have_environment_files_exit_status_and_see_also_that_exist() {
    let sb = Sandbox::new();
    let dir = sb.root().join("man1");
    fs::create_dir(&dir).unwrap();
    stdout(&sb.run(&["man", "--out-dir", dir.to_str().unwrap()]));
    let pages: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(pages.contains("selfdeploy.1"), "{pages:?}");
    assert!(pages.len() > 10, "{pages:?}");

    let codes = readme_exit_codes();
    assert_eq!(codes, [0, 3, 1, 2, 4, 5, 130], "the README's exit codes");
    for file in &pages {
        let page = fs::read_to_string(dir.join(file)).unwrap();
        let environment = plain(
            section(&page, "ENVIRONMENT").unwrap_or_else(|| panic!("{file}: no ENVIRONMENT")),
        );
        for spec in REGISTRY {
            assert!(
                environment.contains(&format!("\\fB{}\\fR", spec.name)),
                "{file}: ENVIRONMENT lacks {}",
                spec.name
            );
        }
        let files = plain(section(&page, "FILES").unwrap_or_else(|| panic!("{file}: no FILES")));
        assert!(
            files.contains("/etc/selfdeploy/selfdeploy.env"),
            "{file}: {files}"
        );
        let exit =
            section(&page, "EXIT STATUS").unwrap_or_else(|| panic!("{file}: no EXIT STATUS"));
        for code in &codes {
            assert!(
                exit.contains(&format!(".TP\n\\fB{code}\\fR\n")),
                "{file}: EXIT STATUS lacks {code}:\n{exit}"
            );
        }
        assert!(section(&page, "SEE ALSO").is_some(), "{file}: no SEE ALSO");
        // Every page any section names, `selfdeploy...(1)`, is one written.
        let text = plain(&page);
        let mut named = 0;
        for (at, _) in text.match_indices("(1)") {
            let before = &text[..at];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .map_or(0, |i| i + 1);
            let name = &before[start..];
            if name.is_empty() {
                continue;
            }
            named += 1;
            assert!(
                pages.contains(&format!("{name}.1")),
                "{file} names {name}(1), which is not among the pages {pages:?}"
            );
        }
        assert!(named >= 1, "{file} names no other page");
    }
    // selfdeploy(1) names every subcommand's page, and no `help`.
    let main = plain(&fs::read_to_string(dir.join("selfdeploy.1")).unwrap());
    assert!(!main.contains("selfdeploy-help"), "{main}");
    for file in &pages {
        let name = file.trim_end_matches(".1");
        if name != "selfdeploy" {
            assert!(
                main.contains(&format!("{name}(1)")),
                "selfdeploy(1) does not name {name}(1)"
            );
        }
    }
}

#[test]
fn completions_offer_the_events_and_the_states() {
    let sb = Sandbox::new();
    let events: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
    let states: Vec<&str> = StateName::ALL.iter().map(|s| s.as_str()).collect();
    let script = sb.root().join("completion.bash");
    fs::write(&script, stdout(&sb.run(&["completions", "bash"]))).unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let out = std::process::Command::new(tool("bash"))
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({}); COMP_CWORD={}; _selfdeploy selfdeploy '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display(),
                quoted.join(" "),
                words.len() - 1,
                words[words.len() - 1],
                words[words.len() - 2],
            ))
            .output()
            .unwrap();
        stdout(&out).lines().map(str::to_owned).collect()
    };
    for event in &events {
        let offered = complete(&["selfdeploy", "event", &event[..3]]);
        assert!(
            offered.contains(&(*event).to_owned()),
            "event {event}: {offered:?}"
        );
        let offered = complete(&["selfdeploy", "explain", &event[..3]]);
        assert!(
            offered.contains(&(*event).to_owned()),
            "explain {event}: {offered:?}"
        );
    }
    let offered = complete(&["selfdeploy", "status", "--state", ""]);
    let expected: Vec<String> = states.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(offered, expected);
    // zsh lists both; fish the states (clap_complete's fish script
    // completes no positional argument's values).
    let zsh = stdout(&sb.run(&["completions", "zsh"]));
    for name in events.iter().chain(&states) {
        assert!(zsh.contains(&format!(" {name}")), "zsh: {name}");
    }
    let fish = stdout(&sb.run(&["completions", "fish"]));
    for name in &states {
        assert!(fish.contains(&format!("{name}\\t")), "fish: {name}");
    }
    // The values still parse as before, and a wrong one is still named.
    let bad = sb.run(&["status", "--state", "nope"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown state \"nope\""),
        "{bad:?}"
    );
}
