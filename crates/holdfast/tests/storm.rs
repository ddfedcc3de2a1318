//! A restart storm: 500 services crash-looping at once. holdfast keeps answering, loses
//! no event on the way to a follower, and says what it cost (figures are printed, not
//! asserted: performance is the benchmark's business).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::Daemon;

const SERVICES: usize = 500;
/// How long the storm is watched.
const WINDOW: Duration = Duration::from_secs(4);

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("holdfast's stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    // After `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

#[test]
fn five_hundred_crash_looping_services_lose_no_event_and_status_keeps_answering() {
    let services: String = (0..SERVICES)
        .map(|i| {
            format!(
                "[service.s{i:03}]\ncommand = [\"/bin/false\"]\nrestart = \"always\"\n\
                 restart_sec = \"1s\"\nstart_secs = \"0s\"\n\
                 start_limit = {{ interval = \"1s\", burst = 1000000 }}\n\n"
            )
        })
        .collect();
    let mut daemon = Daemon::start(&services);
    let pid = daemon.host_pid();
    let mut follower = support::holdfast()
        .args(["events", "-f", "--json", "-s"])
        .arg(daemon.socket())
        .env(support::TAG_VAR, daemon.tag())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holdfast events -f starts");
    let lines = BufReader::new(follower.stdout.take().expect("piped"));
    let reader =
        std::thread::spawn(move || lines.lines().map_while(Result::ok).collect::<Vec<_>>());

    let ticks_before = cpu_ticks(pid);
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < WINDOW {
        let asked = Instant::now();
        daemon.status();
        latencies.push(asked.elapsed());
    }
    let cpu = Duration::from_millis((cpu_ticks(pid) - ticks_before) * 10);
    let window = started.elapsed();

    daemon.cli_ok(&["shutdown"]);
    daemon.wait_exit();
    let lines = reader.join().expect("the reader ends with the stream");
    let _ = follower.wait();

    // Every event reached the follower: sequence numbers without a gap, and for each
    // service every spawned run also exited (the shutdown ended the last ones).
    let records: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(!seqs.is_empty(), "the follower got events");
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "no event is missing between {pair:?}");
    }
    let mut runs: BTreeMap<(String, &str), BTreeSet<u64>> = BTreeMap::new();
    for r in &records {
        let (Some(service), Some(kind), Some(run)) = (
            r["service"].as_str(),
            r["kind"].as_str(),
            r["data"]["run"].as_u64(),
        ) else {
            continue;
        };
        if kind == "spawned" || kind == "exited" {
            runs.entry((service.to_owned(), kind))
                .or_default()
                .insert(run);
        }
    }
    let mut restarts = 0;
    for i in 0..SERVICES {
        let name = format!("s{i:03}");
        let spawned = runs
            .get(&(name.clone(), "spawned"))
            .cloned()
            .unwrap_or_default();
        let exited = runs
            .get(&(name.clone(), "exited"))
            .cloned()
            .unwrap_or_default();
        // The follower may have started after a service's first run: runs it saw
        // spawn must all be seen to exit.
        assert!(
            spawned.is_subset(&exited),
            "{name}: spawned {spawned:?}, exited {exited:?}"
        );
        restarts += exited.len();
    }
    latencies.sort_unstable();
    println!(
        "storm: {SERVICES} services, {restarts} exits seen in {:.1} s ({:.0}/s); status p50 {:?}, \
         p99 {:?}, max {:?} over {} calls; holdfast CPU {:.0}% of one core",
        window.as_secs_f64(),
        restarts as f64 / window.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().expect("at least one status"),
        latencies.len(),
        100.0 * cpu.as_secs_f64() / window.as_secs_f64()
    );
}
