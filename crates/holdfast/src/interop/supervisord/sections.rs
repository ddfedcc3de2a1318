//! The whole file: `[program:x]` sections become services, `[group:x]` their
//! `service_group`, `priority` their start order; every other section is reported.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::import::{self, Program};
use super::ini::{Ini, Section};
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
        report.push(Finding {
            section: section.name.clone(),
            line: opt.line,
            option: Some(opt.key.clone()),
            reason: "a service_group is a label: it has no options".into(),
        });
    }
}

fn whole_section(section: &Section) -> Finding {
    let name = section.name.as_str();
    let kind = name.split(':').next().unwrap_or(name);
    let reason = match kind {
        "supervisord" => "supervisord's own settings: holdfast's are in [holdfast]",
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
    format!("# Imported from {origin} by `holdfast import supervisord`.\n\n{body}")
}
