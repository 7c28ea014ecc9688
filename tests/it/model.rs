//! Model-based tests: random event sequences with random outside acts (the
//! host claiming late, never, or after ssh reported a failure; late results
//! of earlier dispatches; crashes between any two effects; time passing past
//! the claim timeout and the result deadline; the wall clock stepped an hour
//! either way and reboots; another process holding the
//! lock), from random starting points (an empty item, one mid-way, one the
//! original engine left) under random settings (the kill-switch off, the
//! staging port equal to production), replayed through the engine, checking
//! the machine's promises after every step. A failing case shrinks to a
//! minimal sequence; each bug found this way becomes a fixture in `fixtures/`.
//!
//! The promises: the hook runs at most once per approval (a dispatch reported
//! failed never runs, a dispatch never runs twice), only an approval whose
//! guards all pass launches, a guard that says no is named, every verdict is
//! the current dispatch's own result (or its deadline), a ticket left
//! unclaimed past the claim timeout is revoked by the next poll and a hook
//! with no result is failed at the deadline (neither a second early, and
//! never by a step of the wall clock: the boot clock measures on one boot,
//! and a dispatch time in the future decides nothing across a reboot), the
//! machine and the disk agree, every row taken is a row of the reviewed table, refused or
//! illegal events change nothing, a held lock is an error that names it, and
//! no event fails unnoticed.
//!
//! `the_model_reaches_every_row_and_crash_point` measures what the alphabet
//! reaches (each row of the reviewed table, each crash point) over a fixed
//! sample, prints it, and fails when any of it goes unreached.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use selfdeploy::contract::hook_result::parse_result;
use selfdeploy::replay::{Act, EventStep, Faults, Fixture, Replayer};
use selfdeploy::table::{self, Row};

use crate::support::alone::alone;

/// The most effects one event performs: an approval whose launch failed and
/// whose ticket was revoked (`write_marker`, `write_ticket`, `ssh`,
/// `revoke_ticket`, `remove_marker`). A crash is drawn after 0 (before the
/// first) up to this many.
const MOST_EFFECTS: usize = 5;

/// The claim timeout and the result deadline (when a run sets one), in
/// seconds since the dispatch.
const CLAIM_TIMEOUT: u64 = 120;
const DEADLINE: u64 = 300;

/// What the engine says when another process holds the item's lock.
const LOCK_HELD: &str = "locked by another selfdeploy process";

/// The reviewed table.
fn reviewed() -> &'static [Row] {
    static ROWS: OnceLock<Vec<Row>> = OnceLock::new();
    ROWS.get_or_init(|| {
        table::parse_ron(include_str!("../../machines/self_deploy.ron"))
            .expect("the reviewed table parses")
    })
}

/// An event among `events`, its dispatch failing with probability `fails`.
fn step_among(events: Vec<&'static str>, fails: f64) -> impl Strategy<Value = EventStep> {
    (
        prop::sample::select(events),
        any::<bool>(),
        prop::option::of(any::<bool>()),
        prop::option::weighted(fails, Just("ssh failed: exit status 255".to_owned())),
        prop::bool::weighted(0.3),
        // No tip: the revision is unknown (the freshness guard says no).
        prop::option::weighted(0.9, Just("abc123".to_owned())),
        prop::bool::weighted(0.06),
        prop::bool::weighted(0.06),
        prop::bool::weighted(0.35),
        // The worktree on no branch: a detached HEAD (the branch guard says no).
        prop::option::weighted(0.05, Just(String::new())),
        // An operator's freeze on the repo (the freeze guard says no).
        prop::option::weighted(0.02, Just("release week".to_owned())),
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
                head,
                freeze,
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
                    head,
                    branch_tip,
                    no_transport_program: no_program,
                    freeze,
                }
            },
        )
}

fn event_step() -> impl Strategy<Value = EventStep> {
    step_among(
        vec![
            "request-approve",
            "request-approve",
            "approved",
            "approved",
            "poll",
            "poll",
            "poll",
            "merge-verified",
            "reset",
        ],
        0.3,
    )
}

/// The event a crash interrupts: mostly the ones that perform effects, and
/// failed launches (the longest list of effects) often, so that crashes
/// really crash at every point.
fn crash_step() -> impl Strategy<Value = EventStep> {
    step_among(
        vec![
            "request-approve",
            "approved",
            "approved",
            "approved",
            "poll",
            "poll",
            "merge-verified",
            "reset",
        ],
        0.5,
    )
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => event_step().prop_map(Act::Event),
        3 => Just(Act::HostClaims),
        2 => prop::sample::select(vec!["0\n", "1\n", "", "garbage", "+0", "2"]).prop_map(|s| Act::HostWritesResult(s.to_owned())),
        1 => (1usize..4, prop::sample::select(vec!["0", "7"])).prop_map(|(dispatch, c)| Act::LateResult { dispatch, content: c.to_owned() }),
        1 => (0..=MOST_EFFECTS, crash_step()).prop_map(|(after, event)| Act::Crash { after, event }),
        // Past the claim timeout (120 s) with 130 and 400, past the result
        // deadline (300 s, when set) with 400 or a sum.
        3 => prop::sample::select(vec![30u64, 100, 130, 400]).prop_map(Act::TimePasses),
        // The wall clock stepped an hour either way (the boot clock does
        // not move), or a reboot (the wall clock alone measures across it).
        1 => prop::sample::select(vec![-3600i64, 3600]).prop_map(Act::ClockSteps),
        1 => Just(Act::Reboot),
        1 => event_step().prop_map(Act::LockHeld),
    ]
}

/// `event` as a plain event, or crashing after some of its effects (in 40 %
/// of the cases).
fn maybe_crashing(event: impl Strategy<Value = EventStep>) -> impl Strategy<Value = Act> {
    crashing_after(event, (0..=MOST_EFFECTS).boxed())
}

/// `event` as a plain event, or crashing after `after` effects (in 40 % of
/// the cases).
fn crashing_after(
    event: impl Strategy<Value = EventStep>,
    after: BoxedStrategy<usize>,
) -> impl Strategy<Value = Act> {
    (event, prop::option::weighted(0.4, after)).prop_map(|(event, crash)| match crash {
        Some(after) => Act::Crash { after, event },
        None => Act::Event(event),
    })
}

/// A few acts that belong together: the ways into a dispatch and out of it,
/// met far more often than single acts drawn at random would meet them (an
/// approval would mostly find no request, a crash mostly an event with
/// nothing to do), each event possibly crashing.
fn episode() -> impl Strategy<Value = Vec<Act>> {
    prop_oneof![
        // A request (after a forced reset in half the cases: a redeploy),
        // then an approval, its launch failing often. Its crash comes late
        // more often: only an approval has more than 4 effects (5 when the
        // launch failed and the revoke won).
        4 => (
            any::<bool>(),
            crashing_after(
                step_among(vec!["approved"], 0.5),
                prop::sample::select(vec![0, 1, 2, 3, 4, 4, 5, 5, 5]).boxed(),
            ),
        )
            .prop_map(|(reset, approval)| {
                let mut acts = Vec::new();
                if reset {
                    acts.push(Act::Event(EventStep {
                        force: true,
                        ..event("reset")
                    }));
                }
                acts.extend([Act::Event(event("request-approve")), approval]);
                acts
            }),
        // The host runs the hook and writes its result; a poll.
        2 => (
            prop::sample::select(vec!["0\n", "1\n", "garbage"]),
            maybe_crashing(step_among(vec!["poll"], 0.3)),
        )
            .prop_map(|(content, poll)| {
                vec![Act::HostClaims, Act::HostWritesResult(content.to_owned()), poll]
            }),
        // Then another poll (a push retry) or the merge stamp.
        2 => maybe_crashing(step_among(vec!["poll", "merge-verified"], 0.3)).prop_map(|a| vec![a]),
        // Past the claim timeout, or the deadline; a poll (the host
        // claiming just before its revoke in 30 % of the cases).
        2 => (
            prop::sample::select(vec![130u64, 400]),
            maybe_crashing(step_among(vec!["poll"], 0.3)),
        )
            .prop_map(|(seconds, poll)| vec![Act::TimePasses(seconds), poll]),
        // A reboot, the clock coming up an hour behind or ahead, time
        // passing past the claim timeout; a poll; the clock set right.
        1 => (
            prop::sample::select(vec![-3600i64, 3600]),
            maybe_crashing(step_among(vec!["poll"], 0.3)),
        )
            .prop_map(|(step, poll)| {
                vec![
                    Act::Reboot,
                    Act::ClockSteps(step),
                    Act::TimePasses(130),
                    poll,
                    Act::ClockSteps(-step),
                    Act::Event(event("poll")),
                ]
            }),
        // A reset (forced in half the cases).
        1 => maybe_crashing(step_among(vec!["reset"], 0.3)).prop_map(|a| vec![a]),
        // The host claims and runs on past the deadline: a poll fails it,
        // then a plain reset meets a hook that may still be going.
        1 => maybe_crashing(step_among(vec!["reset"], 0.3)).prop_map(|reset| {
            vec![
                Act::HostClaims,
                Act::TimePasses(400),
                Act::Event(event("poll")),
                Act::Event(event("reset")),
                reset,
            ]
        }),
    ]
}

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Empty,
    ApproveRequested,
    /// Dispatched, the ticket not claimed yet.
    Initiated,
    /// Dispatched, the hook running.
    Claimed,
    FinalizedSuccess,
    FinalizedFailed,
    /// The original engine's dispatch: `initiated` not our JSON, no ticket.
    LegacyInFlight,
    /// The original engine's empty `finalized` (reads as FAILED).
    LegacyFinalized,
}

/// One generated run: the settings, the starting point and the acts.
#[derive(Debug, Clone)]
struct Run {
    /// `SELF_DEPLOY_ENABLED` (false: the kill-switch is off).
    enabled: bool,
    /// A result deadline of 300 s.
    deadline: bool,
    /// `STAGING_PORT` equal to `DEPLOY_PROD_TARGET_PORT`.
    ports_equal: bool,
    start: Start,
    acts: Vec<Act>,
}

fn fixture(enabled: bool, deadline: bool, ports_equal: bool) -> Fixture {
    let mut settings = BTreeMap::new();
    settings.insert("SELF_DEPLOY_ENABLED".to_owned(), enabled.to_string());
    settings.insert(
        "SELF_DEPLOY_CLAIM_TIMEOUT_SECS".to_owned(),
        CLAIM_TIMEOUT.to_string(),
    );
    // Without one, the deadline is off explicitly: the default is finite.
    settings.insert(
        "SELF_DEPLOY_RESULT_DEADLINE_SECS".to_owned(),
        if deadline { DEADLINE } else { 0 }.to_string(),
    );
    if ports_equal {
        settings.insert("STAGING_PORT".to_owned(), "9500".to_owned());
        settings.insert("DEPLOY_PROD_TARGET_PORT".to_owned(), "9500".to_owned());
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

/// The files of the state directory a run starts with: those a short
/// replay with everything passing leaves, or the original engine's.
fn start_files(start: Start) -> BTreeMap<String, String> {
    let literal = |files: &[(&str, &str)]| {
        files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let claimed = EventStep {
        host_claims: true,
        ..event("approved")
    };
    let prefix = match start {
        Start::Empty => return BTreeMap::new(),
        Start::LegacyInFlight => return literal(&[("approve-requested", ""), ("initiated", "")]),
        Start::LegacyFinalized => {
            return literal(&[
                ("approve-requested", ""),
                ("initiated", ""),
                ("result", "0\n"),
                ("finalized", ""),
            ]);
        }
        Start::ApproveRequested => vec![Act::Event(event("request-approve"))],
        Start::Initiated => vec![
            Act::Event(event("request-approve")),
            Act::Event(event("approved")),
        ],
        Start::Claimed => vec![Act::Event(event("request-approve")), Act::Event(claimed)],
        Start::FinalizedSuccess | Start::FinalizedFailed => vec![
            Act::Event(event("request-approve")),
            Act::Event(claimed),
            Act::HostWritesResult(
                if start == Start::FinalizedSuccess {
                    "0\n"
                } else {
                    "1\n"
                }
                .into(),
            ),
            Act::Event(event("poll")),
        ],
    };
    let mut replayer = Replayer::new(&fixture(true, false, false)).unwrap();
    for act in &prefix {
        let actual = replayer.apply(act).unwrap();
        assert_eq!(actual.error, None, "{start:?}: {act:?}");
    }
    replayer
        .state_bytes()
        .into_iter()
        .map(|(name, bytes)| {
            (
                name,
                String::from_utf8(bytes).expect("state files are text"),
            )
        })
        .collect()
}

/// What a sample of runs reached.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    /// How often each row was taken.
    rows: BTreeMap<Row, usize>,
    /// By the number of effects a crash came after: `[drawn, crashed]`.
    crashes: BTreeMap<usize, [usize; 2]>,
    /// `LockHeld` acts refused with the lock's error.
    locks: usize,
    /// Steps that launched the hook.
    launches: usize,
    /// Verdicts the result deadline gave.
    timeouts: usize,
    /// Polls that revoked a ticket left unclaimed too long.
    overdue_revokes: usize,
    /// Approvals refused, by the guard's condition.
    refusals: BTreeMap<String, usize>,
}

/// The condition of the first dispatch guard that says no to this approval,
/// in the machine's order, or `None` when all pass.
fn first_failing_guard(
    run: &Run,
    step: &EventStep,
    running_kept_run: bool,
) -> Option<&'static str> {
    if !run.enabled {
        Some("not applicable")
    } else if run.ports_equal {
        Some("staging port = prod port")
    } else if step.freeze.is_some() {
        Some("repo locked")
    } else if running_kept_run && !step.force {
        Some("an earlier run has no result")
    } else if step.branch_tip.is_none() && step.revision.is_none() {
        Some("revision unknown")
    } else if step.no_worktree {
        Some("no worktree")
    } else if step.head.as_deref() == Some("") {
        Some("worktree not on the branch")
    } else if step.no_transport_program {
        Some("no transport program")
    } else {
        None
    }
}

/// The simulated clocks, as the model sees them.
#[derive(Debug, Default, Clone, Copy)]
struct Clocks {
    /// The wall clock, in seconds since the start (steps move it).
    wall: i64,
    /// Which boot (reboots count up) and its boot clock since the boot.
    boot: u32,
    since_boot: u64,
}

impl Clocks {
    /// The age of a dispatch issued at `then`, as the engine must measure
    /// it: by the boot clock on the same boot; across a reboot by the wall
    /// clock, `None` when that puts the dispatch in the future (beyond the
    /// engine's 5 s tolerance).
    fn age_of(&self, then: &Clocks) -> Option<u64> {
        if self.boot == then.boot {
            return Some(self.since_boot - then.since_boot);
        }
        let waited = self.wall - then.wall;
        (waited >= -5).then(|| waited.max(0) as u64)
    }
}

/// Runs `run` and checks every promise after every step; `Err` names the
/// first broken one.
fn check_run(run: &Run, faults: Faults, tally: &mut Tally) -> Result<(), String> {
    let mut f = fixture(run.enabled, run.deadline, run.ports_equal);
    f.files = start_files(run.start);
    let mut replayer = Replayer::new(&f).unwrap();
    replayer.set_faults(faults);
    tally.runs += 1;
    // What the model knows of the host: the results each dispatch wrote, the
    // legacy `result`, the dispatches that were reported failed (a human may
    // approve again, so they must never run) and those whose hook started.
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    let mut legacy: Option<String> = None;
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut started: BTreeSet<String> = replayer
        .state_bytes()
        .into_iter()
        .filter_map(|(name, _)| name.strip_prefix("claimed-").map(str::to_owned))
        .collect();
    let mut state = replayer.observe().state;
    // The clocks since the start (the wall clock, the boot and its boot
    // clock), and what they read when each dispatch was issued (a start's
    // own dispatch at the start).
    let mut clock = Clocks::default();
    let mut issued_at: BTreeMap<String, Clocks> = replayer
        .dispatches()
        .iter()
        .map(|id| (id.clone(), Clocks::default()))
        .collect();
    for (i, act) in run.acts.iter().enumerate() {
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
        match act {
            Act::TimePasses(seconds) => {
                clock.wall += *seconds as i64;
                clock.since_boot += seconds;
            }
            Act::ClockSteps(seconds) => clock.wall += seconds,
            Act::Reboot => {
                clock.boot += 1;
                clock.since_boot = 0;
            }
            _ => {}
        }
        for id in replayer.dispatches() {
            issued_at.entry(id.clone()).or_insert(clock);
        }

        // Time decides at the poll: a ticket left unclaimed past the claim
        // timeout (or the deadline) is revoked, a running hook with no result
        // past the deadline is a failure, and neither happens a second early.
        if let Act::Event(e) = act
            && e.event == "poll"
            && state == "initiated"
            && let Some(id) = &current
            && let Some(row) = &actual.row
        {
            let has = |prefix: &str| before.iter().any(|(n, _)| *n == format!("{prefix}-{id}"));
            // `None`: the dispatch's time contradicts the clock, and
            // decides nothing.
            let age = clock.age_of(&issued_at[id]);
            let waited = age.unwrap_or(0);
            let past_deadline = run.deadline && age.is_some_and(|a| a >= DEADLINE);
            if !has("result") {
                let overdue =
                    has("dispatch") && (age.is_some_and(|a| a >= CLAIM_TIMEOUT) || past_deadline);
                let revoked = row.effects.first().map(String::as_str) == Some("revoke_ticket");
                if overdue != revoked {
                    return Err(format!(
                        "{at}: dispatch {id}, unclaimed for {waited} s, revoked: {revoked} ({})",
                        table::one_line(row)
                    ));
                }
                tally.overdue_revokes += usize::from(overdue);
                if has("claimed") && past_deadline != (row.to == "finalized_failed") {
                    return Err(format!(
                        "{at}: dispatch {id}, claimed, no result for {waited} s: {}",
                        table::one_line(row)
                    ));
                }
            }
        }

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

        // No event fails unnoticed: a plain event completes; a crash either
        // crashes or completes having fewer effects than its crash point; a
        // held lock is an error that names it, and nothing happens.
        match act {
            Act::Event(_) => {
                if let Some(e) = &actual.error {
                    return Err(format!("{at}: the event failed: {e}"));
                }
                if actual.row.is_none() {
                    return Err(format!("{at}: the event took no row"));
                }
            }
            Act::Crash { after, .. } => {
                let counts = tally.crashes.entry(*after).or_default();
                counts[0] += 1;
                if actual.crashed {
                    counts[1] += 1;
                    if actual.row.is_some() || actual.error.is_some() {
                        return Err(format!("{at}: crashed, yet reported {actual:?}"));
                    }
                } else {
                    let row = actual.row.as_ref().ok_or_else(|| {
                        format!("{at}: neither crashed nor completed: {:?}", actual.error)
                    })?;
                    if row.effects.len() >= (*after).max(1) {
                        return Err(format!(
                            "{at}: performed {} effects without crashing after {after}",
                            row.effects.len()
                        ));
                    }
                    if !actual
                        .error
                        .as_deref()
                        .is_some_and(|e| e.contains("could not crash"))
                    {
                        return Err(format!(
                            "{at}: a crash that did not crash is not reported: {actual:?}"
                        ));
                    }
                }
            }
            Act::LockHeld(_) => {
                if !actual
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains(LOCK_HELD))
                {
                    return Err(format!(
                        "{at}: with the lock held elsewhere, expected an error naming the lock, got {actual:?}"
                    ));
                }
                if actual.row.is_some() || actual.launched || before != replayer.state_bytes() {
                    return Err(format!("{at}: acted without the lock: {actual:?}"));
                }
                tally.locks += 1;
            }
            _ => {}
        }

        // Only an approval of an approve_requested item whose guards all
        // pass launches, and such an approval does launch (unless it crashed
        // before the launch); a guard that says no is the one named.
        let approval = match act {
            Act::Event(e) | Act::Crash { event: e, .. } if e.event == "approved" => Some(e),
            _ => None,
        };
        // A run a reset kept, with no result yet: its hook may still go.
        let running_kept_run = before.iter().any(|(name, _)| {
            name.strip_prefix("reset-").is_some_and(|id| {
                Some(id) != current.as_deref()
                    // An empty result is no result (the wrapper has not
                    // written its exit code yet).
                    && !before.iter().any(|(n, bytes)| {
                        *n == format!("result-{id}") && !bytes.trim_ascii().is_empty()
                    })
            })
        });
        let verdict = approval.map(|e| first_failing_guard(run, e, running_kept_run));
        let may_launch = state == "approve_requested" && verdict == Some(None);
        if actual.launched {
            tally.launches += 1;
            if !may_launch {
                return Err(format!(
                    "{at}: launched from {state} (guards: {verdict:?}, kill-switch on: {})",
                    run.enabled
                ));
            }
        }
        if may_launch && matches!(act, Act::Event(_)) && !actual.launched {
            return Err(format!("{at}: all guards passed, yet nothing was launched"));
        }
        if state == "approve_requested"
            && let Some(Some(guard)) = verdict
            && let Some(row) = &actual.row
        {
            if (row.outcome.as_str(), row.condition.as_str()) != ("refused", guard) {
                return Err(format!(
                    "{at}: expected refused by \"{guard}\", got {}",
                    table::one_line(row)
                ));
            }
            *tally.refusals.entry(guard.to_owned()).or_default() += 1;
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
                .or_else(|| run.deadline.then(|| "timeout".to_owned()));
            if expected.as_deref() != Some(record.hook_exit_code.as_str()) {
                return Err(format!(
                    "{at}: verdict from exit code {:?}, but dispatch {current:?} wrote {expected:?}",
                    record.hook_exit_code
                ));
            }
            if record.hook_exit_code == "timeout" {
                tally.timeouts += 1;
            }
        }

        if let Some(row) = &actual.row {
            if !reviewed().contains(row) {
                return Err(format!(
                    "{at}: took a row the reviewed table does not have: {}",
                    table::one_line(row)
                ));
            }
            *tally.rows.entry(row.clone()).or_default() += 1;
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
        if !run.enabled
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

fn runs() -> impl Strategy<Value = Run> {
    (
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop_oneof![
            3 => Just(Start::Empty),
            2 => Just(Start::ApproveRequested),
            2 => Just(Start::Initiated),
            2 => Just(Start::Claimed),
            1 => Just(Start::FinalizedSuccess),
            1 => Just(Start::FinalizedFailed),
            2 => Just(Start::LegacyInFlight),
            2 => Just(Start::LegacyFinalized),
        ],
        prop::collection::vec(
            prop_oneof![1 => act().prop_map(|a| vec![a]), 1 => episode()],
            1..32,
        )
        .prop_map(|chunks| chunks.concat()),
    )
        .prop_map(|(enabled, deadline, ports_equal, start, acts)| Run {
            enabled,
            deadline,
            ports_equal,
            start,
            acts,
        })
}

/// The proptest: random runs, a failing one shrunk to a minimal sequence
/// (its seed kept in `tests/proptest-regressions/model.txt`, replayed first
/// on every later run). In a process of its own (see `support::alone`): one
/// process for the whole run rather than one forked per case (`fork: true`
/// costs about 0.1 s a case, four times the case itself).
#[test]
fn the_machine_keeps_its_promises() {
    if !alone("model::the_machine_keeps_its_promises") {
        return;
    }
    // Replays write without fsync (their store's durability), so the same
    // time buys twice the cases it did.
    let mut runner = TestRunner::new(Config {
        cases: 512,
        source_file: Some(file!()),
        ..Config::default()
    });
    let outcome = runner.run(&runs(), |run| {
        check_run(&run, Faults::default(), &mut Tally::default()).map_err(TestCaseError::fail)
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// The sample the reach is measured on: fixed, so the counts are the same
/// on every run of the suite (and a floor that holds once holds always).
/// 500 since clock steps and reboots joined the alphabet (with 400, the
/// rarest rows, a reset of a finalized success whose claimed run has no
/// result, went untaken).
const MEASURED_CASES: usize = 500;

/// At least this many `Crash` acts of the measured sample must really crash
/// (measured: 276 of 1762; the floor is two thirds of that).
const CRASHED_FLOOR: usize = 200;

/// At least this many of them after each number of effects (measured: 23
/// after 5, the rarest, only an approval whose launch failed has 5).
const CRASHED_AT_EACH_FLOOR: usize = 10;

/// At least this many `LockHeld` acts of the measured sample must meet the
/// lock (measured: 219, every one met it).
const LOCK_FLOOR: usize = 100;

/// The alphabet reaches everything the model is meant to check: every row of
/// the reviewed table, a crash after every effect an event has, the lock
/// held, the deadline's verdict, every guard's refusal. Counted over a fixed
/// sample (in one process: forked cases cannot add up), printed, and held to
/// a floor so that a change that starves the model fails here.
#[test]
fn the_model_reaches_every_row_and_crash_point() {
    if !alone("model::the_model_reaches_every_row_and_crash_point") {
        return;
    }
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = runs();
    let mut tally = Tally::default();
    for case in 0..MEASURED_CASES {
        let run = strategy.new_tree(&mut runner).unwrap().current();
        if let Err(why) = check_run(&run, Faults::default(), &mut tally) {
            panic!("case {case}: {why}\n{run:#?}");
        }
    }

    let rows = reviewed();
    eprintln!("rows of the reviewed table taken over {} runs:", tally.runs);
    for row in rows {
        eprintln!(
            "{:>6}  {}",
            tally.rows.get(row).copied().unwrap_or(0),
            table::one_line(row)
        );
    }
    let crashed: usize = tally.crashes.values().map(|c| c[1]).sum();
    let drawn: usize = tally.crashes.values().map(|c| c[0]).sum();
    eprintln!(
        "crashes (after n effects: drawn, crashed): {:?}",
        tally.crashes
    );
    eprintln!(
        "crashed {crashed} of {drawn}; lock held {}; launches {}; deadline verdicts {}; \
         overdue tickets revoked {}; refusals {:?}",
        tally.locks, tally.launches, tally.timeouts, tally.overdue_revokes, tally.refusals
    );

    let missed: Vec<String> = rows
        .iter()
        .filter(|r| !tally.rows.contains_key(*r))
        .map(table::one_line)
        .collect();
    assert!(
        missed.is_empty(),
        "rows no run took:\n{}",
        missed.join("\n")
    );
    for after in 0..=MOST_EFFECTS {
        let [_, crashed] = tally.crashes.get(&after).copied().unwrap_or_default();
        assert!(
            crashed >= CRASHED_AT_EACH_FLOOR,
            "only {crashed} crashes after {after} effects really crashed"
        );
    }
    assert!(
        crashed >= CRASHED_FLOOR,
        "only {crashed} of {drawn} crashes really crashed"
    );
    assert!(
        tally.locks >= LOCK_FLOOR,
        "the lock was held {} times",
        tally.locks
    );
    assert!(tally.timeouts > 0, "no verdict came from the deadline");
    assert!(tally.overdue_revokes > 0, "no overdue ticket was revoked");
    for guard in [
        "not applicable",
        "staging port = prod port",
        "revision unknown",
        "no worktree",
        "no transport program",
    ] {
        assert!(
            tally.refusals.get(guard).is_some_and(|n| *n > 0),
            "no approval refused by \"{guard}\": {:?}",
            tally.refusals
        );
    }
}

fn event(name: &str) -> EventStep {
    EventStep {
        event: name.to_owned(),
        branch_tip: Some("abc123".into()),
        ..EventStep::default()
    }
}

/// A plain run: kill-switch on, no deadline, ports apart, from empty.
fn plain(acts: Vec<Act>) -> Run {
    Run {
        enabled: true,
        deadline: false,
        ports_equal: false,
        start: Start::Empty,
        acts,
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
    let run = plain(vec![
        Act::Event(event("request-approve")),
        Act::Event(failing_ssh),
        Act::HostClaims,
    ]);
    assert_eq!(
        check_run(&run, Faults::default(), &mut Tally::default()),
        Ok(())
    );
    let err = check_run(&run, Faults { skip_revoke: true }, &mut Tally::default()).unwrap_err();
    assert!(err.contains("reported failed"), "{err}");

    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let found = runner.run(&runs(), |run| {
        check_run(&run, Faults { skip_revoke: true }, &mut Tally::default())
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
        Act::Event(forced.clone()),
        Act::Event(event("request-approve")),
        // The reset run has no result yet: only a forced approval goes.
        Act::Event(EventStep {
            force: true,
            ..event("approved")
        }),
        Act::LateResult {
            dispatch: 1,
            content: "0".into(),
        },
        Act::Event(event("poll")),
    ];
    let mut replayer = Replayer::new(&fixture(true, false, false)).unwrap();
    let mut last = None;
    for act in &acts {
        last = Some(replayer.apply(act).unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.state, "initiated", "{last:?}");
    assert_eq!(last.outcome.as_deref(), Some("deferred"));
    assert!(last.files.contains(&"result-0000000000000001".to_owned()));
    assert_eq!(
        check_run(&plain(acts), Faults::default(), &mut Tally::default()),
        Ok(())
    );
}
