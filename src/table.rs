//! The machine's transition table, derived by driving every (state, event)
//! pair under every condition through the real machine, and rendered for
//! reviewers and operators. `machines/self_deploy.ron` is the reviewed copy;
//! a test fails when the two differ.
//!
//! statig cannot list its own transitions, so this is the way to see them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::contract::hook_result::parse_result;
use crate::contract::markers::{DispatchState, FinalizedRecord, Ticket};
use crate::contract::names::{RepoName, WorkItem};
use crate::effect::Effect;
use crate::engine;
use crate::exec::{ExecError, Performed};
use crate::machine::{DispatchAge, EventName, Facts, Revision, StateName};
use crate::store::Revoke;

/// One row: in state `from`, event `event` under `condition` leads to `to`
/// with `outcome`, performing effects of these kinds in this order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub from: String,
    pub event: String,
    pub condition: String,
    pub to: String,
    pub outcome: String,
    pub effects: Vec<String>,
}

/// One way the world can be when an event arrives: a deviation from the
/// everything-passes baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Baseline,
    NotApplicable,
    StagingPortEqual,
    /// An operator locked the repo (`selfdeploy lock`).
    Frozen,
    /// A run a reset kept has no result yet.
    EarlierRunRunning,
    RevisionUnknown,
    NoWorktree,
    /// The worktree's HEAD is another branch than the item's.
    WrongBranch,
    NoTransportProgram,
    /// The launch fails, and the revoke wins the rename.
    LaunchFailsRevoked,
    /// The launch fails, but the host claimed the ticket first.
    LaunchFailsClaimed,
    ResultZero,
    ResultNonZero,
    Forced,
    NoMergedValue,
    /// The ticket is claimed, no result yet.
    TicketClaimed,
    TicketClaimedDeadlinePassed,
    /// The ticket is unclaimed past the claim timeout; the revoke wins.
    ClaimOverdueRevoked,
    /// The ticket is unclaimed past the claim timeout; the host claims it
    /// just before the revoke.
    ClaimOverdueClaimed,
    /// The ticket is unclaimed, and the dispatch time contradicts the
    /// clocks (in the future, or not what the file's time says).
    DispatchTimeInconsistent,
    /// A crash left the ticket revoked and `initiated` in place.
    TicketRevoked,
    /// A crash left `initiated` without its ticket.
    TicketMissing,
    /// `reset --force` while the host runs the hook.
    ForcedClaimed,
    /// An item the original engine started: no ticket, the legacy `result`.
    Legacy,
    /// A finalized item whose push failed before.
    PushPending,
}

const SCENARIOS: [Scenario; 25] = [
    Scenario::Baseline,
    Scenario::NotApplicable,
    Scenario::StagingPortEqual,
    Scenario::Frozen,
    Scenario::EarlierRunRunning,
    Scenario::RevisionUnknown,
    Scenario::NoWorktree,
    Scenario::WrongBranch,
    Scenario::NoTransportProgram,
    Scenario::LaunchFailsRevoked,
    Scenario::LaunchFailsClaimed,
    Scenario::ResultZero,
    Scenario::ResultNonZero,
    Scenario::Forced,
    Scenario::NoMergedValue,
    Scenario::TicketClaimed,
    Scenario::TicketClaimedDeadlinePassed,
    Scenario::ClaimOverdueRevoked,
    Scenario::ClaimOverdueClaimed,
    Scenario::DispatchTimeInconsistent,
    Scenario::TicketRevoked,
    Scenario::TicketMissing,
    Scenario::ForcedClaimed,
    Scenario::Legacy,
    Scenario::PushPending,
];

/// The whole table, by state and event, conditions in the order the
/// scenarios meet them (everything passing first).
pub fn derive() -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    // Whether the push works is a dimension of its own: every scenario runs
    // with a reachable and an unreachable remote.
    for (scenario, push_fails) in SCENARIOS.into_iter().flat_map(|s| [(s, false), (s, true)]) {
        // The overrides, the repo and the item are constants that parse
        // (the table's own tests derive every scenario).
        #[allow(clippy::expect_used)]
        let settings = Settings::with_overrides(match scenario {
            Scenario::NotApplicable => &[("SELF_DEPLOY_ENABLED", "false")],
            Scenario::StagingPortEqual => &[
                ("STAGING_PORT", "9500"),
                ("DEPLOY_PROD_TARGET_PORT", "9500"),
            ],
            Scenario::TicketClaimedDeadlinePassed => &[("SELF_DEPLOY_RESULT_DEADLINE_SECS", "60")],
            _ => &[],
        })
        .expect("scenario settings parse");
        #[allow(clippy::expect_used)]
        let repo = RepoName::new(crate::config::SELF_HOSTING_REPO).expect("valid");
        #[allow(clippy::expect_used)]
        let work_item = WorkItem::new("W-1").expect("valid");
        use Scenario as S;
        let ticket = match scenario {
            S::TicketClaimed | S::TicketClaimedDeadlinePassed | S::ForcedClaimed => Ticket::Claimed,
            S::TicketRevoked => Ticket::Revoked,
            S::TicketMissing => Ticket::Missing,
            _ => Ticket::Sent,
        };
        let dispatch = DispatchState {
            id: "0000000000000001".into(),
            ticket,
        };
        let open_tickets = vec![dispatch.id.clone()];
        let running_runs = vec!["0000000000000009".to_owned()];
        let pending = FinalizedRecord {
            deploy_status: crate::contract::hook_result::Verdict::Success,
            hook_exit_code: "0".into(),
            finalized_at: "1970-01-01T00:00:00Z".into(),
            finalized_by: "table".into(),
            pushed: Some(false),
            push_error: Some("remote unreachable".into()),
        };
        let pushed = FinalizedRecord {
            pushed: Some(true),
            push_error: None,
            ..pending.clone()
        };
        // Past the claim timeout, or past the result deadline (60 s in that
        // scenario), or right at the dispatch.
        let waited = Duration::from_secs(match scenario {
            S::ClaimOverdueRevoked | S::ClaimOverdueClaimed | S::DispatchTimeInconsistent => 121,
            S::TicketClaimedDeadlinePassed => 61,
            _ => 0,
        });
        let facts = Facts {
            settings: &settings,
            repo: &repo,
            work_item: &work_item,
            // Time is an input, and so is the dispatch's age.
            now: UNIX_EPOCH + waited,
            dispatched_at: Some("1970-01-01T00:00:00Z"),
            dispatch_age: match scenario {
                S::DispatchTimeInconsistent => {
                    DispatchAge::Inconsistent("the dispatch time is 3600 s in the future".into())
                }
                _ => DispatchAge::Known(waited),
            },
            boot: None,
            actor: "table",
            force: matches!(scenario, S::Forced | S::ForcedClaimed),
            merged: (scenario != Scenario::NoMergedValue).then_some(true),
            branch: Some("b"),
            worktree: Path::new("/worktree"),
            revision: match scenario {
                Scenario::RevisionUnknown => Revision::Unknown("no commit".into()),
                _ => Revision::Known("0000000".into()),
            },
            worktree_check: match scenario {
                Scenario::NoWorktree => Err("no worktree".into()),
                _ => Ok(()),
            },
            head_ref: match scenario {
                Scenario::WrongBranch => Ok("refs/heads/other".into()),
                _ => Ok("refs/heads/b".into()),
            },
            freeze: match scenario {
                Scenario::Frozen => Ok(Some(crate::machine::Freeze {
                    repo: repo.to_string(),
                    message: "release week".into(),
                    actor: "table".into(),
                    time: "1970-01-01T00:00:00Z".into(),
                })),
                _ => Ok(None),
            },
            transport_program: match scenario {
                Scenario::NoTransportProgram => Err("no ssh binary".into()),
                _ => Ok(()),
            },
            new_dispatch_id: "0000000000000002",
            dispatch: (scenario != S::Legacy).then_some(&dispatch),
            running_runs: if scenario == S::EarlierRunRunning {
                &running_runs
            } else {
                &[]
            },
            open_tickets: if ticket == Ticket::Sent && scenario != S::Legacy {
                &open_tickets
            } else {
                &[]
            },
            result: match scenario {
                Scenario::ResultZero => parse_result(b"0"),
                Scenario::ResultNonZero => parse_result(b"1"),
                _ => None,
            },
            approved_by: Some("table"),
            finalized: match scenario {
                S::PushPending => Some(&pending),
                S::Legacy => None,
                _ => Some(&pushed),
            },
        };
        for from in StateName::ALL {
            // A success is only ever read from a record of ours: a
            // `finalized` the engine cannot read is a failure (fail closed).
            if from == StateName::FinalizedSuccess && facts.finalized.is_none() {
                continue;
            }
            for event in EventName::ALL {
                let mut perform = |effect: &Effect| -> Result<Performed, ExecError> {
                    Ok(match effect {
                        Effect::Launch(_)
                            if matches!(
                                scenario,
                                S::LaunchFailsRevoked | S::LaunchFailsClaimed
                            ) =>
                        {
                            Performed::Dispatched(Err("ssh failed".into()))
                        }
                        Effect::Launch(_) => Performed::Dispatched(Ok(())),
                        Effect::RevokeTicket { .. }
                            if matches!(
                                scenario,
                                S::LaunchFailsClaimed | S::ClaimOverdueClaimed
                            ) =>
                        {
                            Performed::Revoke(Revoke::Claimed)
                        }
                        Effect::RevokeTicket { .. } => Performed::Revoke(Revoke::Revoked),
                        Effect::GitPublish { .. } => {
                            Performed::Published(crate::exec::git::Published {
                                pushed: if push_fails {
                                    Err("remote unreachable".into())
                                } else {
                                    Ok(())
                                },
                                notes: Vec::new(),
                            })
                        }
                        _ => Performed::Done,
                    })
                };
                // The table's performer above answers every effect with
                // `Ok`: drive has no error to return.
                #[allow(clippy::expect_used)]
                let driven = engine::drive(from, &event.event(), &facts, &mut perform)
                    .expect("the table's executor never fails");
                let row = Row {
                    from: from.to_string(),
                    event: event.to_string(),
                    condition: driven.condition(),
                    to: driven.to.to_string(),
                    outcome: driven.outcome.to_string(),
                    effects: driven.effects.iter().map(|e| e.kind().to_owned()).collect(),
                };
                if !rows.contains(&row) {
                    rows.push(row);
                }
            }
        }
    }
    let order = |r: &Row| {
        (
            StateName::ALL.iter().position(|s| s.as_str() == r.from),
            EventName::ALL.iter().position(|e| e.as_str() == r.event),
        )
    };
    rows.sort_by_key(order);
    rows
}

/// Parses the reviewed table; errors carry the line and column.
pub fn parse_ron(text: &str) -> Result<Vec<Row>, String> {
    ron::from_str(text).map_err(|e| e.to_string())
}

/// Rows present on only one side, for a readable difference.
pub fn diff(reviewed: &[Row], derived: &[Row]) -> Vec<String> {
    let mut lines = Vec::new();
    for row in reviewed.iter().filter(|r| !derived.contains(r)) {
        lines.push(format!("- reviewed only: {}", one_line(row)));
    }
    for row in derived.iter().filter(|r| !reviewed.contains(r)) {
        lines.push(format!("+ code only:     {}", one_line(row)));
    }
    lines
}

/// One row on one line, for differences and coverage reports.
pub fn one_line(r: &Row) -> String {
    format!(
        "{} --{} [{}]--> {} ({}) effects: {}",
        r.from,
        r.event,
        r.condition,
        r.to,
        r.outcome,
        effects_text(r)
    )
}

fn effects_text(r: &Row) -> String {
    if r.effects.is_empty() {
        "-".to_owned()
    } else {
        r.effects.join(", ")
    }
}

/// The reviewed file's text for these rows.
pub fn to_ron(rows: &[Row]) -> String {
    let mut out = String::from(
        "// The self-deploy machine's complete transition table, reviewed like code.\n\
         // A test derives the same table from the running machine and fails on any\n\
         // difference. Regenerate: cargo run -q -- machine --format ron > machines/self_deploy.ron\n[\n",
    );
    for r in rows {
        let effects: Vec<String> = r.effects.iter().map(|e| format!("{e:?}")).collect();
        let _ = writeln!(
            out,
            "    (from: {:?}, event: {:?}, condition: {:?}, to: {:?}, outcome: {:?}, effects: [{}]),",
            r.from,
            r.event,
            r.condition,
            r.to,
            r.outcome,
            effects.join(", ")
        );
    }
    out.push_str("]\n");
    out
}

// A row is strings and a list of strings: serde_json fails only on a map
// with keys that are not strings or on a failing `Serialize`, neither here.
#[allow(clippy::expect_used)]
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string(rows).expect("rows serialize")
}

pub fn to_table(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.from.clone(),
                r.event.clone(),
                r.condition.clone(),
                r.to.clone(),
                r.outcome.clone(),
                effects_text(r),
            ]
        })
        .collect();
    crate::text_table::render(
        &["FROM", "EVENT", "CONDITION", "TO", "OUTCOME", "EFFECTS"],
        &cells,
    )
}

/// Rows drawn in diagrams: illegal pairs are left to the table.
fn drawn(rows: &[Row]) -> impl Iterator<Item = &Row> {
    rows.iter().filter(|r| r.outcome != "illegal")
}

pub fn to_dot(rows: &[Row]) -> String {
    let mut out = String::from(
        "digraph self_deploy {\n    rankdir=LR;\n    node [shape=box, style=rounded];\n",
    );
    out.push_str("    start [shape=point];\n    start -> idle;\n");
    for s in StateName::ALL {
        // Events that leave a state where it is are listed on one loop, one per line.
        let stays: Vec<String> = drawn(rows)
            .filter(|r| r.from == s.as_str() && r.to == r.from)
            .map(|r| format!("{} [{}]: {}\\l", r.event, r.condition, r.outcome))
            .collect();
        let _ = writeln!(out, "    {s};");
        if !stays.is_empty() {
            let _ = writeln!(
                out,
                "    {s} -> {s} [label=\"{}\", style=dashed, fontsize=10];",
                stays.concat()
            );
        }
    }
    for r in drawn(rows).filter(|r| r.from != r.to) {
        let _ = writeln!(
            out,
            "    {} -> {} [label=\"{}\\n[{}]\"];",
            r.from, r.to, r.event, r.condition
        );
    }
    out.push_str("}\n");
    out
}

pub fn to_mermaid(rows: &[Row]) -> String {
    let mut out = String::from("stateDiagram-v2\n    [*] --> idle\n");
    for r in drawn(rows) {
        let _ = writeln!(
            out,
            "    {} --> {}: {} ({}) {}",
            r.from,
            r.to,
            r.event,
            r.condition.replace(':', " "),
            r.outcome
        );
    }
    out
}

/// `docs/MACHINE.md`.
pub fn to_markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "# The self-deploy machine\n\n\
         Generated from the running machine; do not edit. Regenerate with\n\
         `cargo run -q -- machine --format markdown > docs/MACHINE.md`\n\
         (a test fails when this file is stale). The reviewed table is\n\
         `machines/self_deploy.ron`.\n\n\
         ## Diagram\n\nIllegal pairs are left out; the table below lists them.\n\n```mermaid\n",
    );
    out.push_str(&to_mermaid(rows));
    out.push_str("```\n\n## Table\n\n| from | event | condition | to | outcome | effects |\n|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.from,
            r.event,
            r.condition,
            r.to,
            r.outcome,
            effects_text(r)
        );
    }
    out
}
