//! The whole file: `[program:x]` sections become services, `[group:x]` their
//! `service_group`, `priority` their start order; every other section is reported.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::import::{self, Program};
use super::ini::{Ini, Section};
use super::lex;
use super::{Context, Finding, ImportError, Imported};

pub fn convert(ini: &Ini, origin: &str, ctx: &Context) -> Result<Imported, ImportError> {
    let mut report = Vec::new();
    let mut programs = Vec::new();
    let mut groups = BTreeMap::new();
    // Groups first: a grouped program's `%(group_name)s` is its group's name.
    for section in &ini.sections {
        if let Some(("group", name)) = section.name.split_once(':') {
            group(section, name.trim(), &mut groups, &mut report);
        }
    }
    for section in &ini.sections {
        match section.name.split_once(':') {
            Some(("program", name)) => {
                let name = name.trim();
                let group = groups.get(name).map(|(g, _)| g.as_str());
                programs.push(import::program(
                    ini,
                    section,
                    name,
                    group,
                    ctx,
                    &mut report,
                )?);
            }
            Some(("group", _)) => {}
            _ if section.name == "supervisord" => {}
            _ => report.push(whole_section(section)),
        }
    }
    for (program, (_, line)) in &groups {
        if !programs.iter().any(|p| p.name == *program) {
            return Err(ImportError::at(
                *line,
                format!("no [program:{program}] for this group"),
            ));
        }
    }
    let inherited = supervisord_section(ini, ctx, &mut report)?;
    for program in &mut programs {
        inherited.apply(&mut program.table);
    }
    order(&mut programs);
    let mut services = Table::new();
    for mut program in programs {
        if let Some((group, _)) = groups.get(&program.name) {
            program
                .table
                .insert("service_group".into(), Value::String(group.clone()));
        }
        services.insert(program.name, Value::Table(program.table));
    }
    report.sort_by_key(|f| f.line);
    Ok(Imported {
        toml: render(origin, services),
        report,
    })
}

/// `[group:x] programs = a,b`: a and b get `service_group = "x"`; its `priority` and
/// anything else are reported.
fn group(
    section: &Section,
    name: &str,
    groups: &mut BTreeMap<String, (String, usize)>,
    report: &mut Vec<Finding>,
) {
    for opt in &section.options {
        if opt.key == "programs" {
            for program in opt
                .value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                groups.insert(program.to_owned(), (name.to_owned(), opt.line));
            }
            continue;
        }
        let reason = match opt.key.as_str() {
            "priority" => {
                "supervisord starts and stops the group's programs at this priority among the other groups (their own priority orders them inside it); the services are ordered by their own priority only"
            }
            _ => "a service_group is a label: it has no options",
        };
        report.push(Finding {
            section: section.name.clone(),
            line: opt.line,
            option: Some(opt.key.clone()),
            reason: reason.into(),
        });
    }
}

fn whole_section(section: &Section) -> Finding {
    let name = section.name.as_str();
    let kind = name.split(':').next().unwrap_or(name);
    let reason = match kind {
        "unix_http_server" | "inet_http_server" | "supervisorctl" | "rpcinterface" => {
            "holdfast is controlled over its own socket ([holdfast] control)"
        }
        "include" => "included files are not read: import each of them",
        "eventlistener" => "no event listeners: holdfast runs hooks ([service.X.on])",
        "fcgi-program" => "no FastCGI sockets in holdfast",
        _ => "not a supervisord section",
    };
    Finding {
        section: section.name.clone(),
        line: section.line,
        option: None,
        reason: reason.into(),
    }
}

/// What `[supervisord]` hands down to every child: the environment, file descriptor
/// and process limits, umask and working directory it sets on itself.
#[derive(Debug, Default)]
struct Inherited {
    env: Vec<(String, String)>,
    nofile: Option<i64>,
    nproc: Option<i64>,
    umask: Option<String>,
    directory: Option<String>,
}

impl Inherited {
    /// Each setting where the program does not set its own.
    fn apply(&self, table: &mut Table) {
        if !self.env.is_empty() {
            let env = table
                .entry("env")
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(env) = env {
                for (k, v) in &self.env {
                    env.entry(k.clone())
                        .or_insert_with(|| Value::String(v.clone()));
                }
            }
        }
        let mut limits = Table::new();
        for (key, n) in [("nofile", self.nofile), ("nproc", self.nproc)] {
            if let Some(n) = n {
                limits.insert(key.into(), Value::Integer(n));
            }
        }
        if !limits.is_empty() {
            table.insert("limits".into(), Value::Table(limits));
        }
        for (key, value) in [("umask", &self.umask), ("working_dir", &self.directory)] {
            if let Some(v) = value {
                table.entry(key).or_insert_with(|| Value::String(v.clone()));
            }
        }
    }
}

/// `[supervisord]`: the settings its children inherit, and one report line for each
/// other option.
fn supervisord_section(
    ini: &Ini,
    ctx: &Context,
    report: &mut Vec<Finding>,
) -> Result<Inherited, ImportError> {
    let mut inherited = Inherited::default();
    let Some(section) = ini.sections.iter().find(|s| s.name == "supervisord") else {
        return Ok(inherited);
    };
    let values = import::context_values(ctx);
    for opt in &section.options {
        let fail = |e: String| ImportError::at(opt.line, format!("{}: {e}", opt.key));
        let number = || {
            import::integer(&opt.value)
                .filter(|n| *n > 0)
                .ok_or_else(|| fail(format!("not a positive integer: {:?}", opt.value)))
        };
        match opt.key.as_str() {
            "environment" => {
                let text = lex::expand(&opt.value, &values).map_err(fail)?;
                inherited.env = lex::environment(&text).map_err(fail)?;
            }
            "minfds" => inherited.nofile = Some(number()?),
            "minprocs" => inherited.nproc = Some(number()?),
            "umask" => {
                let mask = u32::from_str_radix(opt.value.trim(), 8)
                    .map_err(|_| fail(format!("{:?} is not octal", opt.value)))?;
                inherited.umask = Some(format!("{mask:04o}"));
            }
            "directory" => {
                inherited.directory = Some(lex::expand(&opt.value, &values).map_err(fail)?);
            }
            key => report.push(Finding {
                section: section.name.clone(),
                line: opt.line,
                option: Some(key.to_owned()),
                reason: supervisord_option_reason(key).into(),
            }),
        }
    }
    Ok(inherited)
}

fn supervisord_option_reason(key: &str) -> &'static str {
    match key {
        "logfile" | "logfile_maxbytes" | "logfile_backups" | "loglevel" | "silent" => {
            "supervisord's own log: holdfast logs to stderr / the journal"
        }
        "childlogdir" => "holdfast writes the services' output to [holdfast] log_dir",
        "pidfile" | "nodaemon" => "holdfast runs in the foreground under its own supervisor",
        "user" => "supervisord switches to this user at start: run holdfast as it",
        "identifier" => "holdfast is addressed by its control socket ([holdfast] control)",
        "nocleanup" | "strip_ansi" => "no equivalent in holdfast",
        _ => "not carried over: no holdfast equivalent",
    }
}

/// supervisord starts lower `priority` first and stops in reverse: each program comes
/// `after` the programs of the next lower priority (which come after theirs, ...).
fn order(programs: &mut [Program]) {
    let mut levels: Vec<i64> = programs.iter().map(|p| p.priority).collect();
    levels.sort_unstable();
    levels.dedup();
    let by_level: BTreeMap<i64, Vec<String>> = programs.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(p.priority)
            .or_insert_with(Vec::new)
            .push(p.name.clone());
        m
    });
    for program in programs.iter_mut() {
        let below = levels.iter().rev().find(|l| **l < program.priority);
        if let Some(names) = below.and_then(|l| by_level.get(l)) {
            let after = names.iter().cloned().map(Value::String).collect();
            program.table.insert("after".into(), Value::Array(after));
        }
    }
}

fn render(origin: &str, services: Table) -> String {
    let mut doc = Table::new();
    doc.insert("service".into(), Value::Table(services));
    let body = toml::to_string(&doc).unwrap_or_default();
    format!(
        "# Imported from {origin} by `holdfast import supervisord`.\n#\n\
         # start_limit: supervisord gives up only after `startretries` starts in a row that\n\
         # each died within `startsecs`, and restarts a program that ran longer forever;\n\
         # holdfast gives up after `burst` restarts within `interval`, however long each run\n\
         # was. The interval is `burst` x (start_secs + 1s), at least 10s, so that only such\n\
         # quick failures add up to it.\n\n{body}"
    )
}
