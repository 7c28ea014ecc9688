//! Replay throughput: a generated corpus (the happy-path fixture's deploy,
//! then a reset, over and over: 10,000+ steps for one work item) replayed by
//! the same engine code as production, its files in a temporary directory
//! written without fsync (`Durability::Unsynced`, the replay's store
//! setting). Goal: 50,000 events/s. `cargo bench --bench replay`
//! (`-- --quick` for CI: a few cycles, nothing asserted about time).

use std::time::Instant;

use selfdeploy::replay::{self, Act, EventStep, Expect, Step};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cycles = if quick { 20 } else { 1_500 };
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/happy_path.ron"
    ))
    .expect("fixtures/happy_path.ron");
    let base = replay::parse_fixture(&text).expect("the happy path parses");
    let mut corpus = base.clone();
    corpus.steps.clear();
    for cycle in 0..cycles {
        // The n-th dispatch of a replay has id n: each cycle's expectations
        // name its own.
        let id = format!("{:016x}", cycle + 1);
        let own = |text: &String| text.replace("0000000000000001", &id);
        for step in &base.steps {
            let mut step = step.clone();
            step.expect.argv = step.expect.argv.map(|a| a.iter().map(own).collect());
            step.expect.files = step.expect.files.map(|f| f.iter().map(own).collect());
            corpus.steps.push(step);
        }
        corpus.steps.push(Step {
            act: Act::Event(EventStep {
                event: "reset".into(),
                ..EventStep::default()
            }),
            expect: Expect {
                state: "idle".into(),
                outcome: Some("transitioned".into()),
                effects: Some(vec!["remove_state_dir".into()]),
                ..Expect::default()
            },
        });
    }
    let events = corpus
        .steps
        .iter()
        .filter(|s| matches!(s.act, Act::Event(_)))
        .count();
    let started = Instant::now();
    let (failure, rows) = replay::replay(&corpus);
    let took = started.elapsed();
    assert!(
        failure.is_none(),
        "the generated corpus fails: {}",
        failure.unwrap()
    );
    assert!(!rows.is_empty());
    println!(
        "replay: {} steps ({events} events) in {:.1?}: {:.0} events/s, {:.1} µs an event",
        corpus.steps.len(),
        took,
        events as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / events as f64
    );
}
