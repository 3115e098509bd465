//! The long fault-injection suite (issue 6): the same seeded schedules and checks as
//! `tests/faults.rs`, for as long as asked.
//!
//! `cargo bench -p redis-k8s-election --bench faults -- --duration 30m [--seed N]`
//!
//! Prints the seed, a table of faults per kind with the acknowledged writes each lost and the
//! longest convergence after healing, and exits 1 with the violations and a timeline if an
//! invariant broke.

use harness::faults::run;
use harness::flag;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let duration = flag(&args, "--duration")
        .map(|d| humantime::parse_duration(&d).expect("--duration: e.g. 30m"))
        .unwrap_or(Duration::from_secs(30 * 60));
    let seed = flag(&args, "--seed")
        .map(|s| s.parse().expect("--seed: a number"))
        .unwrap_or_else(rand::random::<u32>) as u64;
    println!(
        "fault suite: seed {seed}, {} (3 pods, fast profile)",
        humantime::format_duration(duration)
    );
    let report = run(seed, duration, 1).await;
    println!(
        "\nseed {seed}: {} faults in {:.0} s, {} writes acknowledged (every 2 ms through the leader Service), {} writes confirmed with WAIT 1 by a second writer ({} of them lost), {} sampler rounds, {} violations\n",
        report.faults,
        report.elapsed.as_secs_f64(),
        report.acknowledged,
        report.confirmed,
        report.confirmed_lost,
        report.sampler_rounds,
        report.violations.len()
    );
    println!("{}", report.table());
    if !report.violations.is_empty() {
        println!("violations (replay: --seed {seed}):");
        for v in &report.violations {
            println!("  {v}");
        }
        println!("\ntimeline:\n{}", report.timeline.join("\n"));
        std::process::exit(1);
    }
}
