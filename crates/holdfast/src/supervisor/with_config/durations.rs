//! The property outside testing asked for: any duration that validation accepts can go
//! through every timer path of the core without a panic, and none past the bound is
//! accepted.
//!
//! Configs are generated with fixed seeds, so a failure reproduces. Each sets every
//! duration key of one service (through the real `config::parse`), then a random script
//! drives the core through spawn, readiness, start_secs, the watchdog, exits with and
//! without an exit-code delay, backoff, health probes, stops and their SIGKILL timeout,
//! with the fake clock jumping to each next deadline however far away it is.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::value::{INFINITY, MAX_DURATION};
use crate::health::{ProbeFailure, ProbeOutcome};
use crate::notify::NotifyMsg;
use crate::supervisor::record;

/// A duration key: its place in the generated config and what validation allows.
struct Key {
    name: &'static str,
    /// Takes "infinity".
    infinity: bool,
    /// Takes "0s".
    zero: bool,
}

const KEYS: [Key; 15] = [
    key("restart_sec", false, true),
    key("start_secs", false, true),
    key("hook_timeout", false, false),
    key("start_timeout", true, false),
    key("watchdog", true, true),
    key("stop_timeout", true, false),
    key("backoff_max", false, true),
    key("backoff_reset_after", false, true),
    key("start_limit_interval", false, false),
    key("health_interval", false, false),
    key("health_timeout", false, false),
    key("health_grace", false, true),
    key("degraded_within", false, false),
    key("unhealthy_within", false, false),
    key("exit_delay", false, true),
];

const fn key(name: &'static str, infinity: bool, zero: bool) -> Key {
    Key {
        name,
        infinity,
        zero,
    }
}

/// Seeds of the generated configs; each also seeds its script.
const CONFIGS: u64 = 400;
/// Inputs per script.
const STEPS: usize = 60;

/// A duration as the config writes it, from any magnitude: zero, milliseconds, the
/// bound exactly, just past it, up to `u64::MAX` seconds; "infinity" where `key` takes
/// it. With `in_bounds`, only what the key accepts.
fn duration_text(rng: &mut fastrand::Rng, key: &Key, in_bounds: bool) -> String {
    let max = MAX_DURATION.as_secs();
    loop {
        let text = match rng.u8(0..10) {
            0 => INFINITY.to_owned(),
            1 => "0s".to_owned(),
            2 => format!("{max}s"),
            3 => format!("{max}s {}ns", rng.u32(1..1_000_000_000)),
            4 => format!("{}s", rng.u64(max..=u64::MAX)),
            5 => format!("{}ns", rng.u64(..)),
            6 => format!("{}ms", rng.u64(1..10_000)),
            7 => format!("{}s", rng.u64(1..=max)),
            _ => format!("{}s {}ns", rng.u64(0..max), rng.u32(1..1_000_000_000)),
        };
        let acceptable = match parsed(&text) {
            None => key.infinity,
            Some(d) => d <= MAX_DURATION && (key.zero || !d.is_zero()),
        };
        if acceptable || !in_bounds {
            return text;
        }
    }
}

/// The duration `text` stands for; `None` for "infinity".
fn parsed(text: &str) -> Option<Duration> {
    (text != INFINITY).then(|| humantime::parse_duration(text).expect("generated syntax is valid"))
}

fn config(v: &BTreeMap<&str, String>) -> String {
    format!(
        r#"[service.a]
command = ["/bin/true"]
ready = "notify"
restart = "always"
restart_sec = "{restart_sec}"
start_secs = "{start_secs}"
hook_timeout = "{hook_timeout}"
start_timeout = "{start_timeout}"
watchdog = "{watchdog}"
stop = {{ timeout = "{stop_timeout}" }}
backoff = {{ max = "{backoff_max}", reset_after = "{backoff_reset_after}", jitter = 0.5 }}
start_limit = {{ interval = "{start_limit_interval}", burst = 1000 }}
on = {{ exited = ["/bin/true"] }}

[service.a.health]
tcp = "127.0.0.1:1"
interval = "{health_interval}"
timeout = "{health_timeout}"
grace = "{health_grace}"
degraded = {{ failures = 1, within = "{degraded_within}" }}
unhealthy = {{ failures = 2, within = "{unhealthy_within}", action = "restart" }}

[service.a.exit_codes]
3 = {{ action = "restart", delay = "{exit_delay}" }}
"#,
        restart_sec = v["restart_sec"],
        start_secs = v["start_secs"],
        hook_timeout = v["hook_timeout"],
        start_timeout = v["start_timeout"],
        watchdog = v["watchdog"],
        stop_timeout = v["stop_timeout"],
        backoff_max = v["backoff_max"],
        backoff_reset_after = v["backoff_reset_after"],
        start_limit_interval = v["start_limit_interval"],
        health_interval = v["health_interval"],
        health_timeout = v["health_timeout"],
        health_grace = v["health_grace"],
        degraded_within = v["degraded_within"],
        unhealthy_within = v["unhealthy_within"],
        exit_delay = v["exit_delay"],
    )
}

/// Values for every key. Half the configs stay in bounds (ordered where validation
/// relates two keys, so most of them pass); the others may hold anything.
fn values(rng: &mut fastrand::Rng) -> BTreeMap<&'static str, String> {
    let in_bounds = rng.bool();
    let mut v: BTreeMap<&str, String> = KEYS
        .iter()
        .map(|k| (k.name, duration_text(rng, k, in_bounds)))
        .collect();
    if in_bounds {
        order(&mut v, "health_timeout", "health_interval");
        order(&mut v, "restart_sec", "backoff_max");
    }
    v
}

/// Swaps the values of `short` and `long` if needed so that `short <= long`.
fn order(v: &mut BTreeMap<&'static str, String>, short: &'static str, long: &'static str) {
    // "infinity" (`None`) is in neither of these keys, so `Option`'s order is the
    // durations' order.
    if parsed(&v[short]) > parsed(&v[long]) {
        let (a, b) = (v[short].clone(), v[long].clone());
        v.insert(short, b);
        v.insert(long, a);
    }
}

#[test]
fn every_accepted_duration_runs_through_every_timer_path_without_a_panic() {
    let mut accepted = 0;
    for seed in 0..CONFIGS {
        let mut rng = fastrand::Rng::with_seed(seed);
        let v = values(&mut rng);
        let src = config(&v);
        let past_the_bound = v
            .values()
            .filter_map(|text| parsed(text))
            .any(|d| d > MAX_DURATION);
        match crate::config::parse(&src, "holdfast.toml", Path::new("/")) {
            Ok(plan) => {
                assert!(
                    !past_the_bound,
                    "seed {seed}: a duration past the bound was accepted:\n{src}"
                );
                accepted += 1;
                drive(plan, &mut rng, seed);
            }
            // Rejected for a reason of its own (a zero, "infinity" where it does not
            // belong, a timeout longer than its interval): the report must still render.
            Err(err) => assert!(!err.render_plain().is_empty(), "seed {seed}"),
        }
    }
    assert!(
        accepted >= CONFIGS / 4,
        "the generator must mostly make valid configs: {accepted} of {CONFIGS} accepted"
    );
}

/// Runs a random script against the core, reporting the seed if anything panics.
fn drive(plan: Plan, rng: &mut fastrand::Rng, seed: u64) {
    let mut h = Harness::with_seed(plan.services.into_values(), seed);
    let mut effects = h.feed(Input::Boot);
    for _ in 0..STEPS {
        let input = next_input(&mut h, rng, &effects);
        effects = match input {
            Step::Input(input) => h.feed(input),
            Step::Command(command) => h.command(command, "a").1,
            Step::Jump => jump(&mut h),
        };
        observe(&h, &effects);
    }
    h.feed(Input::Shutdown);
    // Shutdown ends once every stop finished or timed out: jump through the rest.
    for _ in 0..10 {
        if h.exit_seen {
            break;
        }
        if h.service("a").group().is_some() {
            let run = h.run("a");
            h.feed(Input::Exited {
                service: name("a"),
                run,
                status: killed(Signal::SIGKILL),
                group_alive: false,
            });
        } else {
            jump(&mut h);
        }
    }
}

// A test's steps, one at a time: the size of an input is of no concern here.
#[allow(clippy::large_enum_variant)]
enum Step {
    Input(Input),
    Command(Command),
    /// Move the clock to the next deadline and tick, however far away it is.
    Jump,
}

fn next_input(h: &mut Harness, rng: &mut fastrand::Rng, last: &[Effect]) -> Step {
    let a = name("a");
    // A probe the core just asked for gets its result first, like the shell would.
    if let Some(run) = last.iter().find_map(|e| match e {
        Effect::StartProbe { run, .. } => Some(*run),
        _ => None,
    }) {
        let outcome = if rng.bool() {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure(ProbeFailure::Connect {
                address: "127.0.0.1:8080".to_owned(),
                error: "connection refused".to_owned(),
            })
        };
        return Step::Input(Input::ProbeResult {
            service: a,
            run,
            outcome,
        });
    }
    let Some(run) = h.service("a").run() else {
        return match rng.u8(0..4) {
            0 => Step::Command(Command::Start),
            _ => Step::Jump,
        };
    };
    // What a service may send: up to `u64::MAX` microseconds.
    let usec = match rng.u8(0..3) {
        0 => Duration::from_micros(u64::MAX),
        1 => Duration::from_micros(rng.u64(..)),
        _ => Duration::from_millis(rng.u64(1..10_000)),
    };
    let msg = match rng.u8(0..6) {
        0 => NotifyMsg::Ready,
        1 => NotifyMsg::Watchdog,
        2 => NotifyMsg::WatchdogTrigger,
        3 => NotifyMsg::WatchdogUsec(usec),
        4 => NotifyMsg::ExtendTimeout(usec),
        _ => NotifyMsg::Status("busy".to_owned()),
    };
    let status = match rng.u8(0..3) {
        0 => code(0),
        1 => code(1),
        _ => code(3),
    };
    match rng.u8(0..10) {
        0..=2 => Step::Jump,
        3 | 4 => Step::Input(Input::Notify {
            service: a,
            run,
            msgs: vec![msg],
            alive_at: crate::unix::ReapSeq::default(),
        }),
        5 => Step::Input(Input::Exited {
            service: a,
            run,
            status,
            group_alive: rng.bool(),
        }),
        6 => Step::Input(Input::GroupEmpty { service: a, run }),
        7 => Step::Command(Command::Stop),
        8 => Step::Command(Command::Restart),
        _ => Step::Input(Input::Ready { service: a, run }),
    }
}

/// The shell's single timer: jump to the next deadline (if any) and tick.
fn jump(h: &mut Harness) -> Vec<Effect> {
    match h.sup.next_deadline() {
        Some(deadline) => {
            h.now = h.now.max(deadline);
            h.feed(Input::Tick)
        }
        None => Vec::new(),
    }
}

/// What the shell shows people from this state: event texts and records, the status
/// reason. None of it may panic on a far deadline either.
fn observe(h: &Harness, effects: &[Effect]) {
    for effect in effects {
        if let Effect::Emit(event) = effect {
            let _ = event.to_string();
            let _ = record::record(0, std::time::SystemTime::now(), event);
        }
    }
    let service = h.service("a");
    let _ = service.start_wait(h.now);
    let _ = service.wakeup();
}
