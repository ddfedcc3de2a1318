//! The config file as written: serde schema plus the document walk that turns TOML and
//! serde errors into [`Problem`]s.
//!
//! Fields validation points at are `Spanned`. Everything is optional here so that a
//! missing key is reported by `validate` (with a span and a hint) rather than by serde.
//! Durations, sizes and commands accept any plausible TOML shape and are judged later,
//! so that `restart_sec = 5` gets a specific hint instead of a type error.
//!
//! Serde stops at the first error of a value, so each table is deserialized key by key
//! when it fails: one problem per bad key, across all services, in one pass.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostic::{Problem, unknown_key_help};

/// Keys allowed at the top level of the file.
const TOP_LEVEL_KEYS: &[&str] = &["holdfast", "service"];

/// The whole file, after structural checks. Tables that failed to deserialize are kept
/// by name only (their problems are already reported), so cross-service checks such as
/// `after` targets still know every service that exists.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub daemon: Option<Partial<RawDaemon>>,
    pub services: Vec<RawServiceEntry>,
}

#[derive(Debug)]
pub struct RawServiceEntry {
    /// The `x` of `[service.x]`, spanned at the key.
    pub name: Spanned<String>,
    /// The keys that deserialized; `None` when the value is not a table at all.
    pub body: Option<Partial<RawService>>,
}

/// A table with the keys that deserialized, and the names of those that did not (already
/// reported), so validation neither misses the good keys nor calls the bad ones missing.
#[derive(Debug, Default)]
pub struct Partial<T> {
    pub value: T,
    pub bad_keys: Vec<String>,
}

/// The `[holdfast]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub control: Option<Spanned<String>>,
    pub control_group: Option<Spanned<String>>,
    pub admin_group: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub log_dir: Option<Spanned<String>>,
    pub pass_env: Option<Vec<Spanned<String>>>,
    /// `"127.0.0.1:9700"`: where the HTTP server listens.
    pub http: Option<Spanned<String>>,
    /// The default of every service's `log.journald`.
    pub log_journald: Option<bool>,
    /// `[holdfast.supervisord]`: where `managed_by = "supervisord:X"` is asked.
    pub supervisord: Option<Spanned<RawSupervisord>>,
}

/// `[holdfast.supervisord]`, with the key names of supervisorctl's `[supervisorctl]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupervisord {
    pub serverurl: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
}

/// One `[service.<name>]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub command: Option<Spanned<RawCommand>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub working_dir: Option<Spanned<String>>,
    pub after: Option<Vec<Spanned<String>>>,
    /// A label for acting on several services at once (`@name` in the CLI); `group` is
    /// the Unix group the service runs as.
    pub service_group: Option<Spanned<String>>,
    pub autostart: Option<bool>,
    pub restart: Option<Spanned<String>>,
    pub restart_sec: Option<Spanned<RawDuration>>,
    pub backoff: Option<Spanned<RawBackoff>>,
    pub start_limit: Option<Spanned<RawStartLimit>>,
    pub start_secs: Option<Spanned<RawDuration>>,
    pub stop: Option<Spanned<RawStop>>,
    /// Sent to a hung run before it is killed (watchdog, UNHEALTHY, stop timeout).
    pub dump_signal: Option<Spanned<String>>,
    pub dump_wait: Option<Spanned<RawDuration>>,
    pub log: Option<Spanned<RawLog>>,
    /// `[service.X.on]`: event kind → command.
    pub on: Option<BTreeMap<Spanned<String>, Spanned<RawCommand>>>,
    pub hook_timeout: Option<Spanned<RawDuration>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub supplementary_groups: Option<Vec<Spanned<String>>>,
    /// An octal string such as "0027", or an integer (write it as 0o027).
    pub umask: Option<Spanned<RawSize>>,
    pub capabilities: Option<Vec<Spanned<String>>>,
    pub no_new_privs: Option<bool>,
    pub limits: Option<Spanned<RawLimits>>,
    pub cpu_affinity: Option<Vec<Spanned<i64>>>,
    pub oom_score_adjust: Option<Spanned<i64>>,
    pub ready: Option<Spanned<RawReady>>,
    pub start_timeout: Option<Spanned<RawDuration>>,
    pub watchdog: Option<Spanned<RawDuration>>,
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub pidfile: Option<Spanned<String>>,
    pub health: Option<Spanned<RawHealth>>,
    pub exit_codes: Option<BTreeMap<Spanned<String>, Spanned<RawExitAction>>>,
    pub inherit_env: Option<bool>,
    /// How many copies run (`base@0` ..); judged by `validate::instances`.
    pub instances: Option<Spanned<i64>>,
    /// `["tcp://IP:PORT", "unix:/path"]`: sockets holdfast binds; judged by
    /// `validate::upgrade`, like `backlog` and `upgrade`.
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub backlog: Option<Spanned<i64>>,
    pub upgrade: Option<Spanned<RawUpgrade>>,
    /// `"adopt"` or `"stop"`: see `model::OnRestart`.
    pub on_restart: Option<Spanned<String>>,
    /// `"systemd:UNIT"` or `"supervisord:PROGRAM"`: observer mode, judged by
    /// `validate::managed` like the keys below.
    pub managed_by: Option<Spanned<String>>,
    pub takeover: Option<Spanned<bool>>,
    pub arbiter_timeout: Option<Spanned<RawDuration>>,
    pub health_grace_period: Option<Spanned<RawDuration>>,
    pub sync_interval: Option<Spanned<RawDuration>>,
}

/// `[service.X.upgrade]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpgrade {
    pub mode: Option<Spanned<String>>,
    pub watch: Option<Spanned<String>>,
    pub ready_timeout: Option<Spanned<RawDuration>>,
    pub drain: Option<Spanned<RawDuration>>,
    pub bake: Option<Spanned<RawDuration>>,
    pub rollback_link: Option<bool>,
    pub verify: Option<Spanned<RawVerify>>,
    pub checksum: Option<Spanned<String>>,
    pub proxy: Option<Spanned<String>>,
    pub ports: Option<Spanned<String>>,
}

/// `verify` as written: `{ command = [...], timeout = "10s" }`, or just the command.
#[derive(Debug)]
pub enum RawVerify {
    Command(RawCommand),
    Table(RawVerifyTable),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerifyTable {
    pub command: Option<Spanned<RawCommand>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

/// `ready` as written: a mode name (`"notify"`) or a table naming the mode with its
/// parameter (`{ tcp = "127.0.0.1:8080" }`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawReady {
    Mode(String),
    Table(RawReadyTable),
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReadyTable {
    pub fd: Option<i64>,
    pub tcp: Option<String>,
    pub http: Option<String>,
}

/// `[service.X.health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub http: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub exec: Option<Spanned<RawCommand>>,
    pub status: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
    pub interval: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub grace: Option<Spanned<RawDuration>>,
    pub degraded: Option<Spanned<RawThreshold>>,
    pub unhealthy: Option<Spanned<RawThreshold>>,
    pub recover: Option<Spanned<RawRecover>>,
}

/// `degraded = { failures, within }` and `unhealthy = { failures, within, action }`
/// (`action` is rejected in `degraded` by validation).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThreshold {
    pub failures: Option<Spanned<u32>>,
    pub within: Option<Spanned<RawDuration>>,
    pub action: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecover {
    pub successes: Option<Spanned<u32>>,
}

/// One value of `[service.X.exit_codes]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExitAction {
    pub action: Option<Spanned<String>>,
    pub delay: Option<Spanned<RawDuration>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

/// `limits = { ... }`: rlimits and cgroup limits. Numbers or strings everywhere, judged
/// by validation ("infinity", sizes, "150%").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub nofile: Option<Spanned<RawSize>>,
    pub nproc: Option<Spanned<RawSize>>,
    pub core: Option<Spanned<RawSize>>,
    pub memlock: Option<Spanned<RawSize>>,
    pub stack: Option<Spanned<RawSize>>,
    pub memory: Option<Spanned<RawSize>>,
    pub memory_high: Option<Spanned<RawSize>>,
    pub cpu_quota: Option<Spanned<RawSize>>,
    pub cpu_weight: Option<Spanned<RawSize>>,
    pub pids: Option<Spanned<RawSize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub max: Option<Spanned<RawDuration>>,
    pub factor: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
    pub reset_after: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStartLimit {
    pub interval: Option<Spanned<RawDuration>>,
    pub burst: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    pub signal: Option<Spanned<String>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub max_size: Option<Spanned<RawSize>>,
    pub keep: Option<u32>,
    pub journald: Option<bool>,
}

/// `command` as written: the array form is the valid one; a plain string is kept so
/// validation can say how to rewrite it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawCommand {
    Args(Vec<Spanned<String>>),
    Line(String),
}

/// A duration as written: a string to parse, or a bare number (an error with a hint).
#[derive(Debug, Clone, PartialEq)]
pub enum RawDuration {
    Text(String),
    Integer(i64),
    Float(f64),
}

/// A size as written: a string with a unit, or a number of bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSize {
    Text(String),
    Bytes(i64),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Line(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(RawCommand::Args(args))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

impl<'de> Deserialize<'de> for RawVerify {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VerifyVisitor;
        impl<'de> Visitor<'de> for VerifyVisitor {
            type Value = RawVerify;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table { command = [...], timeout = \"10s\" } or a command array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawVerify, E> {
                Ok(RawVerify::Command(RawCommand::Line(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawVerify, A::Error> {
                let seq = de::value::SeqAccessDeserializer::new(seq);
                RawCommand::deserialize(seq).map(RawVerify::Command)
            }
            // Not untagged: serde buffers an untagged value, which loses the spans.
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawVerify, A::Error> {
                let map = de::value::MapAccessDeserializer::new(map);
                RawVerifyTable::deserialize(map).map(RawVerify::Table)
            }
        }
        deserializer.deserialize_any(VerifyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"5s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Integer(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Float(v))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"10MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Parses `src` into a [`RawConfig`], collecting every structure and type problem.
/// Only the first syntax error is reported, and nothing else is checked then: after a
/// syntax error toml's recovery mostly finds follow-on noise (an unclosed `[` yields five).
pub fn parse_document(src: &str) -> (RawConfig, Vec<Problem>) {
    let root = match DeTable::parse(src) {
        Ok(root) => root,
        Err(err) => return (RawConfig::default(), vec![syntax_problem(&err, src)]),
    };
    let mut raw = RawConfig::default();
    let mut problems = Vec::new();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "holdfast" => raw.daemon = deserialize_table(value, "holdfast", src, &mut problems),
            "service" => raw.services = services(value, src, &mut problems),
            other => problems.push(
                Problem::new(
                    format!("unknown top-level key `{other}`"),
                    key.span(),
                    "unknown key",
                )
                .with_help(unknown_key_help(other, TOP_LEVEL_KEYS)),
            ),
        }
    }
    (raw, problems)
}

fn services(
    value: Spanned<DeValue<'_>>,
    src: &str,
    problems: &mut Vec<Problem>,
) -> Vec<RawServiceEntry> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        problems.push(
            Problem::new("`service` must be a table of services", span, "not a table")
                .with_help("declare each service as its own table: [service.api]"),
        );
        return Vec::new();
    };
    table
        .into_iter()
        .map(|(name, body)| {
            let name = Spanned::new(name.span(), name.into_inner().into_owned());
            let path = format!("service.{}", name.get_ref());
            let body = deserialize_table(body, &path, src, problems);
            RawServiceEntry { name, body }
        })
        .collect()
}

/// Deserializes one table. On failure it retries key by key, reports every bad key and
/// returns the table made of the good ones (fields are independent, so that succeeds).
fn deserialize_table<'de, T: Deserialize<'de>>(
    value: Spanned<DeValue<'de>>,
    path: &str,
    src: &str,
    problems: &mut Vec<Problem>,
) -> Option<Partial<T>> {
    let span = value.span();
    let DeValue::Table(table) = value.get_ref() else {
        problems.push(
            Problem::new(
                format!("`{path}` must be a table"),
                span,
                format!("found {}", value.get_ref().type_str()),
            )
            .with_help(format!("write it as a table: [{path}]")),
        );
        return None;
    };
    let whole_error = match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(value) => {
            return Some(Partial {
                value,
                bad_keys: Vec::new(),
            });
        }
        Err(err) => err,
    };
    let mut good = DeTable::new();
    let mut bad_keys = Vec::new();
    for (key, item) in table.iter() {
        let mut single = DeTable::new();
        single.insert(key.clone(), item.clone());
        match T::deserialize(ValueDeserializer::from(Spanned::new(
            span.clone(),
            DeValue::Table(single),
        ))) {
            Ok(_) => {
                good.insert(key.clone(), item.clone());
            }
            Err(err) => {
                problems.push(serde_problem(&err, path, src));
                bad_keys.push(key.get_ref().to_string());
            }
        }
    }
    if bad_keys.is_empty() {
        // The table as a whole is wrong although each key is fine on its own.
        problems.push(serde_problem(&whole_error, path, src));
        return None;
    }
    match T::deserialize(ValueDeserializer::from(Spanned::new(
        span,
        DeValue::Table(good),
    ))) {
        Ok(value) => Some(Partial { value, bad_keys }),
        Err(err) => {
            problems.push(serde_problem(&err, path, src));
            None
        }
    }
}

fn syntax_problem(err: &toml::de::Error, src: &str) -> Problem {
    let message = err.message().trim();
    let help = if message.starts_with("duplicate key") {
        "a key may appear only once per table: remove or rename one of them"
    } else if message.contains("must be quoted") {
        "put string values in double quotes, e.g. restart = \"always\""
    } else {
        "see https://toml.io for the TOML syntax"
    };
    Problem::new("invalid TOML syntax", clamp(err.span(), src), message).with_help(help)
}

/// Converts a serde error from the table at `path` into a problem with a useful hint.
fn serde_problem(err: &toml::de::Error, path: &str, src: &str) -> Problem {
    let span = clamp(err.span(), src);
    let message = err.message();
    // Without the input attached, toml's Display ends with the key path: "in `a.b`".
    let rendered = err.to_string();
    let keys = rendered
        .lines()
        .filter_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .next_back();
    let table = match keys {
        Some(keys) => format!("{path}.{keys}"),
        None => path.to_owned(),
    };

    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let valid: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        return Problem::new(
            format!("unknown key `{key}` in [{table}]"),
            span,
            "unknown key",
        )
        .with_help(unknown_key_help(key, &valid));
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let (label, help) = type_hint(message);
        return Problem::new(format!("wrong type for `{table}`"), span, label).with_help(help);
    }
    Problem::new(format!("invalid value in [{table}]"), span, message)
}

/// Rewrites serde's `invalid type: string "x", expected u32` into plain words plus a hint.
fn type_hint(message: &str) -> (String, String) {
    let (found, expected) = message.split_once(", expected ").unwrap_or((message, ""));
    let found = match found
        .trim_start_matches("invalid type: ")
        .trim_start_matches("invalid value: ")
    {
        "sequence" => "an array",
        "map" => "a table",
        other => other,
    };
    let (expected, help) = match expected {
        "u32" => (
            "a non-negative integer",
            "write a number without quotes, e.g. 5",
        ),
        "f64" => ("a number", "write a number without quotes, e.g. 2.0"),
        "a boolean" => ("true or false", "write true or false without quotes"),
        "a string" => ("a string", "put the value in double quotes, e.g. \"value\""),
        "a sequence" => ("an array", "write an array, e.g. [\"a\", \"b\"]"),
        "a map" => ("a table", "write an inline table, e.g. { key = \"value\" }"),
        other if other.starts_with("struct") => {
            ("a table", "write an inline table, e.g. { key = \"value\" }")
        }
        other => (other, "see examples/holdfast.toml for the expected format"),
    };
    (
        format!("found {found}, expected {expected}"),
        help.to_owned(),
    )
}

/// A span inside `src` (toml may point one past the end at EOF).
fn clamp(span: Option<Range<usize>>, src: &str) -> Range<usize> {
    let span = span.unwrap_or(0..0);
    let start = span.start.min(src.len());
    start..span.end.clamp(start, src.len())
}
