//! The regression corpus: every fixture replays, together they take every row
//! of the reviewed table, and any altered expectation makes a replay fail
//! with a readable difference.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use selfdeploy::replay::{self, Act, Expect, Fixture, fixture};
use selfdeploy::table;

use crate::support::alone::alone;
use crate::support::sandbox::{BRANCH, Sandbox};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    replay::fixture_files(&dir).expect("fixtures/ exists")
}

fn load(path: &Path) -> Fixture {
    fixture::parse(&fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_fixture_replays_and_the_table_is_covered() {
    // It replays a fixture with a step that finds the lock held.
    if !alone("replay_corpus::every_fixture_replays_and_the_table_is_covered") {
        return;
    }
    let mut taken = Vec::new();
    for path in corpus() {
        let verdict = replay::replay_file(&path);
        assert!(
            verdict.failure.is_none(),
            "{}: {}",
            path.display(),
            verdict.failure.unwrap()
        );
        taken.extend(verdict.rows);
    }
    let rows = table::derive();
    let uncovered = replay::uncovered(&rows, &taken);
    let covered = rows.len() - uncovered.len();
    assert!(
        uncovered.is_empty(),
        "coverage {covered}/{} rows; no fixture takes:\n{}",
        rows.len(),
        uncovered
            .iter()
            .map(|r| format!(
                "  {} --{} [{}]--> {} ({})",
                r.from, r.event, r.condition, r.to, r.outcome
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Text appended to a stated condition or error: no real one contains it.
const ALTERED: &str = " [altered]";

/// Every alteration of one expectation, each of one field: the field's name
/// and the altered expectation. Every field the fixture states is altered.
fn alterations(expect: &Expect) -> Vec<(&'static str, Expect)> {
    let mut out = Vec::new();
    let mut alter = |field, change: &dyn Fn(&mut Expect)| {
        let mut m = expect.clone();
        change(&mut m);
        assert_ne!(&m, expect, "{field}: the alteration changes nothing");
        out.push((field, m));
    };
    alter("state", &|m| {
        m.state = if m.state == "idle" {
            "initiated"
        } else {
            "idle"
        }
        .into()
    });
    if let Some(outcome) = &expect.outcome {
        let other = if outcome == "refused" {
            "illegal"
        } else {
            "refused"
        };
        alter("outcome", &|m| m.outcome = Some(other.into()));
    }
    if expect.condition.is_some() {
        alter("condition", &|m| {
            m.condition.as_mut().unwrap().push_str(ALTERED)
        });
    }
    if expect.effects.is_some() {
        alter("effects", &|m| {
            m.effects.as_mut().unwrap().push("ssh".into())
        });
    }
    if expect.argv.is_some() {
        alter("argv", &|m| m.argv.as_mut().unwrap()[4].push(' '));
    }
    if expect.error.is_some() {
        alter("error", &|m| m.error.as_mut().unwrap().push_str(ALTERED));
    }
    if let Some(files) = &expect.files {
        if !files.is_empty() {
            alter("files", &|m| {
                m.files.as_mut().unwrap().pop();
            });
        }
        alter("files", &|m| {
            m.files.as_mut().unwrap().push("altered".into())
        });
    }
    out
}

/// The failure names `place` first, then shows a difference in `field` on a
/// line of its own (the field's name, then what was expected and found).
fn assert_fails_at(failure: Option<String>, place: &str, field: &str, what: &str) {
    let failure = failure.unwrap_or_else(|| panic!("{what}: still passes"));
    assert!(
        failure.starts_with(&format!("first difference at {place}")),
        "{what}: {failure}"
    );
    let shown = failure
        .lines()
        .skip(1)
        .any(|line| line.trim_start().starts_with(field));
    assert!(shown && failure.contains("expected"), "{what}: {failure}");
}

#[test]
fn altering_any_expectation_fails_at_that_step() {
    // It replays a fixture with a step that finds the lock held.
    if !alone("replay_corpus::altering_any_expectation_fails_at_that_step") {
        return;
    }
    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    for path in corpus() {
        let original = load(&path);
        let name = path.display();
        if let Some(initial) = &original.initial {
            for (field, expect) in alterations(initial) {
                let mut m = original.clone();
                m.initial = Some(expect);
                let what = format!("{name}: altering the initial {field}");
                assert_fails_at(replay::replay(&m).0, "initial files:", field, &what);
                *checked.entry(field).or_default() += 1;
            }
        }
        for i in 0..original.steps.len() {
            for (field, expect) in alterations(&original.steps[i].expect) {
                let mut m = original.clone();
                m.steps[i].expect = expect;
                let what = format!("{name}: altering step {}'s {field}", i + 1);
                let place = format!("step {} (", i + 1);
                assert_fails_at(replay::replay(&m).0, &place, field, &what);
                *checked.entry(field).or_default() += 1;
            }
        }
    }
    // Every kind of expectation was altered somewhere (the corpus states an
    // error once: the lock held).
    let fields = [
        "state",
        "outcome",
        "condition",
        "effects",
        "argv",
        "error",
        "files",
    ];
    for field in fields {
        assert!(
            checked.get(field).is_some_and(|&n| n > 0),
            "no fixture states {field}: {checked:?}"
        );
    }
    assert!(checked.values().sum::<usize>() > 200, "{checked:?}");
    eprintln!("altered expectations, each failing at its step: {checked:?}");
}

#[test]
fn a_crash_that_cannot_happen_is_reported() {
    let mut f = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/crash_finalize.ron"));
    let Act::Crash { after, .. } = &mut f.steps[0].act else {
        panic!()
    };
    *after = 9;
    let (failure, _) = replay::replay(&f);
    assert!(failure.unwrap().contains("could not crash after 9"));
}

#[test]
fn replay_output_is_the_same_bytes_every_time() {
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_selfdeploy"))
            .arg("replay")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stdout)
    );
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.contains("0 failed; table rows covered: "), "{text}");
}

#[test]
fn a_broken_fixture_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.ron");
    fs::write(
        &path,
        "(\n  work_item: \"W\",\n  clock: \"2026-01-01T00:00:00Z\",\n  colour: 1,\n)\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_selfdeploy"))
        .arg("replay")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("FAIL {}: {}:4:", path.display(), path.display())),
        "{text}"
    );
    assert!(text.contains("colour"), "{text}");
}

#[test]
fn a_live_deploy_captured_mid_flight_replays() {
    let sb = Sandbox::new();
    std::fs::write(sb.host_repo().join("hold"), "").unwrap();
    let wt = sb.worktree();
    sb.event_json("request-approve", "ORCH-31", &[]);
    let (code, r) = sb.event_json(
        "approved",
        "ORCH-31",
        &["--branch", BRANCH, "--worktree", wt.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{r}");
    let out = sb.run(&[
        "snapshot",
        "--repo",
        "orchestrator",
        "--work-item",
        "ORCH-31",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut captured = fixture::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    std::fs::remove_file(sb.host_repo().join("hold")).unwrap();
    sb.poll_until_final("ORCH-31", &[]);

    assert_eq!(captured.initial.as_ref().unwrap().state, "initiated");
    assert_eq!(captured.history.len(), 2);
    assert_eq!(
        captured
            .settings
            .get("SELF_DEPLOY_TRANSPORT")
            .map(String::as_str),
        Some("local")
    );
    assert!(!captured.settings.contains_key("REPOS_DIR"));
    let (failure, _) = replay::replay(&captured);
    assert!(failure.is_none(), "{failure:?}");

    // The incident becomes a regression case: what happens next is stated and replayed.
    let more = fixture::parse(
        "(work_item: \"x\", clock: \"2026-01-01T00:00:00Z\", steps: [\n\
           (act: Event(event: \"approved\"), expect: (state: \"initiated\", outcome: Some(\"unchanged\"), effects: Some([]))),\n\
           (act: HostClaims, expect: (state: \"initiated\")),\n\
           (act: HostWritesResult(\"0\\n\"), expect: (state: \"initiated\")),\n\
           (act: Event(event: \"poll\"), expect: (state: \"finalized_success\", outcome: Some(\"transitioned\"),\n\
              effects: Some([\"write_deploy_log\", \"write_marker\", \"git_publish\", \"write_marker\"]))),\n\
         ])",
    )
    .unwrap();
    captured.steps = more.steps;
    let (failure, _) = replay::replay(&captured);
    assert!(failure.is_none(), "{failure:?}");
    // The round trip through text is lossless.
    assert_eq!(
        fixture::parse(&fixture::to_ron(&captured).unwrap()).unwrap(),
        captured
    );
}

/// FIXTURES.md shows a replay's summary line: its figures are today's.
#[test]
fn the_fixtures_page_shows_today_s_corpus() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/operations/FIXTURES.md"
    ))
    .unwrap();
    let rows = table::derive().len();
    // The page's example adds one broken fixture to the corpus.
    let line = format!(
        "{} passed, 1 failed; table rows covered: {rows}/{rows}",
        corpus().len()
    );
    assert!(page.contains(&line), "FIXTURES.md should show: {line}");
}

/// A duration the clock cannot hold is a failing fixture with a clear
/// reason, never a panic, and the fixtures after it still run.
#[test]
fn an_out_of_range_duration_fails_its_fixture_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("a_far_future.ron"),
        "(\n  work_item: \"W-1\",\n  clock: \"2026-01-01T00:00:00Z\",\n  steps: [(act: TimePasses(18446744073709551615), expect: (state: \"idle\"))],\n)\n",
    )
    .unwrap();
    fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/happy_path.ron"),
        dir.path().join("b_happy.ron"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_selfdeploy"))
        .arg("replay")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
    assert!(
        text.contains("TimePasses(18446744073709551615) moves the clock past"),
        "{text}"
    );
    assert!(text.contains("PASS "), "{text}");
    assert!(text.contains("1 passed, 1 failed"), "{text}");
}
