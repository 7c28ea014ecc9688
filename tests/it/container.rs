//! The container and the Debian package, checked as files (no container
//! engine runs in the tests): `compose.yaml` passes every setting of the
//! registry with its default and nothing else, and mounts what the engine
//! needs; the `Dockerfile` builds with `--locked`, runs `watch` as the
//! build-time user and labels the image with the crate's version and the
//! revision; `[package.metadata.deb]` in `Cargo.toml` ships the binary, the
//! env file as a 0640 conffile (root:selfdeploy once installed), the reference hook, the generated manual
//! pages and completions, the docs and a unit that runs `watch` from the
//! package. Each check is a function of the files' text, and
//! `container_and_packaging_checks_fail_on_a_broken_copy` breaks a copy once
//! per check.
//! `scripts/build-deb.sh` builds the real package and checks it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use selfdeploy::config::{IMAGE_REVISION_LABEL, REGISTRY};

use crate::support::sandbox::tool;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The files the checks read, so that a test can break one of them.
#[derive(Clone)]
struct Files {
    compose: String,
    dockerfile: String,
    cargo_toml: String,
    packaged_unit: String,
    sysusers: String,
    ci: String,
}

impl Files {
    fn real() -> Files {
        let cargo_toml = read("Cargo.toml");
        let meta = deb_metadata(&cargo_toml);
        let units = meta.systemd_units.get("unit-scripts").cloned();
        let unit_dir = units.unwrap_or_else(|| "packaging/debian".to_owned());
        let unit_name = meta.systemd_units.get("unit-name").cloned();
        let unit_name = unit_name.unwrap_or_else(|| "selfdeploy-watch".to_owned());
        Files {
            compose: read("compose.yaml"),
            dockerfile: read("Dockerfile"),
            packaged_unit: read(&format!("{unit_dir}/{unit_name}.service")),
            sysusers: read(&format!("{unit_dir}/selfdeploy.sysusers")),
            ci: read(".ci/run"),
            cargo_toml,
        }
    }
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n{}\n", problems.join("\n"));
}

// ---------------------------------------------------------------- YAML ----

/// A line of YAML that holds something: its indentation and its text.
struct Line<'a> {
    indent: usize,
    text: &'a str,
}

/// The lines of `text` that are neither blank nor a comment.
fn yaml_lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .filter_map(|line| {
            let text = line.trim();
            (!text.is_empty() && !text.starts_with('#')).then(|| Line {
                indent: line.len() - line.trim_start().len(),
                text,
            })
        })
        .collect()
}

/// The lines under the block `path[0]: ... path[n]:`, each key one level
/// deeper than the one before; `None` when a key is missing.
fn yaml_block<'a>(mut scope: &'a [Line<'a>], path: &[&str]) -> Option<&'a [Line<'a>]> {
    for key in path {
        let indent = scope.first()?.indent;
        let header = format!("{key}:");
        let at = scope
            .iter()
            .position(|l| l.indent == indent && l.text == header)?;
        let rest = &scope[at + 1..];
        let end = rest
            .iter()
            .position(|l| l.indent <= indent)
            .unwrap_or(rest.len());
        scope = &rest[..end];
    }
    Some(scope)
}

/// A scalar as YAML reads it: double-quoted (with `\"` and `\\`),
/// single-quoted, or plain (a ` #` comment dropped).
fn yaml_scalar(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        inner.replace("\\\"", "\"").replace("\\\\", "\\")
    } else if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else {
        raw.split(" #").next().unwrap_or_default().trim().to_owned()
    }
}

/// The `key: value` entries directly in `scope`, in order.
fn yaml_entries(scope: &[Line<'_>]) -> Vec<(String, String)> {
    let Some(indent) = scope.first().map(|l| l.indent) else {
        return Vec::new();
    };
    scope
        .iter()
        .filter(|l| l.indent == indent && !l.text.starts_with("- "))
        .map(|l| match l.text.split_once(": ") {
            Some((k, v)) => (k.to_owned(), yaml_scalar(v)),
            None => (l.text.trim_end_matches(':').to_owned(), String::new()),
        })
        .collect()
}

/// The `- item` entries directly in `scope`.
fn yaml_items(scope: &[Line<'_>]) -> Vec<String> {
    let Some(indent) = scope.first().map(|l| l.indent) else {
        return Vec::new();
    };
    scope
        .iter()
        .filter(|l| l.indent == indent)
        .filter_map(|l| l.text.strip_prefix("- ").map(yaml_scalar))
        .collect()
}

/// `${NAME-default}` or `${NAME:-default}` as Docker Compose v2 reads it:
/// the name, the operator and the default, which runs to the brace that
/// closes the opening one (Compose counts every `{` and `}`), and must end
/// the value.
fn interpolation(value: &str) -> Result<(String, &'static str, String), String> {
    let body = value
        .strip_prefix("${")
        .ok_or_else(|| format!("{value:?} is not ${{NAME-default}}"))?;
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, rest) = body.split_at(name_len);
    let (op, rest) = if let Some(rest) = rest.strip_prefix(":-") {
        (":-", rest)
    } else if let Some(rest) = rest.strip_prefix('-') {
        ("-", rest)
    } else {
        return Err(format!("{value:?} is not ${{NAME-default}}"));
    };
    let mut depth = 1;
    for (at, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            if at + 1 != rest.len() {
                return Err(format!(
                    "{value:?}: Compose ends the default at the `}}` before {:?}",
                    &rest[at + 1..]
                ));
            }
            return Ok((name.to_owned(), op, rest[..at].to_owned()));
        }
    }
    Err(format!("{value:?}: the braces do not close"))
}

/// Every problem of `compose.yaml`, given the Dockerfile it builds.
fn compose_problems(compose: &str, dockerfile: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines = yaml_lines(compose);
    let services = yaml_block(&lines, &["services"]).unwrap_or_default();
    let names: Vec<String> = yaml_entries(services).into_iter().map(|(k, _)| k).collect();
    if names != ["selfdeploy-watch"] {
        problems.push(format!(
            "compose.yaml: the services are {names:?}, not the one selfdeploy-watch"
        ));
    }
    let Some(service) = yaml_block(&lines, &["services", "selfdeploy-watch"]) else {
        problems.push("compose.yaml has no service selfdeploy-watch".to_owned());
        return problems;
    };
    let scalars: BTreeMap<String, String> = yaml_entries(service).into_iter().collect();
    if scalars.get("command").map(String::as_str) != Some(r#"["watch"]"#) {
        problems.push(format!(
            "compose.yaml: command is {:?}, not [\"watch\"]",
            scalars.get("command")
        ));
    }
    if scalars.get("network_mode").map(String::as_str) != Some("host") {
        problems.push(format!(
            "compose.yaml: network_mode is {:?}, not host (the hook's health check and the \
             host's sshd are on the host's loopback)",
            scalars.get("network_mode")
        ));
    }
    if scalars.get("restart").map(String::as_str) != Some("unless-stopped") {
        problems.push(format!(
            "compose.yaml: restart is {:?}, not unless-stopped",
            scalars.get("restart")
        ));
    }

    // Every setting, and nothing else, with the registry's default.
    let environment = yaml_block(service, &["environment"]).unwrap_or_default();
    let entries = yaml_entries(environment);
    let mut seen = BTreeSet::new();
    for (name, value) in &entries {
        if !seen.insert(name.clone()) {
            problems.push(format!("compose.yaml: {name} is listed twice"));
        }
        let Some(spec) = REGISTRY.iter().find(|s| s.name == name) else {
            problems.push(format!(
                "compose.yaml's environment names {name}, which is not a setting"
            ));
            continue;
        };
        let expected = if spec.is_secret() { "" } else { spec.default };
        // A default with braces cannot be written in docker-compose 1.x: the
        // setting is passed through by name (unset: selfdeploy's default).
        if spec.default.contains(['{', '}']) {
            if !value.is_empty() {
                problems.push(format!(
                    "compose.yaml: {name} is {value:?}: its default holds braces, which \
                     docker-compose 1.x cannot hold; pass it through by name (`{name}:`)"
                ));
            }
            continue;
        }
        match interpolation(value) {
            Err(why) => problems.push(format!("compose.yaml: {name}: {why}")),
            Ok((inner, op, default)) => {
                if inner != *name {
                    problems.push(format!(
                        "compose.yaml: {name} takes its value from {inner}, not from {name}"
                    ));
                }
                if op != "-" {
                    problems.push(format!(
                        "compose.yaml: {name} is {value:?}: write ${{{name}-default}}, so that \
                         a value set empty reaches selfdeploy empty, as outside the container"
                    ));
                }
                if spec.is_secret() && !default.is_empty() {
                    problems.push(format!(
                        "compose.yaml: the secret {name} has a default; a secret has none"
                    ));
                } else if default != expected {
                    problems.push(format!(
                        "compose.yaml: {name} defaults to {default:?}, the registry to {expected:?}"
                    ));
                }
            }
        }
    }
    for spec in REGISTRY {
        if !seen.contains(spec.name) {
            problems.push(format!(
                "{} is missing from compose.yaml's environment",
                spec.name
            ));
        }
    }

    // The build arguments: the Dockerfile's, with the Dockerfile's defaults.
    let instructions = instructions(dockerfile);
    let runtime = instructions.iter().filter_map(|i| i.stage).max();
    let args: BTreeMap<String, String> =
        yaml_entries(yaml_block(service, &["build", "args"]).unwrap_or_default())
            .into_iter()
            .collect();
    for name in [
        "APP_UID",
        "APP_GID",
        "APP_USER",
        "APP_HOME",
        "REVISION",
        "SOURCE_URL",
    ] {
        let in_dockerfile = arg_default(&instructions, runtime, name).flatten();
        let Some(value) = args.get(name) else {
            problems.push(format!(
                "compose.yaml does not pass the build argument {name}"
            ));
            continue;
        };
        match interpolation(value) {
            Ok((inner, ":-", default)) if inner == name => {
                if Some(&default) != in_dockerfile.as_ref() {
                    problems.push(format!(
                        "compose.yaml: the build argument {name} defaults to {default:?}, \
                         the Dockerfile's to {in_dockerfile:?}"
                    ));
                }
            }
            _ => problems.push(format!(
                "compose.yaml: the build argument {name} is {value:?}, not ${{{name}:-default}}"
            )),
        }
    }

    // Two mounts: REPOS_DIR at the same path inside, the ssh directory
    // read-only at the user's ~/.ssh.
    let volumes = yaml_items(yaml_block(service, &["volumes"]).unwrap_or_default());
    let repos = REGISTRY.iter().find(|s| s.name == "REPOS_DIR").unwrap();
    let host_repos = REGISTRY
        .iter()
        .find(|s| s.name == "HOST_REPOS_DIR")
        .unwrap();
    let repos_mount = format!(
        "${{HOST_REPOS_DIR:-{}}}:${{REPOS_DIR:-{}}}",
        host_repos.default, repos.default
    );
    let home = arg_default(&instructions, runtime, "APP_HOME")
        .flatten()
        .unwrap_or_default();
    let ssh_target = format!("${{APP_HOME:-{home}}}/.ssh");
    if !volumes.contains(&repos_mount) {
        problems.push(format!(
            "compose.yaml: the REPOS_DIR mount {repos_mount:?} (HOST_REPOS_DIR outside, \
             REPOS_DIR inside) is missing; the volumes are {volumes:?}"
        ));
    }
    let ssh: Vec<&String> = volumes.iter().filter(|v| v.contains(&ssh_target)).collect();
    match ssh.as_slice() {
        [mount] if mount.ends_with(&format!("{ssh_target}:ro")) => {}
        [mount] => problems.push(format!(
            "compose.yaml: the ssh directory {mount:?} is not mounted read-only"
        )),
        _ => problems.push(format!(
            "compose.yaml: no single mount of the ssh directory at {ssh_target}"
        )),
    }
    for volume in &volumes {
        if *volume != repos_mount && !volume.contains(&ssh_target) {
            problems.push(format!("compose.yaml: an unexpected mount {volume:?}"));
        }
    }
    problems
}

// ---------------------------------------------------------- Dockerfile ----

/// One instruction of a Dockerfile, its continuation lines joined; `stage`
/// counts the `FROM`s before it (`None` before the first).
struct Instruction {
    stage: Option<usize>,
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut stage: Option<usize> = None;
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        // Docker drops comment lines, even inside a continuation.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full.split_once(' ').unwrap_or((&full, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        out.push(Instruction {
            stage,
            keyword,
            args: args.trim().to_owned(),
        });
    }
    out
}

/// `ARG name[=default]` in `stage`: `Some(None)` without a default.
fn arg_default(all: &[Instruction], stage: Option<usize>, name: &str) -> Option<Option<String>> {
    all.iter()
        .filter(|i| i.stage == stage && i.keyword == "ARG")
        .find_map(|i| match i.args.split_once('=') {
            Some((n, d)) if n == name => Some(Some(d.trim_matches('"').to_owned())),
            None if i.args == name => Some(None),
            _ => None,
        })
}

/// The `key="value"` pairs of a LABEL instruction.
fn label_pairs(args: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((key.trim().to_owned(), value.to_owned()));
        rest = after.trim();
    }
    out
}

/// The files under `src/` reads at compile time (`include_str!`), as paths
/// from the crate's root. Those after a file's `#[cfg(test)]` are the unit
/// tests' (this crate puts its test module last) and a release build does
/// not read them.
fn compile_time_inputs() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    let mut inputs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let tests_from = text.find("#[cfg(test)]").unwrap_or(text.len());
        for (at, _) in text.match_indices("include_str!(\"") {
            if at > tests_from {
                continue;
            }
            let rel = &text[at + "include_str!(\"".len()..];
            let rel = &rel[..rel.find('"').unwrap()];
            let mut path = file.parent().unwrap().to_path_buf();
            for part in rel.split('/') {
                match part {
                    ".." => {
                        path.pop();
                    }
                    "." => {}
                    part => path.push(part),
                }
            }
            let from_root = path.strip_prefix(root()).unwrap();
            inputs.push(from_root.to_string_lossy().into_owned());
        }
    }
    inputs.sort();
    inputs
}

/// Every problem of the Dockerfile.
fn dockerfile_problems(dockerfile: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let all = instructions(dockerfile);
    let stages = all.iter().filter(|i| i.keyword == "FROM").count();
    if stages < 2 {
        problems.push(format!(
            "Dockerfile: {stages} stage(s); a builder and a runtime are expected"
        ));
        return problems;
    }
    let runtime = Some(stages - 1);
    let in_stage = |stage: Option<usize>, keyword: &str| -> Vec<&Instruction> {
        all.iter()
            .filter(|i| i.stage == stage && i.keyword == keyword)
            .collect()
    };

    // The builder: the crate's Rust, everything `cargo build` reads, --locked.
    let builder = all
        .iter()
        .find(|i| i.keyword == "FROM" && i.args.ends_with(" AS builder"))
        .and_then(|i| i.stage);
    let from = builder.map(|s| in_stage(Some(s), "FROM")[0].args.clone());
    if from.as_deref() != Some("${BUILDER_IMAGE} AS builder") {
        problems.push(format!(
            "Dockerfile: the builder is {from:?}, not ${{BUILDER_IMAGE}} AS builder"
        ));
    }
    // The bases are arguments (no registry may be reachable), defaulting to
    // the public images; the binary comes from the builder unless
    // BINARY=prebuilt takes one from the context.
    for (name, default) in [
        ("BUILDER_IMAGE", "rust:${RUST_VERSION}-slim-bookworm"),
        ("RUNTIME_IMAGE", "debian:bookworm-slim"),
        ("BINARY", "builder"),
    ] {
        let got = arg_default(&all, None, name).flatten();
        if got.as_deref() != Some(default) {
            problems.push(format!(
                "Dockerfile: ARG {name} defaults to {got:?}, not {default:?}"
            ));
        }
    }
    let stage_from = |name: &str| {
        all.iter()
            .find(|i| i.keyword == "FROM" && i.args.ends_with(&format!(" AS {name}")))
            .map(|i| i.args.clone())
    };
    if stage_from("binary").as_deref() != Some("${BINARY} AS binary") {
        problems.push("Dockerfile: no stage `FROM ${BINARY} AS binary`".into());
    }
    let prebuilt = all
        .iter()
        .find(|i| i.keyword == "FROM" && i.args == "scratch AS prebuilt")
        .and_then(|i| i.stage);
    if !in_stage(prebuilt, "COPY")
        .iter()
        .any(|i| i.args == "prebuilt/selfdeploy /out/selfdeploy")
    {
        problems.push(
            "Dockerfile: no stage `FROM scratch AS prebuilt` copying prebuilt/selfdeploy".into(),
        );
    }
    let rust = arg_default(&all, None, "RUST_VERSION").flatten();
    if rust.as_deref() != Some(env!("CARGO_PKG_RUST_VERSION")) {
        problems.push(format!(
            "Dockerfile: RUST_VERSION defaults to {rust:?}, Cargo.toml's rust-version is {}",
            env!("CARGO_PKG_RUST_VERSION")
        ));
    }
    if !in_stage(builder, "RUN")
        .iter()
        .any(|i| i.args.contains("cargo build --release --locked"))
    {
        problems.push("Dockerfile: the builder does not run cargo build --release --locked".into());
    }
    let copied: Vec<String> = in_stage(builder, "COPY")
        .iter()
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            let sources = &words[..words.len().saturating_sub(1)];
            sources
                .iter()
                .filter(|w| !w.starts_with("--"))
                .map(|w| w.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    needed.extend(["src", "benches"].map(|d| format!("{d}/x.rs")));
    needed.extend(compile_time_inputs());
    for path in needed {
        let covered = copied
            .iter()
            .any(|c| path == *c || path.starts_with(&format!("{c}/")));
        if !covered {
            let shown = path.trim_end_matches("/x.rs");
            problems.push(format!(
                "Dockerfile: the builder does not copy {shown}, which cargo build reads"
            ));
        }
    }

    // The runtime: Debian slim, the tools the engine runs, the user.
    let from = in_stage(runtime, "FROM")[0].args.clone();
    if from != "${RUNTIME_IMAGE}" {
        problems.push(format!(
            "Dockerfile: the runtime is {from:?}, not ${{RUNTIME_IMAGE}}"
        ));
    }
    let runs = in_stage(runtime, "RUN");
    match runs.iter().find(|i| i.args.contains("apt-get install")) {
        None => problems.push("Dockerfile: the runtime installs no package".into()),
        Some(install) => {
            let words: Vec<&str> = install.args.split_whitespace().collect();
            for package in ["bash", "git", "openssh-client", "ca-certificates"] {
                if !words.contains(&package) {
                    problems.push(format!(
                        "Dockerfile: the runtime does not install {package}"
                    ));
                }
            }
            if !words.contains(&"--no-install-recommends") {
                problems.push("Dockerfile: apt-get install without --no-install-recommends".into());
            }
            if !install.args.contains("rm -rf /var/lib/apt/lists/*") {
                problems.push("Dockerfile: the apt lists are left in the image".into());
            }
        }
    }
    for (name, default) in [
        ("APP_UID", "1000"),
        ("APP_GID", "1000"),
        ("APP_USER", "selfdeploy"),
        ("APP_HOME", "/home/selfdeploy"),
        ("REVISION", ""),
    ] {
        let got = arg_default(&all, runtime, name);
        if got != Some(Some(default.to_owned())) {
            problems.push(format!(
                "Dockerfile: the runtime's ARG {name} is {got:?}, not {name}={default}"
            ));
        }
    }
    let creates_user = runs.iter().any(|i| {
        i.args
            .contains(r#"groupadd --gid "${APP_GID}" "${APP_USER}""#)
            && i.args.contains("useradd")
            && [
                r#"--uid "${APP_UID}""#,
                r#"--gid "${APP_GID}""#,
                r#"--home-dir "${APP_HOME}""#,
                "--create-home",
                r#""${APP_USER}""#,
            ]
            .iter()
            .all(|part| i.args.contains(part))
    });
    if !creates_user {
        problems.push(
            "Dockerfile: no RUN creates the group APP_GID and the user APP_USER (APP_UID, \
             home APP_HOME) with groupadd and useradd"
                .into(),
        );
    }
    let binary_on_path = in_stage(runtime, "COPY").iter().any(|i| {
        i.args.starts_with("--from=binary ")
            && (i.args.ends_with(" /usr/local/bin/selfdeploy")
                || i.args.ends_with(" /usr/bin/selfdeploy"))
    });
    if !binary_on_path {
        problems.push("Dockerfile: the binary stage's selfdeploy is not copied onto PATH".into());
    }
    let last = |keyword: &str| in_stage(runtime, keyword).last().map(|i| i.args.clone());
    for (keyword, expected) in [
        ("USER", "${APP_USER}"),
        ("WORKDIR", "${APP_HOME}"),
        ("ENTRYPOINT", r#"["selfdeploy"]"#),
        ("CMD", r#"["watch"]"#),
    ] {
        if last(keyword).as_deref() != Some(expected) {
            problems.push(format!(
                "Dockerfile: the runtime's {keyword} is {:?}, not {expected}",
                last(keyword)
            ));
        }
    }

    // The labels: the crate's name, description, licence and version, the
    // revision from the build argument.
    let labels: BTreeMap<String, String> = in_stage(runtime, "LABEL")
        .iter()
        .flat_map(|i| label_pairs(&i.args))
        .collect();
    let revision_arg_at = all
        .iter()
        .position(|i| i.stage == runtime && i.keyword == "ARG" && i.args.starts_with("REVISION"));
    let revision_label_at = all.iter().position(|i| {
        i.stage == runtime && i.keyword == "LABEL" && i.args.contains(IMAGE_REVISION_LABEL)
    });
    if !matches!((revision_arg_at, revision_label_at), (Some(a), Some(l)) if a < l) {
        problems.push("Dockerfile: ARG REVISION is not declared before the revision label".into());
    }
    for (key, expected) in [
        ("title", env!("CARGO_PKG_NAME")),
        ("description", env!("CARGO_PKG_DESCRIPTION")),
        ("licenses", env!("CARGO_PKG_LICENSE")),
        ("version", env!("CARGO_PKG_VERSION")),
        ("revision", "${REVISION}"),
    ] {
        let key = format!("org.opencontainers.image.{key}");
        if labels.get(&key).map(String::as_str) != Some(expected) {
            problems.push(format!(
                "Dockerfile: the label {key} is {:?}, not {expected:?}",
                labels.get(&key)
            ));
        }
    }
    if !labels.contains_key("org.opencontainers.image.source") {
        problems.push("Dockerfile: no label org.opencontainers.image.source".into());
    }
    problems
}

// --------------------------------------------------------- the package ----

/// `[package.metadata.deb]`, as far as the checks read it.
#[derive(Default)]
struct DebMetadata {
    fields: BTreeMap<String, String>,
    /// (source, destination, mode)
    assets: Vec<(String, String, String)>,
    systemd_units: BTreeMap<String, String>,
}

fn quoted_strings(line: &str) -> Vec<String> {
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(ToOwned::to_owned)
        .collect()
}

fn deb_metadata(cargo_toml: &str) -> DebMetadata {
    let mut meta = DebMetadata::default();
    let Some(at) = cargo_toml.find("\n[package.metadata.deb]\n") else {
        return meta;
    };
    let section = &cargo_toml[at + 1..];
    let mut lines = section.lines().skip(1);
    while let Some(line) = lines.next() {
        if line.starts_with('[') {
            break;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        match key {
            "assets" => {
                for asset in lines.by_ref() {
                    if asset.trim() == "]" {
                        break;
                    }
                    if let [source, dest, mode] = quoted_strings(asset).as_slice() {
                        meta.assets
                            .push((source.clone(), dest.clone(), mode.clone()));
                    }
                }
            }
            "systemd-units" => {
                let inner = value.trim().trim_start_matches('{').trim_end_matches('}');
                for pair in inner.split(',') {
                    if let Some((k, v)) = pair.split_once('=') {
                        meta.systemd_units
                            .insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
                    }
                }
            }
            _ => {
                let value = value.trim();
                let value = if value.starts_with("\"\"\"") {
                    value.to_owned()
                } else {
                    value.trim_matches('"').to_owned()
                };
                meta.fields.insert(key.to_owned(), value);
            }
        }
    }
    meta
}

/// The files `pattern` names under `base` (a `*` in its last part at most).
fn glob(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let path = base.join(pattern);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        };
    };
    let Ok(entries) = std::fs::read_dir(path.parent().unwrap()) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            p.is_file() && n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= name.len() - 1
        })
        .collect();
    out.sort();
    out
}

/// A unit file's `Key=value` lines.
fn unit_entries(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The destinations the package needs, each with its source and mode.
const SHIPPED: &[(&str, &str, &str)] = &[
    ("usr/bin/", "target/release/selfdeploy", "755"),
    ("etc/selfdeploy/selfdeploy.env", ".env.example", "640"),
    (
        "usr/share/selfdeploy/deploy-hook.sh",
        "scripts/deploy-hook.sh",
        "755",
    ),
    (
        "usr/share/man/man1/",
        "target/release/assets/man/*.1.gz",
        "644",
    ),
    (
        "usr/share/bash-completion/completions/selfdeploy",
        "target/release/assets/completions/selfdeploy.bash",
        "644",
    ),
    (
        "usr/share/zsh/vendor-completions/_selfdeploy",
        "target/release/assets/completions/_selfdeploy",
        "644",
    ),
    (
        "usr/share/fish/vendor_completions.d/selfdeploy.fish",
        "target/release/assets/completions/selfdeploy.fish",
        "644",
    ),
    ("usr/share/doc/selfdeploy/README.md", "README.md", "644"),
    (
        "usr/share/doc/selfdeploy/operations/",
        "docs/operations/*.md",
        "644",
    ),
];

/// The packaged unit's sandbox: each key and its value.
const UNIT_SANDBOX: &[(&str, &str)] = &[
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("UMask", "0027"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("RestrictRealtime", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RemoveIPC", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallErrorNumber", "EPERM"),
    ("TimeoutStopSec", "200"),
    ("KillSignal", "SIGTERM"),
    ("Restart", "on-failure"),
];

/// Every problem of the package's metadata, its unit, its user and CI.
fn packaging_problems(files: &Files) -> Vec<String> {
    let mut problems = Vec::new();
    let meta = deb_metadata(&files.cargo_toml);
    for field in [
        "maintainer",
        "section",
        "priority",
        "extended-description",
        "changelog",
    ] {
        if !meta.fields.contains_key(field) {
            problems.push(format!("Cargo.toml: [package.metadata.deb] has no {field}"));
        }
    }
    if let Some(changelog) = meta.fields.get("changelog")
        && !root().join(changelog).is_file()
    {
        problems.push(format!(
            "Cargo.toml: the changelog {changelog} is not a file"
        ));
    }
    let depends = meta.fields.get("depends").cloned().unwrap_or_default();
    let alternatives: Vec<&str> = depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    for needed in ["$auto", "bash", "git", "openssh-client"] {
        if !alternatives.contains(&needed) {
            problems.push(format!(
                "Cargo.toml: the package's depends ({depends:?}) lacks {needed}"
            ));
        }
    }
    // The versions the package is built and tested with (bash is
    // essential: lintian wants its version said).
    for tool in ["bash", "git", "openssh-client"] {
        let versioned = depends
            .split(',')
            .map(str::trim)
            .any(|d| d.starts_with(&format!("{tool} (>= ")));
        if alternatives.contains(&tool) && !versioned {
            problems.push(format!(
                "Cargo.toml: the dependency on {tool} is not versioned ({tool} (>= ...))"
            ));
        }
    }

    for (dest, source, mode) in SHIPPED {
        let found = meta.assets.iter().find(|(_, d, _)| d == dest);
        match found {
            None => problems.push(format!("Cargo.toml: no asset is installed as {dest}")),
            Some((s, _, m)) => {
                if s != source {
                    problems.push(format!("Cargo.toml: {dest} comes from {s}, not {source}"));
                }
                if m != mode {
                    problems.push(format!("Cargo.toml: {dest} has mode {m}, not {mode}"));
                }
            }
        }
    }
    for (source, dest, _) in &meta.assets {
        // What the build makes is checked by running the build (below and
        // scripts/build-deb.sh); a source file must exist now.
        if !source.starts_with("target/release/") && glob(root(), source).is_empty() {
            problems.push(format!(
                "Cargo.toml: the asset {source} (to {dest}) matches no file"
            ));
        }
    }

    // The unit: installed disabled, runs watch from the package as the
    // package's user, sandboxed.
    let units = &meta.systemd_units;
    if units.get("unit-name").map(String::as_str) != Some("selfdeploy-watch") {
        problems.push("Cargo.toml: systemd-units does not name the unit selfdeploy-watch".into());
    }
    if units.get("enable").map(String::as_str) != Some("false")
        || units.get("start").map(String::as_str) != Some("false")
    {
        problems.push(
            "Cargo.toml: systemd-units must install the unit disabled and stopped \
             (enable = false, start = false): the env file is edited first"
                .into(),
        );
    }
    if meta.fields.get("maintainer-scripts") != units.get("unit-scripts") {
        problems.push(
            "Cargo.toml: maintainer-scripts must be the unit-scripts directory, or cargo-deb \
             writes no maintainer script (no user, no daemon-reload)"
                .into(),
        );
    }
    let unit = unit_entries(&files.packaged_unit);
    let env_asset = SHIPPED
        .iter()
        .find(|(_, source, _)| *source == ".env.example")
        .map_or("", |(dest, _, _)| dest);
    let user = files
        .sysusers
        .lines()
        .find(|l| l.starts_with("u "))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let home = l.rsplit('"').next().unwrap_or_default();
            (
                fields[1].to_owned(),
                home.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            )
        });
    for (key, expected) in [
        ("ExecStart", "/usr/bin/selfdeploy watch".to_owned()),
        ("EnvironmentFile", format!("/{env_asset}")),
        ("User", "selfdeploy".to_owned()),
        (
            "WorkingDirectory",
            user.as_ref()
                .map(|(_, home)| home.clone())
                .unwrap_or_default(),
        ),
    ] {
        if unit.get(key) != Some(&expected) {
            problems.push(format!(
                "the packaged unit's {key} is {:?}, not {expected:?}",
                unit.get(key)
            ));
        }
    }
    if user.as_ref().map(|(name, _)| name.as_str()) != Some("selfdeploy") {
        problems.push(format!(
            "selfdeploy.sysusers creates {user:?}, not the user selfdeploy the unit runs as"
        ));
    }
    // The sandbox (`systemd-analyze security` scores it 4.0 or less;
    // scripts/build-deb.sh checks the figure where the tool is): every key
    // that earns it, with the value that still lets ssh, git and bash run.
    let mut sandbox = 0;
    for (key, expected) in UNIT_SANDBOX {
        sandbox += 1;
        if unit.get(*key).map(String::as_str) != Some(*expected) {
            problems.push(format!(
                "the packaged unit's {key} is {:?}, not {expected:?} (its sandbox)",
                unit.get(*key)
            ));
        }
    }
    assert_eq!(sandbox, UNIT_SANDBOX.len());
    // The file system: read-only but for the home and the default REPOS_DIR.
    let default_repos_dir = REGISTRY
        .iter()
        .find(|s| s.name == "REPOS_DIR")
        .map_or("", |s| s.default);
    if unit.get("ReadWritePaths") != Some(&format!("-{default_repos_dir}")) {
        problems.push(format!(
            "the packaged unit's ReadWritePaths is {:?}, not the default REPOS_DIR \"-{default_repos_dir}\"",
            unit.get("ReadWritePaths")
        ));
    }
    let home = user
        .as_ref()
        .map(|(_, home)| home.as_str())
        .unwrap_or_default();
    if unit
        .get("StateDirectory")
        .map(|d| format!("/var/lib/{d}"))
        .as_deref()
        != Some(home)
    {
        problems.push(format!(
            "the packaged unit's StateDirectory is {:?}: the user's home {home:?} must stay writable",
            unit.get("StateDirectory")
        ));
    }

    let ci: Vec<&str> = files.ci.lines().map(str::trim).collect();
    let test_at = ci.iter().position(|l| l.starts_with("cargo test"));
    let deb_at = ci.iter().position(|l| *l == "bash scripts/build-deb.sh");
    if !matches!((test_at, deb_at), (Some(t), Some(d)) if t < d) {
        problems.push(".ci/run does not run bash scripts/build-deb.sh after cargo test".into());
    }
    // The real scene runs in CI, on the release binary the package built.
    let scene_at = ci
        .iter()
        .position(|l| l.ends_with("bash scripts/container-e2e.sh"));
    if !matches!((deb_at, scene_at), (Some(d), Some(e)) if d < e) {
        problems
            .push(".ci/run does not run bash scripts/container-e2e.sh after the package".into());
    }
    problems
}

// --------------------------------------------------------------- tests ----

#[test]
fn container_compose_passes_every_setting_with_its_default() {
    let files = Files::real();
    let problems = compose_problems(&files.compose, &files.dockerfile);
    assert_none("compose.yaml", &problems);
    let lines = yaml_lines(&files.compose);
    let environment = yaml_block(&lines, &["services", "selfdeploy-watch", "environment"]);
    assert_eq!(yaml_entries(environment.unwrap()).len(), REGISTRY.len());
}

#[test]
fn container_dockerfile_builds_locked_and_runs_watch_as_the_app_user() {
    let problems = dockerfile_problems(&Files::real().dockerfile);
    assert_none("Dockerfile", &problems);
    // The scan of src/ found what the builder must copy.
    assert!(
        compile_time_inputs().contains(&"scripts/deploy-hook.sh".to_owned()),
        "{:?}",
        compile_time_inputs()
    );
}

#[test]
fn packaging_metadata_unit_and_ci_ship_what_the_package_needs() {
    assert_none("the package", &packaging_problems(&Files::real()));
    let meta = deb_metadata(&Files::real().cargo_toml);
    assert!(meta.assets.len() >= SHIPPED.len(), "{}", meta.assets.len());
}

/// The generated assets: the script writes every file the package lists
/// under target/release/assets/, and the man page the unit names.
#[test]
fn packaging_assets_script_writes_what_the_package_lists() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let out = Command::new(tool("bash"))
        .arg(root().join("scripts/package-assets.sh"))
        .arg(env!("CARGO_BIN_EXE_selfdeploy"))
        .arg(release.join("assets"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let meta = deb_metadata(&Files::real().cargo_toml);
    let mut generated = 0;
    for (source, dest, _) in &meta.assets {
        let Some(rel) = source.strip_prefix("target/release/") else {
            continue;
        };
        if rel == "selfdeploy" {
            continue;
        }
        generated += 1;
        assert!(
            !glob(&release, rel).is_empty(),
            "scripts/package-assets.sh does not write {source} (for {dest})"
        );
    }
    assert_eq!(generated, 4, "man pages and three completion scripts");

    let pages = glob(&release, "assets/man/*.1.gz");
    let unit = unit_entries(&Files::real().packaged_unit);
    let documentation = unit.get("Documentation").cloned().unwrap_or_default();
    let named: Vec<&str> = documentation
        .split_whitespace()
        .filter_map(|d| d.strip_prefix("man:")?.strip_suffix("(1)"))
        .collect();
    assert_eq!(named, ["selfdeploy-watch"], "{documentation}");
    for page in named {
        assert!(
            pages.iter().any(|p| p.ends_with(format!("{page}.1.gz"))),
            "{page}.1.gz not among {pages:?}"
        );
    }
    let gzip = Command::new(tool("gzip"))
        .arg("-t")
        .args(&pages)
        .output()
        .unwrap();
    assert!(gzip.status.success(), "{gzip:?}");
}

/// Each check, against a copy of the real files broken for it.
#[test]
fn container_and_packaging_checks_fail_on_a_broken_copy() {
    type Field = fn(&mut Files) -> &mut String;
    let compose: Field = |f| &mut f.compose;
    let dockerfile: Field = |f| &mut f.dockerfile;
    let cargo: Field = |f| &mut f.cargo_toml;
    let unit: Field = |f| &mut f.packaged_unit;
    let sysusers: Field = |f| &mut f.sysusers;
    let ci: Field = |f| &mut f.ci;
    let version = env!("CARGO_PKG_VERSION");
    let version_label = format!("version=\"{version}\"");
    let stale_label = format!("version=\"{version}-old\"");
    #[rustfmt::skip]
    let breaks: Vec<(Field, &str, &str, &str)> = vec![
        // compose.yaml
        (compose, "      HISTORY_HMAC_KEY: \"${HISTORY_HMAC_KEY-}\"\n", "", "HISTORY_HMAC_KEY is missing"),
        (compose, "${STAGING_PORT-8501}", "${STAGING_PORT-8502}", "STAGING_PORT defaults to \"8502\""),
        (compose, "    environment:\n", "    environment:\n      SELF_DEPLOY_TYPO: \"${SELF_DEPLOY_TYPO-x}\"\n", "names SELF_DEPLOY_TYPO, which is not a setting"),
        (compose, "${HISTORY_HMAC_KEY-}", "${HISTORY_HMAC_KEY-abc}", "the secret HISTORY_HMAC_KEY has a default"),
        (compose, "${DEPLOY_SSH_USER-deploy}", "${DEPLOY_SSH_USER:-deploy}", "write ${DEPLOY_SSH_USER-default}"),
        (compose, "DEPLOY_SSH_HOST: \"${DEPLOY_SSH_HOST-", "DEPLOY_SSH_HOST: \"${DEPLOY_SSH_USER-", "takes its value from DEPLOY_SSH_USER"),
        (compose, "      SELF_DEPLOY_WORKTREE:\n", "      SELF_DEPLOY_WORKTREE: \"${SELF_DEPLOY_WORKTREE-{repos_dir}}\"\n", "docker-compose 1.x cannot hold"),
        (compose, "network_mode: host", "network_mode: bridge", "network_mode is"),
        (compose, "STAGING_PORT: \"${STAGING_PORT-8501}\"", "STAGING_PORT: \"8501\"", "is not ${NAME-default}"),
        (compose, "      SELF_DEPLOY_ENABLED:", "      SELF_DEPLOY_ENABLED: \"${SELF_DEPLOY_ENABLED-true}\"\n      SELF_DEPLOY_ENABLED:", "SELF_DEPLOY_ENABLED is listed twice"),
        (compose, "repos}:${REPOS_DIR:-/srv", "repos}:/data${REPOS_DIR:-/srv", "the REPOS_DIR mount"),
        (compose, "${HOST_REPOS_DIR:-/srv", "${REPOS_DIR:-/srv", "the REPOS_DIR mount"),
        (compose, "/.ssh:ro\"", "/.ssh\"", "not mounted read-only"),
        (compose, "    volumes:\n", "    volumes:\n      - \"/var/run/docker.sock:/var/run/docker.sock\"\n", "an unexpected mount \"/var/run/docker.sock"),
        (compose, "APP_UID: \"${APP_UID:-1000}\"", "APP_UID: \"${APP_UID:-1001}\"", "the build argument APP_UID defaults to \"1001\""),
        (compose, "        REVISION: \"${REVISION:-}\"\n", "", "does not pass the build argument REVISION"),
        (compose, "command: [\"watch\"]", "command: [\"doctor\"]", "command is"),
        (compose, "restart: unless-stopped", "restart: always", "restart is"),
        (compose, "  selfdeploy-watch:\n", "  other:\n    image: x\n  selfdeploy-watch:\n", "not the one selfdeploy-watch"),
        (compose, "APP_GID: \"${APP_GID:-1000}\"", "APP_GID: \"1000\"", "not ${APP_GID:-default}"),
        (compose, "      - \"${SSH_DIR:-~/.ssh}:${APP_HOME:-/home/selfdeploy}/.ssh:ro\"\n", "", "no single mount of the ssh directory"),
        // Dockerfile
        (dockerfile, "ARG APP_UID=1000", "ARG APP_UID=0", "ARG APP_UID"),
        (dockerfile, "ARG APP_HOME=/home/selfdeploy", "ARG APP_HOME=/srv/app", "ARG APP_HOME"),
        (dockerfile, "ARG REVISION=\n", "", "ARG REVISION"),
        (dockerfile, "revision=\"${REVISION}\"", "revision=\"unknown\"", "org.opencontainers.image.revision"),
        (dockerfile, "USER ${APP_USER}", "USER root", "USER is"),
        (dockerfile, "WORKDIR ${APP_HOME}", "WORKDIR /", "WORKDIR is"),
        (dockerfile, "ENTRYPOINT [\"selfdeploy\"]", "ENTRYPOINT selfdeploy", "ENTRYPOINT is"),
        (dockerfile, "CMD [\"watch\"]", "CMD [\"doctor\"]", "CMD is"),
        (dockerfile, "git openssh-client", "git", "does not install openssh-client"),
        (dockerfile, "install -y --no-install-recommends", "install -y", "--no-install-recommends"),
        (dockerfile, "rm -rf /var/lib/apt/lists/*", "true", "apt lists"),
        (dockerfile, "cargo build --release --locked", "cargo build --release", "cargo build --release --locked"),
        (dockerfile, version_label.as_str(), stale_label.as_str(), "org.opencontainers.image.version"),
        (dockerfile, "licenses=\"MIT\"", "licenses=\"GPL-3.0\"", "org.opencontainers.image.licenses"),
        (dockerfile, "ARG RUST_VERSION=1.89", "ARG RUST_VERSION=1.80", "rust-version"),
        (dockerfile, "COPY benches ./benches\n", "", "does not copy benches"),
        (dockerfile, "COPY scripts ./scripts\n", "", "does not copy scripts/deploy-hook.sh"),
        (dockerfile, "ARG RUNTIME_IMAGE=debian:bookworm-slim", "ARG RUNTIME_IMAGE=debian:bookworm", "ARG RUNTIME_IMAGE defaults"),
        (dockerfile, "FROM ${RUNTIME_IMAGE}\n", "FROM debian:bookworm\n", "not ${RUNTIME_IMAGE}"),
        (dockerfile, "ARG BINARY=builder", "ARG BINARY=prebuilt", "ARG BINARY defaults"),
        (dockerfile, "FROM ${BINARY} AS binary", "FROM builder AS binary", "FROM ${BINARY} AS binary"),
        (dockerfile, "COPY prebuilt/selfdeploy /out/selfdeploy", "COPY selfdeploy /out/selfdeploy", "AS prebuilt"),
        (dockerfile, "--uid \"${APP_UID}\"", "--uid 1000", "useradd"),
        (dockerfile, "/usr/local/bin/selfdeploy\n", "/opt/selfdeploy\n", "onto PATH"),
        (dockerfile, "FROM ${BUILDER_IMAGE} AS builder", "FROM rust:latest AS builder", "the builder is"),
        (dockerfile, "ARG BUILDER_IMAGE=rust:${RUST_VERSION}-slim-bookworm", "ARG BUILDER_IMAGE=rust:latest", "ARG BUILDER_IMAGE defaults"),
        (dockerfile, "COPY Cargo.toml Cargo.lock ./", "COPY Cargo.toml ./", "does not copy Cargo.lock"),
        (dockerfile, "ARG REVISION=\n", "LABEL org.opencontainers.image.revision=\"${REVISION}\"\nARG REVISION=\n", "not declared before the revision label"),
        (dockerfile, "      org.opencontainers.image.source=\"${SOURCE_URL}\" \\\n", "", "no label org.opencontainers.image.source"),
        (dockerfile, "description=\"Persisted", "description=\"An old", "org.opencontainers.image.description"),
        // the package
        (cargo, "\"etc/selfdeploy/selfdeploy.env\", \"640\"", "\"etc/selfdeploy/selfdeploy.env\", \"644\"", "selfdeploy.env has mode 644"),
        (cargo, "    [\"scripts/deploy-hook.sh\", \"usr/share/selfdeploy/deploy-hook.sh\", \"755\"],\n", "", "installed as usr/share/selfdeploy/deploy-hook.sh"),
        (cargo, "git (>= 1:2.39), openssh-client (>= 1:9.2p1),", "git (>= 1:2.39),", "lacks openssh-client"),
        (cargo, "bash (>= 5.2),", "bash,", "dependency on bash is not versioned"),
        (cargo, "[\"docs/operations/*.md\"", "[\"docs/ops/*.md\"", "matches no file"),
        (cargo, "enable = false", "enable = true", "disabled and stopped"),
        (cargo, "maintainer-scripts = \"packaging/debian\"\n", "", "maintainer-scripts"),
        (cargo, "section = \"admin\"\n", "", "no section"),
        (cargo, "[\".env.example\", \"etc/selfdeploy", "[\"README.md\", \"etc/selfdeploy", "comes from README.md"),
        (cargo, "unit-name = \"selfdeploy-watch\"", "unit-name = \"watch\"", "does not name the unit selfdeploy-watch"),
        (unit, "ExecStart=/usr/bin/selfdeploy watch", "ExecStart=/usr/local/bin/selfdeploy watch", "ExecStart"),
        (unit, "EnvironmentFile=/etc/selfdeploy/selfdeploy.env", "EnvironmentFile=/srv/selfdeploy/.env", "EnvironmentFile"),
        (unit, "TimeoutStopSec=200", "TimeoutStopSec=20", "TimeoutStopSec"),
        (unit, "WorkingDirectory=/var/lib/selfdeploy", "WorkingDirectory=/tmp", "WorkingDirectory"),
        (unit, "ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"),
        (unit, "SystemCallFilter=@system-service\n", "", "SystemCallFilter"),
        (unit, "CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n", "CapabilityBoundingSet"),
        (unit, "MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute=no", "MemoryDenyWriteExecute"),
        (unit, "ReadWritePaths=-/srv/orchestrator/repos", "ReadWritePaths=/srv", "the default REPOS_DIR"),
        (unit, "StateDirectory=selfdeploy", "StateDirectory=other", "must stay writable"),
        (cargo, "changelog = \"packaging/debian/changelog\"\n", "", "no changelog"),
        (sysusers, "u selfdeploy ", "u deploy ", "not the user selfdeploy"),
        (ci, "bash scripts/build-deb.sh\n", "", "build-deb.sh"),
        (ci, "timeout 900 bash scripts/container-e2e.sh", "true", "container-e2e.sh"),
    ];
    let real = Files::real();
    for (field, from, to, expected) in &breaks {
        let mut broken = real.clone();
        let text = field(&mut broken);
        assert!(
            text.contains(from),
            "the break of {expected:?} finds no {from:?}"
        );
        *text = text.replacen(from, to, 1);
        let problems: Vec<String> = [
            compose_problems(&broken.compose, &broken.dockerfile),
            dockerfile_problems(&broken.dockerfile),
            packaging_problems(&broken),
        ]
        .concat();
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "replacing {from:?} with {to:?} should be reported as {expected:?}; got:\n{}",
            problems.join("\n")
        );
    }
    assert!(breaks.len() >= 45, "{}", breaks.len());
}

/// Compose's reading of a default: to the brace that closes the opening
/// one, whatever braces the default holds.
#[test]
fn container_interpolation_reads_defaults_as_compose_does() {
    assert_eq!(
        interpolation("${A-{x}/y/{z}}").unwrap(),
        ("A".to_owned(), "-", "{x}/y/{z}".to_owned())
    );
    assert_eq!(
        interpolation("${A:-}").unwrap(),
        ("A".to_owned(), ":-", String::new())
    );
    for bad in ["${A-{x}", "${A-x}y", "$A", "${A}", "${A:?x}", "x${A-x}"] {
        assert!(interpolation(bad).is_err(), "{bad}");
    }
}
