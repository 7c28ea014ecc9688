//! Every row of the contract's transition table (section 9), against the pure
//! machine: no files, no processes. Facts are built by hand.

use std::path::Path;
use std::time::Duration;

use selfdeploy::config::Settings;
use selfdeploy::contract::hook_result::parse_result;
use selfdeploy::contract::markers::{
    DispatchState, FinalizedRecord, InitiatedRecord, Marker, Ticket, decode,
};
use selfdeploy::contract::names::{RepoName, WorkItem};
use selfdeploy::effect::{Effect, Launch, RevokeReason};
use selfdeploy::machine::{
    DispatchAge, Event, EventName, Facts, Outcome, Revision, StateName, step,
};

use StateName::*;

struct World {
    settings: Settings,
    repo: RepoName,
    work_item: WorkItem,
    /// The current dispatch: claimed by the host unless a test says otherwise.
    dispatch: DispatchState,
    open_tickets: Vec<String>,
}

const CURRENT: &str = "00000000000000aa";
const DISPATCHED_AT: &str = "2026-01-01T00:00:00Z";

/// The time `seconds` after the dispatch: time is an input of the machine.
fn at(seconds: u64) -> std::time::SystemTime {
    humantime::parse_rfc3339(DISPATCHED_AT).unwrap() + std::time::Duration::from_secs(seconds)
}
const NEW: &str = "00000000000000bb";

impl World {
    fn new(overrides: &[(&str, &str)]) -> World {
        World {
            settings: Settings::with_overrides(overrides).unwrap(),
            repo: RepoName::new("orchestrator").unwrap(),
            work_item: WorkItem::new("ORCH-9").unwrap(),
            dispatch: DispatchState {
                id: CURRENT.into(),
                ticket: Ticket::Claimed,
            },
            open_tickets: Vec::new(),
        }
    }

    fn with_ticket(mut self, ticket: Ticket) -> World {
        self.dispatch.ticket = ticket;
        if ticket == Ticket::Sent {
            self.open_tickets = vec![CURRENT.into()];
        }
        self
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            settings: &self.settings,
            repo: &self.repo,
            work_item: &self.work_item,
            now: at(0),
            actor: "alice",
            force: false,
            merged: Some(true),
            branch: Some("deploy/ORCH-9"),
            worktree: Path::new("/wt"),
            revision: Revision::Known("abc123".into()),
            worktree_check: Ok(()),
            head_ref: Ok("refs/heads/deploy/ORCH-9".into()),
            transport_program: Ok(()),
            freeze: Ok(None),
            new_dispatch_id: NEW,
            dispatch: Some(&self.dispatch),
            running_runs: &[],
            open_tickets: &self.open_tickets,
            result: None,
            approved_by: Some("alice"),
            finalized: None,
            dispatched_at: Some(DISPATCHED_AT),
            dispatch_age: DispatchAge::Known(Duration::ZERO),
            boot: None,
        }
    }
}

fn kinds(effects: &[Effect]) -> Vec<&'static str> {
    effects.iter().map(Effect::kind).collect()
}

const FINALIZED: [StateName; 2] = [FinalizedSuccess, FinalizedFailed];

#[test]
fn idle_request_approve_when_applicable() {
    let w = World::new(&[]);
    let d = step(Idle, &Event::RequestApprove, &w.facts());
    assert_eq!((d.to, d.outcome), (ApproveRequested, Outcome::Transitioned));
    assert_eq!(d.effects.len(), 1);
    let Effect::WriteMarker { marker, content } = &d.effects[0] else {
        panic!("{d:?}")
    };
    assert_eq!(*marker, Marker::ApproveRequested);
    assert!(content.contains("\"requested_by\":\"alice\""), "{content}");
    // The record's time is the step's, to the second.
    assert!(
        content.contains(&format!("\"requested_at\":\"{DISPATCHED_AT}\"")),
        "{content}"
    );
}

#[test]
fn approve_requested_request_approve_is_unchanged() {
    let w = World::new(&[]);
    let d = step(ApproveRequested, &Event::RequestApprove, &w.facts());
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (ApproveRequested, Outcome::Unchanged, 0)
    );
}

#[test]
fn approved_with_all_guards_passing_dispatches_after_a_durable_record_and_ticket() {
    let w = World::new(&[]);
    let d = step(ApproveRequested, &Event::Approved, &w.facts());
    assert_eq!((d.to, d.outcome), (Initiated, Outcome::Transitioned));
    assert_eq!(kinds(&d.effects), ["write_marker", "write_ticket", "ssh"]);
    assert_eq!(
        d.effects[1],
        Effect::WriteTicket {
            dispatch_id: NEW.into()
        }
    );
    let Effect::WriteMarker {
        marker: Marker::Initiated,
        content,
    } = &d.effects[0]
    else {
        panic!()
    };
    let record: InitiatedRecord = decode(content.as_bytes()).unwrap();
    assert_eq!(record.dispatch_id, NEW);
    assert_eq!(record.approved_at, DISPATCHED_AT);
    assert_eq!(record.branch.as_deref(), Some("deploy/ORCH-9"));
    assert_eq!(record.worktree, "/wt");
    assert_eq!(record.revision.as_deref(), Some("abc123"));
    let Effect::Launch(Launch { argv, .. }) = &d.effects[2] else {
        panic!()
    };
    assert_eq!(
        argv[..4],
        [
            "ssh",
            "-o",
            "StrictHostKeyChecking=no",
            "deploy@host.docker.internal"
        ]
    );
    assert!(
        argv[4].contains(" EXPECTED_REVISION=abc123 bash "),
        "{}",
        argv[4]
    );
    assert_eq!(record.argv, *argv);
    assert!(
        argv[4].starts_with(&format!(
            "setsid bash -c 'mv /srv/orchestrator/repos/.deploy-state-orchestrator/ORCH-9/dispatch-{NEW} \
             /srv/orchestrator/repos/.deploy-state-orchestrator/ORCH-9/claimed-{NEW} || exit 75; cd "
        )),
        "{}",
        argv[4]
    );
    assert!(argv[4].contains(&format!(
        "echo $? > /srv/orchestrator/repos/.deploy-state-orchestrator/ORCH-9/result-{NEW}.part \
         && mv /srv/orchestrator/repos/.deploy-state-orchestrator/ORCH-9/result-{NEW}.part \
         /srv/orchestrator/repos/.deploy-state-orchestrator/ORCH-9/result-{NEW}'"
    )));

    // The executor reports the launch: nothing more to write.
    let d = step(Initiated, &Event::Launched, &w.facts());
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (Initiated, Outcome::Transitioned, 0)
    );
}

#[test]
fn approved_without_freshness_omits_expected_revision() {
    let w = World::new(&[("IMAGE_FRESHNESS_ENABLED", "false")]);
    let mut facts = w.facts();
    facts.revision = Revision::Inactive;
    let d = step(ApproveRequested, &Event::Approved, &facts);
    let Effect::Launch(Launch { argv, .. }) = &d.effects[2] else {
        panic!()
    };
    assert!(!argv[4].contains("EXPECTED_REVISION"), "{}", argv[4]);
}

#[test]
fn approved_is_refused_by_each_failing_guard_with_no_effects() {
    let not_applicable = World::new(&[("SELF_DEPLOY_ENABLED", "false")]);
    let same_ports = World::new(&[("STAGING_PORT", "8500")]);
    let plain = World::new(&[]);
    let cases: Vec<(Facts, &str)> = vec![
        (not_applicable.facts(), "not applicable"),
        (same_ports.facts(), "staging port guard"),
        (
            Facts {
                revision: Revision::Unknown("no commit".into()),
                ..plain.facts()
            },
            "freshness guard",
        ),
        (
            Facts {
                worktree_check: Err("worktree /wt does not exist".into()),
                ..plain.facts()
            },
            "worktree guard: worktree /wt does not exist",
        ),
        (
            Facts {
                head_ref: Ok("refs/heads/main".into()),
                ..plain.facts()
            },
            "branch guard: the worktree /wt is on refs/heads/main, not refs/heads/deploy/ORCH-9",
        ),
        (
            Facts {
                head_ref: Err("HEAD is detached".into()),
                ..plain.facts()
            },
            "branch guard: the worktree /wt is on no branch (HEAD is detached)",
        ),
        (
            Facts {
                transport_program: Err("no ssh binary: ssh not found on PATH".into()),
                ..plain.facts()
            },
            "no ssh binary",
        ),
    ];
    for (facts, expected) in cases {
        let d = step(ApproveRequested, &Event::Approved, &facts);
        assert_eq!(
            (d.to, d.outcome),
            (ApproveRequested, Outcome::Refused),
            "{expected}"
        );
        assert!(d.effects.is_empty(), "{expected}: {d:?}");
        assert!(
            d.reason.as_deref().unwrap().contains(expected),
            "{:?}",
            d.reason
        );
    }
}

#[test]
fn a_failed_launch_revokes_before_anything_else_is_decided() {
    let w = World::new(&[]);
    let why = "ssh failed: exit status 255";
    let d = step(Initiated, &Event::LaunchFailed(why.into()), &w.facts());
    assert_eq!((d.to, d.outcome), (Initiated, Outcome::DispatchFailed));
    assert_eq!(
        d.effects,
        [Effect::RevokeTicket {
            dispatch_id: NEW.into(),
            reason: RevokeReason::LaunchFailed,
            detail: why.into(),
        }]
    );
    assert_eq!(d.reason.as_deref(), Some(why));

    // The revoke won: nothing can run; a human may approve again.
    let d = step(
        Initiated,
        &Event::TicketRevoked(RevokeReason::LaunchFailed),
        &w.facts(),
    );
    assert_eq!(
        (d.to, d.outcome),
        (ApproveRequested, Outcome::DispatchFailed)
    );
    assert_eq!(
        d.effects,
        [Effect::RemoveMarker {
            marker: Marker::Initiated
        }]
    );

    // The host claimed first: ssh ran the command; the deploy is running.
    let d = step(
        Initiated,
        &Event::TicketClaimed(RevokeReason::LaunchFailed, why.into()),
        &w.facts(),
    );
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (Initiated, Outcome::Transitioned, 0)
    );
    let reason = d.reason.unwrap();
    assert!(
        reason.starts_with(why) && reason.contains("the host claimed the ticket"),
        "{reason}"
    );
}

#[test]
fn a_poll_resolves_a_dispatch_by_its_ticket() {
    // Sent, within the claim timeout: wait.
    let w = World::new(&[]).with_ticket(Ticket::Sent);
    let d = step(Initiated, &Event::Poll, &w.facts());
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (Initiated, Outcome::Deferred, 0)
    );
    // Just short of the claim timeout (120 s by default): still waiting.
    let d = step(
        Initiated,
        &Event::Poll,
        &Facts {
            now: at(119),
            dispatch_age: DispatchAge::Known(Duration::from_secs(119)),
            ..w.facts()
        },
    );
    assert_eq!((d.outcome, d.effects.len()), (Outcome::Deferred, 0));
    // Sent, past it: revoke.
    let overdue = Facts {
        now: at(121),
        dispatch_age: DispatchAge::Known(Duration::from_secs(121)),
        ..w.facts()
    };
    let d = step(Initiated, &Event::Poll, &overdue);
    assert_eq!(
        d.effects,
        [Effect::RevokeTicket {
            dispatch_id: CURRENT.into(),
            reason: RevokeReason::Unclaimed,
            detail: format!(
                "the host did not claim dispatch {CURRENT} within 121 s (dispatched at {DISPATCHED_AT}; SELF_DEPLOY_CLAIM_TIMEOUT_SECS is 120)"
            ),
        }]
    );
    let d = step(
        Initiated,
        &Event::TicketRevoked(RevokeReason::Unclaimed),
        &overdue,
    );
    assert_eq!(
        (d.to, d.outcome),
        (ApproveRequested, Outcome::DispatchFailed)
    );
    // The host claimed it just before the revoke: a running deploy.
    let d = step(
        Initiated,
        &Event::TicketClaimed(RevokeReason::Unclaimed, String::new()),
        &overdue,
    );
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (Initiated, Outcome::Deferred, 0)
    );
    // A crash left the ticket revoked, or never wrote it: nothing ran.
    for ticket in [Ticket::Revoked, Ticket::Missing] {
        let w = World::new(&[]).with_ticket(ticket);
        let d = step(Initiated, &Event::Poll, &w.facts());
        assert_eq!(
            (d.to, d.outcome),
            (ApproveRequested, Outcome::DispatchFailed),
            "{ticket:?}"
        );
        assert_eq!(
            d.effects,
            [Effect::RemoveMarker {
                marker: Marker::Initiated
            }]
        );
        assert!(d.reason.unwrap().contains(CURRENT));
    }
}

#[test]
fn initiated_approved_never_dispatches_twice() {
    let w = World::new(&[]);
    let d = step(Initiated, &Event::Approved, &w.facts());
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (Initiated, Outcome::Unchanged, 0)
    );
}

#[test]
fn initiated_poll_defers_until_a_result_exists() {
    let w = World::new(&[]);
    let d = step(Initiated, &Event::Poll, &w.facts());
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (Initiated, Outcome::Deferred, 0)
    );
}

#[test]
fn initiated_poll_with_a_result_finalizes_by_exit_code() {
    let w = World::new(&[]);
    for (raw, to, code) in [
        ("0", FinalizedSuccess, "0"),
        ("+0", FinalizedSuccess, "0"),
        ("1", FinalizedFailed, "1"),
        ("2", FinalizedFailed, "2"),
        ("137", FinalizedFailed, "137"),
        ("garbage", FinalizedFailed, "1"),
    ] {
        let facts = Facts {
            result: parse_result(raw.as_bytes()),
            ..w.facts()
        };
        let d = step(Initiated, &Event::Poll, &facts);
        assert_eq!((d.to, d.outcome), (to, Outcome::Transitioned), "{raw}");
        assert_eq!(
            kinds(&d.effects),
            ["write_deploy_log", "write_marker", "git_publish"]
        );
        let Effect::WriteDeployLog { path, content, .. } = &d.effects[0] else {
            panic!()
        };
        assert_eq!(
            path,
            Path::new("/wt/docs/work-items/ORCH-9/14-deploy-log.md")
        );
        assert!(
            content.contains(&format!("\nhook_exit_code: {code}\n")),
            "{content}"
        );
        // The revision the freshness guard checked is in the log.
        assert!(
            content.contains("\n- expected revision: abc123\n"),
            "{content}"
        );
        // The verdict is recorded before the push, as not pushed yet: a
        // crash between the two leaves a push for the next poll to retry.
        let Effect::WriteMarker {
            marker: Marker::Finalized,
            content: before_push,
        } = &d.effects[1]
        else {
            panic!()
        };
        let before_push: FinalizedRecord = decode(before_push.as_bytes()).unwrap();
        assert_eq!(before_push.hook_exit_code, code);
        assert_eq!(before_push.finalized_at, DISPATCHED_AT);
        assert!(before_push.push_pending(), "{before_push:?}");
        let Effect::GitPublish {
            message,
            branch,
            record,
            ..
        } = &d.effects[2]
        else {
            panic!()
        };
        assert_eq!(record.as_ref(), Some(&before_push));
        let status = if to == FinalizedSuccess {
            "SUCCESS"
        } else {
            "FAILED"
        };
        assert_eq!(
            message,
            &format!("deploy(ORCH-036): finalize {status} for ORCH-9")
        );
        assert_eq!(branch.as_deref(), Some("deploy/ORCH-9"));
        // What the push came to is recorded, and only a change is news.
        for (push, pushed) in [(Ok(()), true), (Err("unreachable".to_owned()), false)] {
            let f = step(
                to,
                &Event::Published {
                    push: push.clone(),
                    record: record.clone(),
                },
                &facts,
            );
            let Effect::WriteMarker {
                marker: Marker::Finalized,
                content,
            } = &f.effects[0]
            else {
                panic!("{f:?}")
            };
            let after: FinalizedRecord = decode(content.as_bytes()).unwrap();
            assert_eq!(after.pushed, Some(pushed));
            assert_eq!(after.push_error, push.clone().err());
            assert_eq!(after.hook_exit_code, code);
            // A change of the push state is the step's news...
            let news = f.reason.expect("a changed push state is said");
            assert!(
                news.starts_with(if pushed {
                    "pushed"
                } else {
                    "not pushed: unreachable"
                }),
                "{news}"
            );
            // ...and the same state again is none.
            let again = step(
                to,
                &Event::Published {
                    push: push.clone(),
                    record: Some(after),
                },
                &facts,
            );
            assert_eq!(again.reason, None, "{again:?}");
        }
    }
}

/// A feedback event where it has no meaning is illegal, and the reason
/// names it by what happened.
#[test]
fn feedback_events_out_of_place_are_named_in_the_reason() {
    let w = World::new(&[]);
    for (event, label) in [
        (Event::Launched, "launched"),
        (Event::LaunchFailed("ssh: exit 255".into()), "launch-failed"),
        (
            Event::TicketRevoked(RevokeReason::Unclaimed),
            "ticket-revoked",
        ),
        (
            Event::TicketClaimed(RevokeReason::LaunchFailed, "ssh: exit 255".into()),
            "ticket-claimed",
        ),
        (
            Event::Published {
                push: Ok(()),
                record: None,
            },
            "published",
        ),
    ] {
        let d = step(Idle, &event, &w.facts());
        assert_eq!((d.to, d.outcome), (Idle, Outcome::Illegal), "{event:?}");
        assert_eq!(
            d.reason.as_deref(),
            Some(format!("{label} has no meaning in state idle").as_str())
        );
    }
}

#[test]
fn initiated_poll_past_the_deadline_finalizes_as_failed_timeout() {
    let w = World::new(&[("SELF_DEPLOY_RESULT_DEADLINE_SECS", "600")]);
    let early = Facts {
        now: at(599),
        dispatch_age: DispatchAge::Known(Duration::from_secs(599)),
        ..w.facts()
    };
    assert_eq!(
        step(Initiated, &Event::Poll, &early).outcome,
        Outcome::Deferred
    );
    let facts = Facts {
        now: at(600),
        dispatch_age: DispatchAge::Known(Duration::from_secs(600)),
        ..w.facts()
    };
    let d = step(Initiated, &Event::Poll, &facts);
    assert_eq!((d.to, d.outcome), (FinalizedFailed, Outcome::Transitioned));
    assert_eq!(
        d.reason.as_deref(),
        Some(format!(
            "no result 600 s after the dispatch at {DISPATCHED_AT}: the result deadline is 600 s"
        ))
        .as_deref()
    );
    let Effect::WriteDeployLog { content, .. } = &d.effects[0] else {
        panic!()
    };
    assert!(
        content.starts_with(
            "---\ndeploy_status: FAILED\nwork_item: ORCH-9\nhook_exit_code: timeout\n"
        ),
        "{content}"
    );
    // A result that arrived in time wins over the deadline.
    let facts = Facts {
        result: parse_result(b"0"),
        ..facts
    };
    assert_eq!(step(Initiated, &Event::Poll, &facts).to, FinalizedSuccess);
}

#[test]
fn finalized_poll_is_unchanged_and_merge_verified_stamps() {
    let w = World::new(&[]);
    for state in FINALIZED {
        let d = step(state, &Event::Poll, &w.facts());
        assert_eq!(
            (d.to, d.outcome, d.effects.len()),
            (state, Outcome::Unchanged, 0)
        );
        let d = step(state, &Event::MergeVerified, &w.facts());
        assert_eq!((d.to, d.outcome), (state, Outcome::Unchanged));
        assert_eq!(
            d.effects[0],
            Effect::StampMerged {
                worktree: Path::new("/wt").to_path_buf(),
                path: Path::new("/wt/docs/work-items/ORCH-9/14-deploy-log.md").to_path_buf(),
                merged: true
            }
        );
        let Effect::GitPublish { message, path, .. } = &d.effects[1] else {
            panic!("{d:?}")
        };
        assert_eq!(message, "deploy: merged_to_main true for ORCH-9");
        assert_eq!(path, Path::new("docs/work-items/ORCH-9/14-deploy-log.md"));
    }
}

#[test]
fn reset_from_approve_requested_and_finalized_removes_the_state_directory() {
    let w = World::new(&[]);
    // The claimed run ended: its result is there.
    let ended = Facts {
        result: parse_result(b"0"),
        ..w.facts()
    };
    for state in [ApproveRequested, FinalizedSuccess, FinalizedFailed] {
        let d = step(state, &Event::Reset, &ended);
        assert_eq!((d.to, d.outcome), (Idle, Outcome::Transitioned));
        assert_eq!(d.effects, [Effect::RemoveStateDir]);
    }
    // A finalized item whose claimed run has no result (the deadline
    // failed it): its hook may still go, so only a forced reset goes.
    for state in [FinalizedSuccess, FinalizedFailed] {
        let d = step(state, &Event::Reset, &w.facts());
        assert_eq!((d.to, d.outcome), (state, Outcome::Refused), "{d:?}");
        assert!(d.effects.is_empty());
        assert!(d.reason.unwrap().contains("--force"));
        let forced = Facts {
            force: true,
            ..w.facts()
        };
        let d = step(state, &Event::Reset, &forced);
        assert_eq!((d.to, d.outcome), (Idle, Outcome::Transitioned));
        assert_eq!(d.effects, [Effect::RemoveStateDir]);
    }
}

#[test]
fn reset_of_initiated_needs_force() {
    let w = World::new(&[]);
    let d = step(Initiated, &Event::Reset, &w.facts());
    assert_eq!(
        (d.to, d.outcome, d.effects.len()),
        (Initiated, Outcome::Refused, 0)
    );
    assert!(d.reason.unwrap().contains("--force"));
    let d = step(
        Initiated,
        &Event::Reset,
        &Facts {
            force: true,
            ..w.facts()
        },
    );
    assert_eq!((d.to, d.outcome), (Idle, Outcome::Transitioned));
    assert_eq!(d.effects, [Effect::RemoveStateDir]);
    // The claimed dispatch's hook may still run: the report says so.
    let said = d.reason.expect("a reason for a claimed dispatch");
    assert!(
        said.contains(&format!("the host had claimed dispatch {CURRENT}"))
            && said.contains("may still be running"),
        "{said}"
    );
    // An unclaimed ticket is revoked before the directory goes.
    let w = World::new(&[]).with_ticket(Ticket::Sent);
    let d = step(
        Initiated,
        &Event::Reset,
        &Facts {
            force: true,
            ..w.facts()
        },
    );
    assert_eq!(kinds(&d.effects), ["revoke_ticket", "remove_state_dir"]);
    // Nothing ran: nothing to warn about.
    assert_eq!(d.reason, None);
}

/// The pairs the table lists; every other pair is illegal.
fn listed(state: StateName, event: EventName) -> bool {
    use EventName as E;
    matches!(
        (state, event),
        (Idle, E::RequestApprove)
            | (ApproveRequested, E::RequestApprove | E::Approved | E::Reset)
            | (Initiated, E::Approved | E::Poll | E::Reset)
            | (
                FinalizedSuccess | FinalizedFailed,
                E::Poll | E::MergeVerified | E::Reset
            )
    )
}

#[test]
fn every_other_pair_is_illegal_and_does_nothing() {
    let w = World::new(&[]);
    let mut illegal = 0;
    for state in StateName::ALL {
        for event in EventName::ALL {
            if listed(state, event) {
                continue;
            }
            let d = step(state, &event.event(), &w.facts());
            assert_eq!(
                (d.to, d.outcome),
                (state, Outcome::Illegal),
                "{state} {event}"
            );
            assert!(d.effects.is_empty());
            assert!(d.reason.unwrap().contains(event.as_str()));
            illegal += 1;
        }
    }
    assert_eq!(illegal, 25 - 13);
}

#[test]
fn when_not_applicable_nothing_new_starts_but_existing_state_is_served() {
    let w = World::new(&[("SELF_DEPLOY_ENABLED", "false")]);
    for state in StateName::ALL {
        for event in [Event::RequestApprove, Event::Approved] {
            let d = step(state, &event, &w.facts());
            assert_eq!(
                (d.to, d.outcome),
                (state, Outcome::Refused),
                "{state} {event:?}"
            );
            assert!(d.effects.is_empty());
        }
    }
    let facts = Facts {
        result: parse_result(b"0"),
        ..w.facts()
    };
    let d = step(Initiated, &Event::Poll, &facts);
    assert_eq!((d.to, d.outcome), (FinalizedSuccess, Outcome::Transitioned));
    let d = step(FinalizedFailed, &Event::MergeVerified, &w.facts());
    assert_eq!(d.outcome, Outcome::Unchanged);
    let d = step(ApproveRequested, &Event::Reset, &w.facts());
    assert_eq!((d.to, d.outcome), (Idle, Outcome::Transitioned));
}

#[test]
fn repos_list_decides_applicability() {
    let w = World::new(&[("SELF_DEPLOY_REPOS", "other")]);
    let d = step(Idle, &Event::RequestApprove, &w.facts());
    assert_eq!(d.outcome, Outcome::Refused);
}

/// The facts a dispatch needs (git for the revision, the worktree, the
/// transport program, a new id) are read only where a dispatch may follow:
/// `approved` on an item waiting for approval, with every guard that
/// depends on the settings alone passing.
#[test]
fn dispatch_facts_are_read_only_where_a_dispatch_may_follow() {
    use selfdeploy::machine::dispatch_may_follow;
    let w = World::new(&[]);
    let mut may = Vec::new();
    for from in StateName::ALL {
        for event in EventName::ALL {
            if dispatch_may_follow(from, event, &w.settings, &w.repo) {
                may.push((from, event));
            }
        }
    }
    assert_eq!(may, [(ApproveRequested, EventName::Approved)]);
    for refusing in [
        World::new(&[("SELF_DEPLOY_ENABLED", "false")]),
        World::new(&[
            ("STAGING_PORT", "8000"),
            ("DEPLOY_PROD_TARGET_PORT", "8000"),
        ]),
    ] {
        assert!(!dispatch_may_follow(
            ApproveRequested,
            EventName::Approved,
            &refusing.settings,
            &refusing.repo
        ));
    }
    let other_repo = RepoName::new("elsewhere").unwrap();
    assert!(!dispatch_may_follow(
        ApproveRequested,
        EventName::Approved,
        &w.settings,
        &other_repo
    ));
}
