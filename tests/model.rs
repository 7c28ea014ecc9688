//! Model-based tests: random event sequences with random outside acts,
//! replayed through the engine, checking the machine's promises after every
//! step. A failing case shrinks to a minimal sequence; each bug found this way
//! becomes a fixture in `fixtures/`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use selfdeploy::replay::{Act, EventStep, Fixture, Replayer};

fn event_step() -> impl Strategy<Value = EventStep> {
    (
        prop::sample::select(vec![
            "request-approve",
            "approved",
            "poll",
            "merge-verified",
            "reset",
        ]),
        any::<bool>(),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.2, Just("ssh failed: exit status 255".to_owned())),
        prop::option::weighted(0.8, Just("abc123".to_owned())),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(event, force, merged, dispatch_fails, branch_tip, no_program)| EventStep {
                event: event.to_owned(),
                actor: None,
                branch: None,
                worktree: None,
                revision: None,
                merged,
                force,
                dispatch_fails,
                branch_tip,
                no_transport_program: no_program,
            },
        )
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => event_step().prop_map(Act::Event),
        2 => prop::sample::select(vec!["0\n", "1\n", "", "garbage", "+0", "2"]).prop_map(|s| Act::HostWritesResult(s.to_owned())),
        1 => (0usize..4, event_step()).prop_map(|(after, event)| Act::Crash { after, event }),
        1 => (1u64..600).prop_map(Act::TimePasses),
    ]
}

fn fixture(enabled: bool) -> Fixture {
    let mut settings = BTreeMap::new();
    settings.insert("SELF_DEPLOY_ENABLED".to_owned(), enabled.to_string());
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_machine_keeps_its_promises(enabled in prop::bool::weighted(0.85), acts in prop::collection::vec(act(), 1..30)) {
        let mut replayer = Replayer::new(&fixture(enabled)).unwrap();
        let mut launches_since_reset = 0;
        let mut state = replayer.observe().state;
        for (i, act) in acts.iter().enumerate() {
            let before = replayer.state_bytes();
            let actual = replayer.apply(act).unwrap();
            let at = format!("step {} ({act:?})", i + 1);

            if actual.state == "idle" {
                launches_since_reset = 0;
            }
            if actual.launched {
                launches_since_reset += 1;
            }
            prop_assert!(launches_since_reset <= 1, "{}: a second dispatch without a reset", at);

            let finalized = |s: &str| s.starts_with("finalized_");
            if finalized(&actual.state) && !finalized(&state) {
                prop_assert!(actual.had_result, "{}: finalized without a result", at);
            }
            if let Some(row) = &actual.row {
                prop_assert_eq!(&row.to, &actual.state, "{}: the machine and the disk disagree", at);
                if row.outcome == "refused" || row.outcome == "illegal" || row.outcome == "unchanged" && row.effects.is_empty() {
                    prop_assert_eq!(&before, &replayer.state_bytes(), "{}: {} changed the state directory", at, row.outcome);
                }
            }
            if !enabled && matches!(act, Act::Event(e) if e.event == "approved" || e.event == "request-approve") {
                prop_assert!(!actual.launched, "{}: dispatched with the kill-switch off", at);
                prop_assert_eq!(actual.outcome.as_deref(), Some("refused"), "{}", at);
            }
            state = actual.state;
        }
    }
}
