//! The pure machine alone: one `step` (state, event, facts) -> decision,
//! no files, no processes. Goal: 10,000,000 events/s, i.e. under 100 ns a
//! step, for the steps a deploy takes most (polls while the hook runs).
//! `cargo bench --bench machine`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use selfdeploy::config::Settings;
use selfdeploy::contract::hook_result::parse_result;
use selfdeploy::contract::markers::{DispatchState, Ticket};
use selfdeploy::contract::names::{RepoName, WorkItem};
use selfdeploy::machine::{DispatchAge, Event, Facts, Revision, StateName, step};

fn bench(c: &mut Criterion) {
    let settings = Settings::with_overrides(&[]).unwrap();
    let repo = RepoName::new("orchestrator").unwrap();
    let work_item = WorkItem::new("ORCH-1").unwrap();
    let dispatch = DispatchState {
        id: "00000000000000aa".into(),
        ticket: Ticket::Claimed,
    };
    let open: Vec<String> = Vec::new();
    let now = humantime::parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
    let facts = |result| Facts {
        settings: &settings,
        repo: &repo,
        work_item: &work_item,
        now,
        actor: "bench",
        force: false,
        merged: Some(true),
        branch: Some("deploy/ORCH-1"),
        worktree: Path::new("/wt"),
        revision: Revision::Known("abc123".into()),
        worktree_check: Ok(()),
        head_ref: Ok("refs/heads/deploy/ORCH-1".into()),
        transport_program: Ok(()),
        freeze: Ok(None),
        new_dispatch_id: "00000000000000bb",
        dispatch: Some(&dispatch),
        running_runs: &[],
        open_tickets: &open,
        result,
        approved_by: Some("bench"),
        finalized: None,
        dispatched_at: Some("2026-01-01T00:00:00Z"),
        dispatch_age: DispatchAge::Known(std::time::Duration::ZERO),
        boot: None,
    };
    let _ = SystemTime::UNIX_EPOCH;

    let mut group = c.benchmark_group("step");
    group.throughput(Throughput::Elements(1));
    let waiting = facts(None);
    group.bench_function("poll while the hook runs (deferred)", |b| {
        b.iter(|| {
            step(
                black_box(StateName::Initiated),
                black_box(&Event::Poll),
                black_box(&waiting),
            )
        })
    });
    let idle = facts(None);
    group.bench_function("illegal pair (poll on idle)", |b| {
        b.iter(|| {
            step(
                black_box(StateName::Idle),
                black_box(&Event::Poll),
                black_box(&idle),
            )
        })
    });
    group.bench_function("request-approve (one marker)", |b| {
        b.iter(|| {
            step(
                black_box(StateName::Idle),
                black_box(&Event::RequestApprove),
                black_box(&idle),
            )
        })
    });
    group.bench_function("approved (dispatch: record, ticket, argv)", |b| {
        b.iter(|| {
            step(
                black_box(StateName::ApproveRequested),
                black_box(&Event::Approved),
                black_box(&idle),
            )
        })
    });
    let done = facts(parse_result(b"0\n"));
    group.bench_function("poll with a result (finalize: log, record, git)", |b| {
        b.iter(|| {
            step(
                black_box(StateName::Initiated),
                black_box(&Event::Poll),
                black_box(&done),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = machine;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(machine);
