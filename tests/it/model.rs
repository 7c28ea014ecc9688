//! Model-based tests: random event sequences with random outside acts (the
//! host claiming late, never, or after ssh reported a failure; late results
//! of earlier dispatches; crashes between any two effects; time passing),
//! replayed through the engine, checking the machine's promises after every
//! step. A failing case shrinks to a minimal sequence; each bug found this way
//! becomes a fixture in `fixtures/`.
//!
//! The promises: the hook runs at most once per approval (a dispatch reported
//! failed never runs, a dispatch never runs twice), every verdict is the
//! current dispatch's own result (or its deadline), the machine and the disk
//! agree, and refused or illegal events change nothing.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use selfdeploy::contract::hook_result::parse_result;
use selfdeploy::replay::{Act, EventStep, Faults, Fixture, Replayer};

use crate::support::alone::alone;

fn event_step() -> impl Strategy<Value = EventStep> {
    (
        prop::sample::select(vec![
            "request-approve",
            "approved",
            "approved",
            "poll",
            "poll",
            "merge-verified",
            "reset",
        ]),
        any::<bool>(),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.3, Just("ssh failed: exit status 255".to_owned())),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.9, Just("abc123".to_owned())),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(
                event,
                force,
                merged,
                dispatch_fails,
                host_claims,
                branch_tip,
                no_program,
                no_wt,
                push_fails,
            )| {
                EventStep {
                    push_fails,
                    event: event.to_owned(),
                    actor: None,
                    branch: None,
                    worktree: None,
                    revision: None,
                    merged,
                    force,
                    dispatch_fails,
                    host_claims,
                    no_worktree: no_wt,
                    branch_tip,
                    no_transport_program: no_program,
                }
            },
        )
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => event_step().prop_map(Act::Event),
        3 => Just(Act::HostClaims),
        2 => prop::sample::select(vec!["0\n", "1\n", "", "garbage", "+0", "2"]).prop_map(|s| Act::HostWritesResult(s.to_owned())),
        1 => (1usize..4, prop::sample::select(vec!["0", "7"])).prop_map(|(dispatch, c)| Act::LateResult { dispatch, content: c.to_owned() }),
        2 => (0usize..6, event_step()).prop_map(|(after, event)| Act::Crash { after, event }),
        2 => prop::sample::select(vec![30u64, 100, 130, 400]).prop_map(Act::TimePasses),
        1 => event_step().prop_map(Act::LockHeld),
    ]
}

fn fixture(enabled: bool, deadline: bool) -> Fixture {
    let mut settings = BTreeMap::new();
    settings.insert("SELF_DEPLOY_ENABLED".to_owned(), enabled.to_string());
    if deadline {
        settings.insert(
            "SELF_DEPLOY_RESULT_DEADLINE_SECS".to_owned(),
            "300".to_owned(),
        );
    }
    Fixture {
        description: String::new(),
        settings,
        repo: "orchestrator".into(),
        work_item: "MODEL-1".into(),
        clock: "2026-01-01T00:00:00Z".into(),
        files: BTreeMap::new(),
        history: Vec::new(),
        initial: None,
        steps: Vec::new(),
    }
}

/// Runs `acts` and checks every promise after every step; `Err` names the
/// first broken one.
fn check_run(enabled: bool, deadline: bool, acts: &[Act], faults: Faults) -> Result<(), String> {
    let mut replayer = Replayer::new(&fixture(enabled, deadline)).unwrap();
    replayer.set_faults(faults);
    // What the model knows of the host: the results each dispatch wrote, the
    // legacy `result`, the dispatches that were reported failed (a human may
    // approve again, so they must never run) and those whose hook started.
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    let mut legacy: Option<String> = None;
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut state = replayer.observe().state;
    for (i, act) in acts.iter().enumerate() {
        if let Act::LateResult { dispatch, .. } = act
            && *dispatch > replayer.dispatches().len()
        {
            continue;
        }
        let at = format!("step {} ({act:?})", i + 1);
        let before = replayer.state_bytes();
        let current = replayer.current_dispatch();
        let issued_before = replayer.dispatches().len();
        let actual = replayer.apply(act).unwrap();

        // What the host wrote, as the model sees it.
        match act {
            Act::HostWritesResult(content) => match replayer_last_claimed(&started, &replayer) {
                Some(id) => {
                    results.insert(id, content.clone());
                }
                None => legacy = Some(content.clone()),
            },
            Act::LateResult { dispatch, content } => {
                results.insert(replayer.dispatches()[dispatch - 1].clone(), content.clone());
            }
            _ => {}
        }

        // A dispatch reported failed is never run; a dispatch runs once.
        if actual.outcome.as_deref() == Some("dispatch_failed") {
            let id = if replayer.dispatches().len() > issued_before {
                replayer.dispatches().last().cloned()
            } else {
                current.clone()
            };
            if let Some(id) = id {
                failed.insert(id);
            }
        }
        if let Some(id) = &actual.hook_started {
            if failed.contains(id) {
                return Err(format!(
                    "{at}: the hook of dispatch {id} started although that dispatch was reported failed: a second approval would run the deploy twice"
                ));
            }
            if !started.insert(id.clone()) {
                return Err(format!("{at}: dispatch {id} started twice"));
            }
        }
        for id in &started {
            if failed.contains(id) {
                return Err(format!(
                    "{at}: dispatch {id} was reported failed after its hook started"
                ));
            }
        }
        if !enabled && actual.launched {
            return Err(format!("{at}: dispatched with the kill-switch off"));
        }

        // Every verdict is the current dispatch's own.
        let finalized = |s: &str| s.starts_with("finalized_");
        if finalized(&actual.state) && !finalized(&state) {
            let record = replayer
                .finalized()
                .ok_or(format!("{at}: finalized without a record"))?;
            // The current dispatch's own result, or, with none, the deadline
            // (a crashed finalize reports no condition to tell them apart).
            let written = match &current {
                Some(id) => results.get(id),
                None => legacy.as_ref(),
            };
            let expected = written
                .and_then(|c| parse_result(c.as_bytes()))
                .map(|e| e.code)
                .or_else(|| deadline.then(|| "timeout".to_owned()));
            if expected.as_deref() != Some(record.hook_exit_code.as_str()) {
                return Err(format!(
                    "{at}: verdict from exit code {:?}, but dispatch {current:?} wrote {expected:?}",
                    record.hook_exit_code
                ));
            }
        }

        if let Some(row) = &actual.row {
            if row.to != actual.state {
                return Err(format!(
                    "{at}: the machine says {} and the disk {}",
                    row.to, actual.state
                ));
            }
            if (row.outcome == "refused"
                || row.outcome == "illegal"
                || row.outcome == "unchanged" && row.effects.is_empty())
                && before != replayer.state_bytes()
            {
                return Err(format!("{at}: {} changed the state directory", row.outcome));
            }
        }
        if !enabled
            && matches!(act, Act::Event(e) if e.event == "approved" || e.event == "request-approve")
            && actual.outcome.as_deref() != Some("refused")
        {
            return Err(format!("{at}: not refused with the kill-switch off"));
        }
        state = actual.state;
    }
    Ok(())
}

/// The dispatch the host last claimed (the wrapper that writes a result).
fn replayer_last_claimed(started: &BTreeSet<String>, replayer: &Replayer) -> Option<String> {
    replayer
        .dispatches()
        .iter()
        .rev()
        .find(|id| started.contains(*id))
        .cloned()
}

fn runs() -> impl Strategy<Value = (bool, bool, Vec<Act>)> {
    (
        prop::bool::weighted(0.9),
        any::<bool>(),
        prop::collection::vec(act(), 1..40),
    )
}

proptest! {
    // `fork`: in a process of its own (see `support::alone`).
    #![proptest_config(ProptestConfig { cases: 256, fork: true, ..ProptestConfig::default() })]

    #[test]
    fn the_machine_keeps_its_promises((enabled, deadline, acts) in runs()) {
        if let Err(why) = check_run(enabled, deadline, &acts, Faults::default()) {
            prop_assert!(false, "{}", why);
        }
    }
}

fn event(name: &str) -> EventStep {
    EventStep {
        event: name.to_owned(),
        actor: None,
        branch: None,
        worktree: None,
        revision: None,
        merged: None,
        force: false,
        dispatch_fails: None,
        host_claims: false,
        push_fails: false,
        no_worktree: false,
        branch_tip: Some("abc123".into()),
        no_transport_program: false,
    }
}

/// The model test can fail: with the revoke skipped (reported done, ticket
/// left in place), ssh that ran the command and then failed lets the hook run
/// for a dispatch reported failed, and a random search finds such a case.
#[test]
fn the_model_catches_a_skipped_revoke() {
    if !alone("model::the_model_catches_a_skipped_revoke") {
        return;
    }
    let failing_ssh = EventStep {
        dispatch_fails: Some("ssh: connection reset".into()),
        ..event("approved")
    };
    let acts = vec![
        Act::Event(event("request-approve")),
        Act::Event(failing_ssh),
        Act::HostClaims,
    ];
    assert_eq!(check_run(true, false, &acts, Faults::default()), Ok(()));
    let err = check_run(true, false, &acts, Faults { skip_revoke: true }).unwrap_err();
    assert!(err.contains("reported failed"), "{err}");

    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let found = runner.run(&runs(), |(enabled, deadline, acts)| {
        check_run(enabled, deadline, &acts, Faults { skip_revoke: true })
            .map_err(TestCaseError::fail)
    });
    assert!(
        found.is_err(),
        "256 random cases with the revoke skipped broke no promise"
    );
}

/// A late result of an earlier dispatch never decides: after a forced reset
/// and a new approval, only the new dispatch's result is a verdict.
#[test]
fn a_late_result_of_a_reset_dispatch_is_stale() {
    let forced = EventStep {
        force: true,
        ..event("reset")
    };
    let acts = vec![
        Act::Event(event("request-approve")),
        Act::Event(event("approved")),
        Act::HostClaims,
        Act::Event(forced),
        Act::Event(event("request-approve")),
        Act::Event(event("approved")),
        Act::LateResult {
            dispatch: 1,
            content: "0".into(),
        },
        Act::Event(event("poll")),
    ];
    let mut replayer = Replayer::new(&fixture(true, false)).unwrap();
    let mut last = None;
    for act in &acts {
        last = Some(replayer.apply(act).unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.state, "initiated", "{last:?}");
    assert_eq!(last.outcome.as_deref(), Some("deferred"));
    assert!(last.files.contains(&"result-0000000000000001".to_owned()));
    assert_eq!(check_run(true, false, &acts, Faults::default()), Ok(()));
}
