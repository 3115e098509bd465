//! The short fault-injection suite (issue 6): a seeded schedule of faults over a three-pod
//! group of the shipped manifests on kubesim, under a writer through the leader Service.
//! `FAULT_SEED=N` replays a schedule; `FAULT_DURATION=90s` changes the length;
//! `FAULTS_VERBOSE=1` prints the timeline as it happens. The long version:
//! `cargo bench -p redis-k8s-election --bench faults -- --duration 30m`.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_fault_schedule_keeps_every_invariant() {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_124);
    let duration = std::env::var("FAULT_DURATION")
        .ok()
        .and_then(|s| humantime::parse_duration(&s).ok())
        .unwrap_or(Duration::from_secs(100));
    let report = harness::faults::run(seed, duration, 13).await;
    println!(
        "seed {seed}: {} faults in {:.0} s, {} writes acknowledged, {} confirmed with WAIT 1 ({} of them lost), {} sampler rounds\n{}",
        report.faults,
        report.elapsed.as_secs_f64(),
        report.acknowledged,
        report.confirmed,
        report.confirmed_lost,
        report.sampler_rounds,
        report.table()
    );
    assert!(
        report.violations.is_empty(),
        "seed {seed} broke an invariant (replay with FAULT_SEED={seed}):\n{}\n\ntimeline:\n{}",
        report.violations.join("\n"),
        report.timeline.join("\n")
    );
    assert!(report.faults >= 13, "only {} faults ran", report.faults);
    assert!(
        report.confirmed > 500,
        "the confirming writer barely wrote: {}",
        report.confirmed
    );
    assert!(
        report.acknowledged > 1000,
        "the writer barely wrote: {}",
        report.acknowledged
    );
}
