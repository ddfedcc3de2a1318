//! One `[program:x]` section as a holdfast service table.
//!
//! Each option is read the way supervisor's `options.processes_from_section` reads it
//! (same defaults, same conversions, same errors) and written as the holdfast key that
//! does the same; every option left unread at the end is reported with the reason.

use std::collections::{BTreeMap, BTreeSet};

use toml::{Table, Value};

use super::ini::{Ini, Opt, Section};
use super::lex::{self, Expansion};
use super::{Context, Finding, ImportError};
use crate::config::value::{MAX_DURATION, parse_signal_arg};
use crate::model::ServiceName;

/// Every option supervisord reads in a `[program:x]` section.
pub const fn program_options() -> &'static [&'static str] {
    &[
        "command",
        "process_name",
        "numprocs",
        "numprocs_start",
        "priority",
        "autostart",
        "startsecs",
        "startretries",
        "autorestart",
        "exitcodes",
        "stopsignal",
        "stopwaitsecs",
        "stopasgroup",
        "killasgroup",
        "user",
        "redirect_stderr",
        "stdout_logfile",
        "stdout_logfile_maxbytes",
        "stdout_logfile_backups",
        "stdout_capture_maxbytes",
        "stdout_events_enabled",
        "stdout_syslog",
        "stderr_logfile",
        "stderr_logfile_maxbytes",
        "stderr_logfile_backups",
        "stderr_capture_maxbytes",
        "stderr_events_enabled",
        "stderr_syslog",
        "environment",
        "directory",
        "umask",
        "serverurl",
    ]
}

/// A converted program: its service table and what `sections` needs for ordering.
#[derive(Debug)]
pub struct Program {
    pub name: String,
    pub priority: i64,
    pub table: Table,
}

/// Reads one section, remembering which options were used.
struct Reader<'a> {
    ini: &'a Ini,
    section: &'a Section,
    used: BTreeSet<String>,
    report: &'a mut Vec<Finding>,
    /// The `ENV_X` values that come from the importing shell (not from `environment=`).
    shell_env: BTreeSet<String>,
}

impl<'a> Reader<'a> {
    fn opt(&mut self, key: &str) -> Option<&'a Opt> {
        let opt = self.section.get(self.ini, key)?;
        self.used.insert(key.to_owned());
        Some(opt)
    }

    fn report(&mut self, opt: &Opt, reason: impl Into<String>) {
        self.report.push(Finding {
            section: self.section.name.clone(),
            line: opt.line,
            option: Some(opt.key.clone()),
            reason: reason.into(),
        });
    }

    /// The option's text after `%` expansion with `values`.
    fn text(
        &mut self,
        key: &str,
        values: &BTreeMap<String, Expansion>,
    ) -> Result<Option<(String, usize)>, ImportError> {
        let Some(opt) = self.opt(key) else {
            return Ok(None);
        };
        let mut names = Vec::new();
        let text = lex::expand_noting(&opt.value, values, &mut names).map_err(|e| at(opt, &e))?;
        self.note_shell_env(opt, &names);
        Ok(Some((text, opt.line)))
    }

    /// Each `%(ENV_X)s` of the importing shell's environment used in `opt`: its value,
    /// possibly a secret, is now in the config text.
    fn note_shell_env(&mut self, opt: &Opt, names: &[String]) {
        let from_shell: Vec<&String> = names
            .iter()
            .filter(|n| self.shell_env.contains(*n))
            .collect();
        for name in from_shell {
            let var = &name["ENV_".len()..];
            self.report(
                opt,
                format!("%({name})s: the value of {var} in the importing shell is written into the config"),
            );
        }
    }

    fn boolean(&mut self, key: &str) -> Result<Option<(bool, &'a Opt)>, ImportError> {
        let Some(opt) = self.opt(key) else {
            return Ok(None);
        };
        boolean(&opt.value)
            .map(|b| Some((b, opt)))
            .ok_or_else(|| at(opt, &format!("not a valid boolean value: {:?}", opt.value)))
    }

    fn integer(&mut self, key: &str) -> Result<Option<(i64, &'a Opt)>, ImportError> {
        let Some(opt) = self.opt(key) else {
            return Ok(None);
        };
        integer(&opt.value)
            .map(|n| Some((n, opt)))
            .ok_or_else(|| at(opt, &format!("not an integer: {:?}", opt.value)))
    }
}

fn at(opt: &Opt, message: &str) -> ImportError {
    ImportError::at(opt.line, format!("{}: {message}", opt.key))
}

/// supervisor's `boolean`: yes/true/on/1 and no/false/off/0, any case.
pub fn boolean(text: &str) -> Option<bool> {
    match text.to_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Python's `int()` of a string: surrounding blanks, a sign, `_` between digits.
pub fn integer(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// Converts `[program:NAME]`; `group` is the `[group:x]` that lists it, if any.
pub fn program(
    ini: &Ini,
    section: &Section,
    name: &str,
    group: Option<&str>,
    ctx: &Context,
    report: &mut Vec<Finding>,
) -> Result<Program, ImportError> {
    if !ServiceName::is_plain(name) {
        return Err(ImportError::at(
            section.line,
            format!(
                "program name {name:?} is not a valid holdfast service name: use 1-64 of A-Z a-z 0-9 _ . -"
            ),
        ));
    }
    let mut r = Reader {
        ini,
        section,
        used: BTreeSet::new(),
        report,
        shell_env: ctx.env.keys().map(|k| format!("ENV_{k}")).collect(),
    };
    let mut table = Table::new();
    let mut values = common_values(name, group.unwrap_or(name), ctx);
    let priority = r.integer("priority")?.map_or(999, |(n, _)| n);
    behaviour(&mut r, &mut table, &values)?;
    instances(&mut r, &mut table, &mut values)?;
    process(&mut r, &mut table, &mut values)?;
    logs(&mut r, &mut table, &values)?;
    leftovers(&mut r);
    Ok(Program {
        name: name.to_owned(),
        priority,
        table,
    })
}

/// The expansions of every section: `%(ENV_X)s` and `%(here)s`.
pub fn context_values(ctx: &Context) -> BTreeMap<String, Expansion> {
    let mut values: BTreeMap<String, Expansion> = ctx
        .env
        .iter()
        .map(|(k, v)| (format!("ENV_{k}"), Expansion::Text(v.clone())))
        .collect();
    values.insert(
        "here".into(),
        Expansion::Text(ctx.here.to_string_lossy().into_owned()),
    );
    values
}

fn common_values(name: &str, group: &str, ctx: &Context) -> BTreeMap<String, Expansion> {
    let mut values = context_values(ctx);
    let text = |s: &str| Expansion::Text(s.to_owned());
    values.insert("program_name".into(), text(name));
    values.insert("group_name".into(), text(group));
    values.insert("host_node_name".into(), text(&ctx.host_node_name));
    values
}

/// autostart, autorestart with exitcodes, startsecs, startretries, stop*, umask, user.
fn behaviour(
    r: &mut Reader<'_>,
    table: &mut Table,
    values: &BTreeMap<String, Expansion>,
) -> Result<(), ImportError> {
    let autostart = r.boolean("autostart")?.is_none_or(|(b, _)| b);
    table.insert("autostart".into(), Value::Boolean(autostart));
    restart(r, table)?;
    let start_secs = match r.integer("startsecs")? {
        Some((n, opt)) if n < 0 => return Err(at(opt, "must not be negative")),
        Some((n, opt)) if n > MAX_SECS => return Err(at(opt, TOO_LONG)),
        Some((n, _)) => n,
        None => 1,
    };
    table.insert("start_secs".into(), Value::String(format!("{start_secs}s")));
    let retries = match r.integer("startretries")? {
        Some((0, opt)) => {
            r.report(
                opt,
                "0: holdfast's start_limit allows at least one restart (burst = 1)",
            );
            1
        }
        Some((n, opt)) => u32::try_from(n).map_err(|_| at(opt, "must be 0 or more"))?,
        None => 3,
    };
    table.insert("start_limit".into(), start_limit(retries, start_secs));
    stop(r, table)?;
    if let Some((user, _)) = r.text("user", values)? {
        table.insert("user".into(), Value::String(user));
    }
    if let Some(opt) = r.opt("umask") {
        let mask = u32::from_str_radix(opt.value.trim(), 8).map_err(|_| {
            at(
                opt,
                &format!("{:?} can not be converted to an octal type", opt.value),
            )
        })?;
        table.insert("umask".into(), Value::String(format!("{mask:04o}")));
    }
    Ok(())
}

/// supervisord gives up after `startretries` starts in a row that each died within
/// `startsecs`; a program that got past `startsecs` is restarted forever. holdfast gives
/// up after `burst` restarts within `interval`, however long the runs were. The
/// interval that comes closest: `burst` such failed starts, each `startsecs` plus about
/// a second before the next, fit in it, while runs much longer than `startsecs` spread
/// the restarts wider than it and are never given up on (10 s at the least, holdfast's
/// default: `startretries=5`, `startsecs=1` is holdfast's default start limit).
pub fn start_limit_interval(retries: u64, start_secs: u64) -> u64 {
    retries
        .saturating_mul(start_secs.saturating_add(1))
        .clamp(10, MAX_DURATION.as_secs())
}

/// The longest duration holdfast takes, in whole seconds.
const MAX_SECS: i64 = MAX_DURATION.as_secs() as i64;
const TOO_LONG: &str = "longer than holdfast's longest duration, 365d (31536000 seconds)";

fn start_limit(retries: u32, start_secs: i64) -> Value {
    let secs = u64::try_from(start_secs).unwrap_or(0);
    let interval = start_limit_interval(u64::from(retries), secs);
    let mut limit = Table::new();
    limit.insert("burst".into(), Value::Integer(i64::from(retries)));
    limit.insert("interval".into(), Value::String(format!("{interval}s")));
    Value::Table(limit)
}

/// `autorestart` becomes `restart`; `exitcodes` say which exits count as expected: the
/// others are `ignore` (a success), and with `unexpected` a missing 0 forces a restart.
fn restart(r: &mut Reader<'_>, table: &mut Table) -> Result<(), ImportError> {
    let policy = match r.opt("autorestart") {
        None => "on-failure",
        Some(opt) => match opt.value.to_lowercase().as_str() {
            "unexpected" => "on-failure",
            v if boolean(v) == Some(true) => "always",
            v if boolean(v) == Some(false) => "no",
            _ => {
                return Err(at(
                    opt,
                    &format!("invalid 'autorestart' value {:?}", opt.value),
                ));
            }
        },
    };
    table.insert("restart".into(), Value::String(policy.into()));
    let codes = match r.opt("exitcodes") {
        None => vec![0],
        Some(opt) => exit_codes(&opt.value).ok_or_else(|| {
            at(
                opt,
                &format!("not a valid list of exit codes: {:?}", opt.value),
            )
        })?,
    };
    let mut map = Table::new();
    let action = |a: &str| {
        let mut t = Table::new();
        t.insert("action".into(), Value::String(a.into()));
        Value::Table(t)
    };
    for code in codes.iter().filter(|c| **c != 0) {
        map.insert(code.to_string(), action("ignore"));
    }
    if !codes.contains(&0) && policy == "on-failure" {
        map.insert("0".into(), action("restart"));
    }
    if policy == "on-failure" {
        // supervisord expects only the exit codes listed: a death by any signal is
        // unexpected, also the four holdfast's on-failure takes for a clean stop.
        for signal in CLEAN_SIGNALS {
            map.insert(signal.into(), action("restart"));
        }
    }
    if !map.is_empty() {
        table.insert("exit_codes".into(), Value::Table(map));
    }
    Ok(())
}

/// The signals holdfast's `on-failure` counts as a clean exit (systemd's notion).
pub const CLEAN_SIGNALS: [&str; 4] = ["SIGHUP", "SIGINT", "SIGTERM", "SIGPIPE"];

/// `list_of_exitcodes`: comma-separated integers 0-255 (empty: none).
fn exit_codes(text: &str) -> Option<Vec<i64>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|c| integer(c).filter(|n| (0..=255).contains(n)))
        .collect()
}

fn stop(r: &mut Reader<'_>, table: &mut Table) -> Result<(), ImportError> {
    let signal = match r.opt("stopsignal") {
        Some(opt) => parse_signal_arg(&opt.value).map_err(|e| at(opt, &e.label))?,
        None => crate::unix::Signal::SIGTERM,
    };
    let secs = match r.integer("stopwaitsecs")? {
        Some((secs, opt)) if secs < 0 => return Err(at(opt, "must not be negative")),
        Some((secs, opt)) if secs > MAX_SECS => return Err(at(opt, TOO_LONG)),
        Some((0, opt)) => {
            r.report(
                opt,
                "0: holdfast gives a service at least 1s before SIGKILL",
            );
            1
        }
        Some((secs, _)) => secs,
        None => 10,
    };
    let mut stop = Table::new();
    stop.insert("signal".into(), Value::String(signal.as_str().into()));
    stop.insert("timeout".into(), Value::String(format!("{secs}s")));
    table.insert("stop".into(), Value::Table(stop));
    let as_group = r.boolean("stopasgroup")?;
    let kill_group = r.boolean("killasgroup")?;
    if let (Some((true, _)), Some((false, opt))) = (as_group, kill_group) {
        return Err(at(opt, "cannot set stopasgroup=true and killasgroup=false"));
    }
    for (flag, what) in [(as_group, "stop signal"), (kill_group, "SIGKILL")] {
        if let Some((false, opt)) = flag {
            r.report(
                opt,
                format!("holdfast sends the {what} to the whole process group"),
            );
        }
    }
    Ok(())
}

/// `numprocs` copies become `instances`; `%(process_num)d` becomes `{instance}` (plus
/// `numprocs_start`).
fn instances(
    r: &mut Reader<'_>,
    table: &mut Table,
    values: &mut BTreeMap<String, Expansion>,
) -> Result<(), ImportError> {
    let numprocs = match r.integer("numprocs")? {
        Some((n, opt)) if !(1..=256).contains(&n) => {
            return Err(at(opt, "holdfast runs 1 to 256 instances of a service"));
        }
        Some((n, _)) => n,
        None => 1,
    };
    let start = r.integer("numprocs_start")?.map_or(0, |(n, _)| n);
    values.insert("numprocs".into(), Expansion::Number(numprocs));
    let process_name = r.opt("process_name");
    if numprocs == 1 {
        values.insert("process_num".into(), Expansion::Number(start));
        if let Some(opt) = process_name.filter(|o| o.value != "%(program_name)s") {
            r.report(opt, "the service is named after the program");
        }
        return Ok(());
    }
    if start < 0 {
        return Err(ImportError::at(
            r.section.line,
            "numprocs_start must not be negative",
        ));
    }
    values.insert(
        "process_num".into(),
        Expansion::Placeholder(SENTINEL.into()),
    );
    table.insert("instances".into(), Value::Integer(numprocs));
    match process_name {
        Some(opt) if opt.value.contains("%(process_num)") => {
            if opt.value != "%(program_name)s@%(process_num)d" {
                r.report(opt, "holdfast names the instances NAME@0, NAME@1, ...");
            }
            Ok(())
        }
        _ => Err(ImportError::at(
            process_name.map_or(r.section.line, |o| o.line),
            "%(process_num) must be present within process_name when numprocs > 1",
        )),
    }
}

/// What `%(process_num)d` expands to while the values are split: word characters only,
/// so neither `shlex` splits it; replaced by `{instance}` afterwards ([`restore`]).
const SENTINEL: &str = "__holdfast_process_num__";

/// `text` with the sentinel as holdfast's placeholder: `{instance}`, or with
/// `numprocs_start`, `{instance+K}`.
fn restore(text: &str, start: i64) -> String {
    let placeholder = match start {
        0 => "{instance}".to_owned(),
        k => format!("{{instance+{k}}}"),
    };
    text.replace(SENTINEL, &placeholder)
}

/// A value holdfast takes as it is, so `%(process_num)d` in it cannot vary per instance.
fn no_instance(text: String, line: usize, key: &str) -> Result<String, ImportError> {
    if text.contains(SENTINEL) {
        return Err(ImportError::at(
            line,
            format!(
                "{key}: %(process_num) here has no holdfast equivalent (only in command and environment)"
            ),
        ));
    }
    Ok(text)
}

/// environment (whose keys become `%(ENV_KEY)s` for the options after it), command,
/// directory.
fn process(
    r: &mut Reader<'_>,
    table: &mut Table,
    values: &mut BTreeMap<String, Expansion>,
) -> Result<(), ImportError> {
    // supervisord children start from supervisord's own environment, and may gain
    // privileges by exec (setuid programs): supervisord sets no no_new_privs.
    table.insert("inherit_env".into(), Value::Boolean(true));
    table.insert("no_new_privs".into(), Value::Boolean(false));
    let start = r
        .section
        .get(r.ini, "numprocs_start")
        .and_then(|o| integer(&o.value))
        .unwrap_or(0);
    environment(r, table, values, start)?;
    let Some((command, line)) = r.text("command", values)? else {
        return Err(ImportError::at(
            r.section.line,
            format!(
                "program section {} does not specify a command",
                r.section.name
            ),
        ));
    };
    let args =
        lex::split_command(&command).map_err(|e| ImportError::at(line, format!("command: {e}")))?;
    if args.is_empty() {
        return Err(ImportError::at(line, "command: empty"));
    }
    table.insert(
        "command".into(),
        Value::Array(
            args.iter()
                .map(|a| Value::String(restore(a, start)))
                .collect(),
        ),
    );
    if let Some((dir, line)) = r.text("directory", values)? {
        let dir = no_instance(dir, line, "directory")?;
        table.insert("working_dir".into(), Value::String(dir));
    }
    Ok(())
}

/// `environment=KEY="v",...`: the service's `env`; its keys become `%(ENV_KEY)s` for
/// the options after it. `X=%(ENV_X)s` is supervisord passing on its own `X`: left out,
/// as the imported service inherits holdfast's environment (`inherit_env`).
fn environment(
    r: &mut Reader<'_>,
    table: &mut Table,
    values: &mut BTreeMap<String, Expansion>,
    start: i64,
) -> Result<(), ImportError> {
    let Some(opt) = r.opt("environment") else {
        return Ok(());
    };
    let passed_on = passed_on(&opt.value, values);
    let mut names = Vec::new();
    let text = lex::expand_noting(&opt.value, values, &mut names).map_err(|e| at(opt, &e))?;
    for key in &passed_on {
        if let Some(i) = names.iter().position(|n| *n == format!("ENV_{key}")) {
            names.remove(i);
        }
    }
    r.note_shell_env(opt, &names);
    let pairs = lex::environment(&text).map_err(|e| at(opt, &e))?;
    let mut env = Table::new();
    for (key, value) in pairs {
        values.insert(format!("ENV_{key}"), Expansion::Text(value.clone()));
        if passed_on.contains(&key) {
            // Still the shell's value where a later option expands it.
            r.report(
                opt,
                format!("{key}=%(ENV_{key})s: inherited from holdfast's environment instead (inherit_env)"),
            );
            continue;
        }
        r.shell_env.remove(&format!("ENV_{key}"));
        env.insert(key, Value::String(restore(&value, start)));
    }
    if !env.is_empty() {
        table.insert("env".into(), Value::Table(env));
    }
    Ok(())
}

/// The keys of `environment` written `X=%(ENV_X)s`: found by expanding each `ENV_X` as
/// a marker word and reading the pairs.
fn passed_on(environment: &str, values: &BTreeMap<String, Expansion>) -> BTreeSet<String> {
    const MARK: &str = "__holdfast_env__";
    let marked: BTreeMap<String, Expansion> = values
        .iter()
        .map(|(k, v)| match k.strip_prefix("ENV_") {
            Some(var) => (k.clone(), Expansion::Text(format!("{MARK}{var}"))),
            None => (k.clone(), v.clone()),
        })
        .collect();
    let Ok(text) = lex::expand(environment, &marked) else {
        return BTreeSet::new();
    };
    lex::environment(&text)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| v.strip_prefix(MARK) == Some(k.as_str()))
        .map(|(k, _)| k)
        .collect()
}

/// holdfast keeps one log file per service (stdout and stderr, labelled) in its
/// `log_dir`: the rotation of stdout's log carries over, the paths do not.
fn logs(
    r: &mut Reader<'_>,
    table: &mut Table,
    values: &BTreeMap<String, Expansion>,
) -> Result<(), ImportError> {
    r.opt("redirect_stderr");
    // supervisord's defaults (50MB, 10 backups) are not holdfast's: always written.
    let mut log = Table::new();
    let max_size = match r.opt("stdout_logfile_maxbytes") {
        Some(opt) => byte_size(&opt.value).ok_or_else(|| at(opt, "not a size such as 50MB"))?,
        None => 50 << 20,
    };
    match (max_size, r.section.get(r.ini, "stdout_logfile_maxbytes")) {
        (..=0, Some(opt)) => r.report(opt, "no rotation: holdfast always rotates"),
        (n @ ..MIN_LOG_SIZE, Some(opt)) => {
            r.report(
                opt,
                format!("{n} bytes: holdfast rotates at 4KiB at the least"),
            );
            log.insert("max_size".into(), Value::Integer(MIN_LOG_SIZE));
        }
        (n, _) => drop(log.insert("max_size".into(), Value::Integer(n))),
    }
    let keep = match r.integer("stdout_logfile_backups")? {
        Some((n, opt)) => u32::try_from(n).map_err(|_| at(opt, "must be 0 or more"))?,
        None => 10,
    };
    log.insert("keep".into(), Value::Integer(i64::from(keep)));
    table.insert("log".into(), Value::Table(log));
    // The paths are only reported: any `%(process_num)02d` in them is fine.
    let mut values = values.clone();
    if values.get("process_num") == Some(&Expansion::Placeholder(SENTINEL.into())) {
        values.insert("process_num".into(), Expansion::Number(0));
    }
    for key in ["stdout_logfile", "stderr_logfile"] {
        let Some((path, _)) = r.text(key, &values)? else {
            continue;
        };
        if let Some(opt) = r
            .section
            .get(r.ini, key)
            .filter(|_| !path.eq_ignore_ascii_case("auto"))
        {
            r.report(opt, "holdfast writes the output to <log_dir>/NAME.log");
        }
    }
    Ok(())
}

/// The smallest `log.max_size` holdfast takes.
const MIN_LOG_SIZE: i64 = 4096;

/// supervisor's `byte_size`: a number with an optional KB, MB or GB (powers of 1024).
fn byte_size(text: &str) -> Option<i64> {
    let t = text.trim().to_lowercase();
    for (suffix, factor) in [("kb", 1i64 << 10), ("mb", 1 << 20), ("gb", 1 << 30)] {
        if let Some(n) = t.strip_suffix(suffix) {
            return integer(n)?.checked_mul(factor);
        }
    }
    integer(&t)
}

/// Every option not read: reported with why it does not carry over.
fn leftovers(r: &mut Reader<'_>) {
    let unread: Vec<&Opt> = r
        .section
        .options
        .iter()
        .chain(r.ini.defaults.iter().filter(|d| {
            !r.section.options.iter().any(|o| o.key == d.key)
                && program_options().contains(&d.key.as_str())
        }))
        .filter(|o| !r.used.contains(&o.key))
        .collect();
    for opt in unread {
        let reason = leftover_reason(&opt.key);
        r.report(opt, reason);
    }
}

fn leftover_reason(key: &str) -> &'static str {
    match key {
        "stderr_logfile_maxbytes" | "stderr_logfile_backups" => {
            "stderr goes to the service's one log file, rotated by stdout_logfile_maxbytes/backups"
        }
        "stdout_syslog" | "stderr_syslog" => "holdfast writes output to its log files, not syslog",
        "stdout_capture_maxbytes" | "stderr_capture_maxbytes" => "no capture mode in holdfast",
        "stdout_events_enabled" | "stderr_events_enabled" => {
            "holdfast has no output events (see `holdfast logs -f`)"
        }
        "serverurl" => "holdfast passes HOLDFAST_SOCKET, not a supervisord URL",
        k if program_options().contains(&k) => "no holdfast equivalent",
        _ => "not a supervisord option (supervisord ignores it too)",
    }
}
