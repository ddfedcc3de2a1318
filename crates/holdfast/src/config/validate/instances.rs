//! `instances = N`: one config table, N services named `base@0` .. `base@{N-1}`.
//!
//! The table is validated once, as one service; then [`expand`] copies its spec per
//! instance, filling in `{instance}` (or `{instance + K}`, for ports) in the command's
//! arguments and the `env` values. An `after` entry that names an instanced service
//! means all of its instances. `instances = 1` keeps the plain name (so adding the key
//! renames nothing) but still fills in `{instance}` as 0 and sets `HOLDFAST_INSTANCE`.

use std::collections::BTreeMap;

use serde_spanned::Spanned;

use crate::config::diagnostic::Problem;
use crate::config::raw::{RawCommand, RawReady, RawService, RawServiceEntry};
use crate::model::{Instance, ServiceName, ServiceSpec};

/// Most instances of one service: each is a process with its own pipes, log file and
/// status line, and a typo such as `instances = 10000` should not fork-bomb the host.
pub const MAX_INSTANCES: u32 = 256;

/// The error for a config key with `@`, which only generated instance names have.
pub(super) fn at_in_key(raw: &Spanned<String>) -> Problem {
    let base = raw.get_ref().split('@').next().unwrap_or_default();
    Problem::new(
        format!("invalid service name {:?}: `@` marks an instance", raw.get_ref()),
        raw.span(),
        "`@` in a service name",
    )
    .with_help(format!(
        "holdfast names the copies of a service itself: write [service.{base}] with instances = N to run {base}@0 .. {base}@{{N-1}}"
    ))
}

/// The `instances` of every table that sets it, by table name; problems for bad values
/// and for what cannot work with several copies.
pub(super) fn counts(
    entries: &[RawServiceEntry],
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for entry in entries {
        let Some(body) = &entry.body else { continue };
        let svc = entry.name.get_ref();
        let raw = &body.value;
        let Some(written) = &raw.instances else {
            continue;
        };
        let count = count(svc, written, problems);
        placeholders(svc, raw, count, problems);
        if count > 1 {
            one_ready_address(svc, raw, count, problems);
        }
        counts.insert(svc.clone(), count);
    }
    counts
}

/// `instances` must be a whole number in 1..=[`MAX_INSTANCES`] (TOML types are checked
/// by serde before this). A bad value counts as 1, so the other checks still run.
fn count(svc: &str, written: &Spanned<i64>, problems: &mut Vec<Problem>) -> u32 {
    let value = *written.get_ref();
    let label = match value {
        v if v < 1 => "fewer than one instance",
        v if v > i64::from(MAX_INSTANCES) => "too many instances",
        v => return u32::try_from(v).unwrap_or(1),
    };
    problems.push(
        Problem::new(
            format!("`service.{svc}.instances` must be between 1 and {MAX_INSTANCES}, not {value}"),
            written.span(),
            label,
        )
        .with_help(if value < 1 {
            "to not run the service, set autostart = false or remove its table"
        } else {
            "run fewer copies, or split them over several services"
        }),
    );
    1
}

/// A `{instance...}` that is neither `{instance}` nor `{instance + K}` is a typo that
/// would reach the program verbatim; so would an `{instance + K}` too large for the last
/// instance, `count - 1` (the first is fine when the last is: the value only grows).
fn placeholders(svc: &str, raw: &RawService, count: u32, problems: &mut Vec<Problem>) {
    let args = match raw.command.as_ref().map(Spanned::get_ref) {
        Some(RawCommand::Args(args)) => args.iter().map(|a| (a, "command")).collect(),
        _ => Vec::new(),
    };
    let values = raw.env.iter().flatten().map(|(_, value)| (value, "env"));
    let last = count.saturating_sub(1);
    for (text, key) in args.into_iter().chain(values) {
        let problem = match (
            try_substitute(text.get_ref(), 0),
            try_substitute(text.get_ref(), last),
        ) {
            (Err(bad), _) => Problem::new(
                format!("unknown placeholder `{bad}` in `service.{svc}.{key}`"),
                text.span(),
                "not {instance} or {instance + K}",
            )
            .with_help("write {instance} for 0, 1, ... or {instance + 8080} for 8080, 8081, ..."),
            (Ok(_), Err(bad)) => Problem::new(
                format!(
                    "placeholder `{bad}` in `service.{svc}.{key}` is too large for instance {last}"
                ),
                text.span(),
                "overflows",
            )
            .with_help("write a smaller offset"),
            (Ok(_), Ok(_)) => continue,
        };
        problems.push(problem);
    }
}

/// `ready = { tcp }` and `{ http }` name one fixed address (no `{instance}`): with
/// several copies, the first to listen would make all of them ready. So does
/// `ready = "health"` with an http or tcp probe: every copy would be judged by the one
/// that listens there.
fn one_ready_address(svc: &str, raw: &RawService, count: u32, problems: &mut Vec<Problem>) {
    let Some(ready) = &raw.ready else { return };
    // `{port}` is each run's own private port (proxy mode), not one shared address.
    let by_address = match ready.get_ref() {
        RawReady::Table(table) => {
            (table.tcp.is_some() || table.http.is_some())
                && !super::upgrade::ready_has_port(ready.get_ref())
        }
        RawReady::Mode(mode) => mode == "health" && health_address(raw),
    };
    if !by_address {
        return;
    }
    problems.push(
        Problem::new(
            format!("`service.{svc}.ready` waits for one address but {count} instances run"),
            ready.span(),
            "the same address for every instance",
        )
        .with_help(
            "use ready = \"notify\" or a health probe with exec (it sees HOLDFAST_INSTANCE), or give each copy its own service",
        ),
    );
}

/// Whether the health probe connects to an address (`http`, `tcp`), the same one for
/// every copy.
fn health_address(raw: &RawService) -> bool {
    raw.health.as_ref().is_some_and(|h| {
        [&h.get_ref().http, &h.get_ref().tcp]
            .into_iter()
            .flatten()
            .any(|a| !a.get_ref().contains(super::upgrade::PORT))
    })
}

/// The plan with each service of `counts` replaced by its instances, and `after`
/// entries naming such a service replaced by all of its instances.
pub(super) fn expand(
    services: BTreeMap<ServiceName, ServiceSpec>,
    counts: &BTreeMap<String, u32>,
) -> BTreeMap<ServiceName, ServiceSpec> {
    let count_of = |name: &ServiceName| counts.get(name.as_str()).copied();
    let mut expanded = BTreeMap::new();
    for (name, mut spec) in services {
        spec.after = spec
            .after
            .iter()
            .flat_map(|dep| names(dep, count_of(dep).unwrap_or(1)))
            .collect();
        let Some(count) = count_of(&name) else {
            expanded.insert(name, spec);
            continue;
        };
        for index in 0..count {
            let copy = instance_of(&spec, index, count);
            expanded.insert(copy.name.clone(), copy);
        }
    }
    expanded
}

/// The service names `base` runs as: itself, or `base@0` .. `base@{count-1}`.
fn names(base: &ServiceName, count: u32) -> Vec<ServiceName> {
    (0..count.max(1)).map(|i| name_of(base, i, count)).collect()
}

/// Instance `index` of `count` is `base@index`; a single one keeps the base name.
fn name_of(base: &ServiceName, index: u32, count: u32) -> ServiceName {
    if count > 1 {
        base.instance(index)
    } else {
        base.clone()
    }
}

fn instance_of(spec: &ServiceSpec, index: u32, count: u32) -> ServiceSpec {
    let fill = |text: &String| try_substitute(text, index).unwrap_or_else(|_| text.clone());
    ServiceSpec {
        name: name_of(&spec.name, index, count),
        command: spec.command.iter().map(fill).collect(),
        env: spec.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
        instance: Some(Instance {
            base: spec.name.clone(),
            index,
        }),
        ..spec.clone()
    }
}

/// A part of a text with instance placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    /// `{instance}` (offset 0) or `{instance + K}`, as `written`.
    Instance {
        offset: u64,
        written: &'a str,
    },
}

/// `text` cut into literal text and `{instance}` / `{instance + K}` placeholders; `Err`
/// with the first placeholder of another form. Braces that do not start `{instance` are
/// text (JSON in an argument stays as written).
pub fn segments(text: &str) -> Result<Vec<Segment<'_>>, String> {
    const OPEN: &str = "{instance";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        if at > 0 {
            out.push(Segment::Text(&rest[..at]));
        }
        let Some(len) = rest[at..].find('}') else {
            return Err(rest[at..].to_owned());
        };
        let placeholder = &rest[at..=at + len];
        let offset = placeholder[OPEN.len()..placeholder.len() - 1].trim();
        let offset = match offset.strip_prefix('+').map(str::trim) {
            None if offset.is_empty() => 0,
            Some(k) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => {
                k.parse::<u64>().map_err(|_| placeholder.to_owned())?
            }
            _ => return Err(placeholder.to_owned()),
        };
        out.push(Segment::Instance {
            offset,
            written: placeholder,
        });
        rest = &rest[at + len + 1..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    Ok(out)
}

/// `text` with every `{instance}` replaced by `index` and `{instance + K}` by
/// `index + K`; `Err` with the first placeholder of another form (or one whose value
/// overflows).
pub fn try_substitute(text: &str, index: u32) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for segment in segments(text)? {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Instance { offset, written } => {
                let value = offset
                    .checked_add(u64::from(index))
                    .ok_or_else(|| written.to_owned())?;
                out.push_str(&value.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{plan, problems};
    use super::*;

    fn name(n: &str) -> ServiceName {
        ServiceName::new(n).unwrap()
    }

    #[test]
    fn placeholders_take_the_instance_number_and_an_optional_offset() {
        assert_eq!(try_substitute("--id={instance}", 2).unwrap(), "--id=2");
        assert_eq!(
            try_substitute("127.0.0.1:{instance + 8080}", 1).unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(try_substitute("{instance+5}/{instance}", 0).unwrap(), "5/0");
        assert_eq!(try_substitute("{\"json\": 1}", 3).unwrap(), "{\"json\": 1}");
        assert_eq!(try_substitute("{instances}", 0).unwrap_err(), "{instances}");
        assert_eq!(
            try_substitute("{instance - 1}", 0).unwrap_err(),
            "{instance - 1}"
        );
        assert_eq!(try_substitute("x{instance", 0).unwrap_err(), "{instance");
    }

    #[test]
    fn a_service_with_three_instances_becomes_three_numbered_services() {
        let p = plan(
            "[service.web]\ncommand = [\"/bin/web\", \"--port\", \"{instance + 8080}\"]\n\
             instances = 3\nenv = { SHARD = \"s{instance}\", FIXED = \"x\" }\n\
             [service.api]\ncommand = [\"/bin/api\"]\nafter = [\"web\"]\n",
        );
        let names: Vec<&str> = p.services.keys().map(ServiceName::as_str).collect();
        assert_eq!(names, ["api", "web@0", "web@1", "web@2"]);
        let second = &p.services[&name("web@1")];
        assert_eq!(second.command, ["/bin/web", "--port", "8081"]);
        assert_eq!(second.env["SHARD"], "s1");
        assert_eq!(second.env["FIXED"], "x");
        assert_eq!(
            second.instance,
            Some(Instance {
                base: name("web"),
                index: 1,
            })
        );
        assert_eq!(
            p.services[&name("api")].after,
            [name("web@0"), name("web@1"), name("web@2")]
        );
    }

    #[test]
    fn one_instance_keeps_the_plain_name_and_fills_in_zero() {
        let p = plan("[service.web]\ncommand = [\"/bin/web\", \"{instance}\"]\ninstances = 1\n");
        let web = &p.services[&name("web")];
        assert_eq!(web.command, ["/bin/web", "0"]);
        assert_eq!(web.instance.as_ref().map(|i| i.index), Some(0));
    }

    #[test]
    fn without_instances_braces_reach_the_program_unchanged() {
        let p = plan("[service.web]\ncommand = [\"/bin/web\", \"{instance}\"]\n");
        let web = &p.services[&name("web")];
        assert_eq!(web.command, ["/bin/web", "{instance}"]);
        assert_eq!(web.instance, None);
    }

    #[test]
    fn bad_counts_placeholders_and_names_are_problems() {
        for bad in ["0", "-2", "257", "100000000000"] {
            let src = format!("[service.web]\ncommand = [\"/bin/web\"]\ninstances = {bad}\n");
            let found = problems(&src);
            assert_eq!(found.len(), 1, "instances = {bad}: {found:?}");
            assert!(
                found[0].message().contains("between 1 and 256"),
                "{found:?}"
            );
        }
        let typo = problems("[service.web]\ncommand = [\"/bin/{instances}\"]\ninstances = 2\n");
        assert!(
            typo[0]
                .message()
                .contains("unknown placeholder `{instances}`")
        );
        let huge = problems(
            "[service.web]\ncommand = [\"/bin/web\", \"{instance + 18446744073709551615}\"]\ninstances = 2\n",
        );
        assert_eq!(huge.len(), 1, "{huge:?}");
        assert!(
            huge[0].message().contains("too large for instance 1"),
            "{huge:?}"
        );
        let at = problems("[service.\"web@1\"]\ncommand = [\"/bin/web\"]\n");
        assert!(at[0].message().contains("`@` marks an instance"), "{at:?}");
        let ready = problems(
            "[service.web]\ncommand = [\"/bin/web\"]\ninstances = 2\nready = { tcp = \"127.0.0.1:1\" }\n",
        );
        assert!(
            ready[0].message().contains("waits for one address"),
            "{ready:?}"
        );
    }

    #[test]
    fn ready_health_with_a_probe_at_one_address_is_refused_for_several_instances() {
        for probe in [
            "http = \"http://127.0.0.1:8080/health\"",
            "tcp = \"127.0.0.1:8080\"",
        ] {
            let src = format!(
                "[service.web]\ncommand = [\"/bin/web\"]\ninstances = 2\nready = \"health\"\n\
                 [service.web.health]\n{probe}\n"
            );
            let found = problems(&src);
            assert_eq!(found.len(), 1, "{probe}: {found:?}");
            assert!(
                found[0].message().contains("waits for one address"),
                "{found:?}"
            );
        }
        // An exec probe runs per copy (and sees HOLDFAST_INSTANCE); one copy has the
        // address to itself.
        plan(
            "[service.web]\ncommand = [\"/bin/web\"]\ninstances = 2\nready = \"health\"\n\
             [service.web.health]\nexec = [\"/bin/check\"]\n",
        );
        plan(
            "[service.web]\ncommand = [\"/bin/web\"]\ninstances = 1\nready = \"health\"\n\
             [service.web.health]\ntcp = \"127.0.0.1:8080\"\n",
        );
    }
}
