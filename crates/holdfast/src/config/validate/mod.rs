//! Raw config → [`Plan`]: every rule that serde cannot express.
//!
//! Validation never stops at the first problem: each check records a [`Problem`] at the
//! offending value and carries on with a default, so one run reports everything. The
//! returned plan is only meaningful when no problems were recorded.
//!
//! Every part is an `impl` [`Validator`] block in its own submodule, one per group of
//! keys ([`daemon`], [`service`], [`command`], [`after`], [`restart`], [`log`],
//! [`privs`], [`readiness`], [`recovery`] for health, [`exit_codes`], [`hooks`],
//! [`upgrade`] for `listen` and `[service.X.upgrade]`); the
//! rules many keys share (durations, counts, sizes, paths) are in [`scalars`]. [`host`]
//! and [`ports`] judge validated specs and return their problems.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

mod after;
mod command;
mod daemon;
mod exit_codes;
mod hooks;
pub mod host;
pub mod instances;
mod log;
mod managed;
mod ports;
mod privs;
mod readiness;
mod recovery;
mod restart;
mod scalars;
mod service;
pub(super) mod trust;
mod upgrade;

use super::diagnostic::Problem;
use super::raw::RawConfig;
use crate::model::{LogForward, Plan, ServiceName, ServiceSpec};

/// Checks `raw` and builds the plan, appending every problem found to `problems`. With
/// `host`, also checks what would fail at spawn on that machine ([`host`]). Also
/// returns the spec of each instanced service before it was expanded: `command` and
/// `env` with their `{instance}` placeholders, by base name (for `holdfast gen`).
pub fn validate_keeping_templates(
    raw: RawConfig,
    base_dir: &Path,
    host: Option<&dyn host::HostFacts>,
    problems: &mut Vec<Problem>,
) -> (Plan, Templates) {
    let raw_daemon = raw.daemon.map(|d| d.value).unwrap_or_default();
    let log_forward = match raw_daemon.log_journald {
        Some(true) => LogForward::Journald,
        Some(false) | None => LogForward::FileOnly,
    };
    let mut v = Validator {
        problems,
        log_forward,
    };
    let daemon = v.daemon(raw_daemon, base_dir);

    // Every declared name counts as existing, even if its table had errors, so a typo in
    // one service does not also produce "unknown service" errors in the others.
    let declared: BTreeSet<&str> = raw
        .services
        .iter()
        .map(|s| s.name.get_ref().as_str())
        .collect();
    let mut services = BTreeMap::new();
    let mut edges = Vec::new();
    for entry in &raw.services {
        let name = v.service_name(&entry.name);
        let Some(body) = &entry.body else { continue };
        let spec = v.service(&entry.name, name.clone(), body, &declared, &mut edges);
        if let (Some(name), Some(spec)) = (name, spec) {
            services.insert(name, spec);
        }
    }
    v.cycles(&edges);
    v.ready_ports(&raw.services, &services);
    v.problems.extend(upgrade::shared_addresses(&raw.services));
    if let Some(host) = host {
        for entry in &raw.services {
            let (Some(body), Ok(name)) = (&entry.body, ServiceName::new(entry.name.get_ref()))
            else {
                continue;
            };
            if let Some(spec) = services.get_mut(&name) {
                host::check_service(
                    name.as_str(),
                    &body.value,
                    spec,
                    &daemon.pass_env,
                    host,
                    v.problems,
                );
            }
        }
    }
    let counts = instances::counts(&raw.services, v.problems);
    let templates = services
        .iter()
        .filter(|(name, _)| counts.contains_key(name.as_str()))
        .map(|(name, spec)| (name.clone(), spec.clone()))
        .collect();
    let services = instances::expand(services, &counts);
    (Plan { daemon, services }, templates)
}

/// Instanced services as written, by base name (see [`validate_keeping_templates`]).
pub type Templates = BTreeMap<ServiceName, ServiceSpec>;

/// Collects the problems of one file. Every check reports the same way:
/// `self.push(Problem::new(message, span, label).with_help(hint))`.
struct Validator<'p> {
    problems: &'p mut Vec<Problem>,
    /// Where services' lines go unless their `log.journald` says (`[holdfast]
    /// log_journald`).
    log_forward: LogForward,
}

impl Validator<'_> {
    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Two services may not wait for the same readiness port ([`ports`]).
    fn ready_ports(
        &mut self,
        raw: &[super::raw::RawServiceEntry],
        services: &BTreeMap<ServiceName, ServiceSpec>,
    ) {
        let claims = raw
            .iter()
            .filter_map(|entry| {
                let span = entry.body.as_ref()?.value.ready.as_ref()?.span();
                let name = ServiceName::new(entry.name.get_ref()).ok()?;
                let (svc, spec) = services.get_key_value(&name)?;
                // Port 0: the private port of each proxied run, never shared.
                let addr = ports::ready_addr(&spec.ready).filter(|a| a.port() != 0)?;
                Some(ports::Claim {
                    svc: svc.as_str(),
                    addr,
                    span,
                })
            })
            .collect();
        self.problems.extend(ports::duplicates(claims));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::unix::Signal;

    use crate::config::{Problem, parse};
    use crate::model::{Backoff, Plan, RestartPolicy, ServiceName, ServiceSpec, defaults};

    /// Shared with the tests of the submodules (`recovery`).
    pub(super) fn plan(src: &str) -> Plan {
        parse(src, "test.toml", Path::new("/etc/holdfast"))
            .unwrap_or_else(|err| panic!("config should be valid:\n{}", err.render_plain()))
    }

    pub(super) fn problems(src: &str) -> Vec<Problem> {
        parse(src, "test.toml", Path::new("/etc/holdfast"))
            .expect_err("config should be rejected")
            .problems()
            .to_vec()
    }

    fn only_problem(src: &str) -> Problem {
        let mut all = problems(src);
        assert_eq!(all.len(), 1, "exactly one problem expected: {all:#?}");
        all.remove(0)
    }

    fn service<'p>(plan: &'p Plan, name: &str) -> &'p ServiceSpec {
        &plan.services[&ServiceName::new(name).expect("test names are valid")]
    }

    /// The text the problem's span points at.
    pub(super) fn snippet<'s>(src: &'s str, problem: &Problem) -> &'s str {
        &src[problem.span().expect("problems carry a span")]
    }

    #[test]
    fn a_service_with_only_a_command_gets_the_documented_defaults() {
        let plan = plan("[service.web]\ncommand = [\"/bin/web\"]\n");
        let expected =
            ServiceSpec::with_defaults(ServiceName::new("web").unwrap(), vec!["/bin/web".into()]);
        assert_eq!(service(&plan, "web"), &expected);
        assert_eq!(plan.daemon.control, Path::new(defaults::CONTROL));
        assert_eq!(plan.daemon.state_dir, Path::new(defaults::STATE_DIR));
        assert_eq!(plan.daemon.log_dir, Path::new(defaults::LOG_DIR));
        assert_eq!(plan.daemon.control_group, None);
    }

    #[test]
    fn every_field_is_converted_to_the_model() {
        let plan = plan(
            r#"
            [service.db]
            command = ["/bin/db"]
            [service.api]
            command = ["/bin/api", "--port", "8080"]
            env = { DB_HOST = "db1" }
            working_dir = "/srv/api"
            after = ["db", "db"]
            autostart = false
            restart = "always"
            restart_sec = "250ms"
            backoff = { max = "30s", factor = 3, jitter = 0.2 }
            start_limit = { interval = "1m", burst = 2 }
            start_secs = "2s"
            stop = { signal = "sigint", timeout = "5s" }
            log = { max_size = "1MiB", keep = 2 }
            "#,
        );
        let api = service(&plan, "api");
        assert_eq!(api.command, ["/bin/api", "--port", "8080"]);
        assert_eq!(api.env.get("DB_HOST").map(String::as_str), Some("db1"));
        assert_eq!(api.working_dir.as_deref(), Some(Path::new("/srv/api")));
        assert_eq!(
            api.after,
            [ServiceName::new("db").unwrap()],
            "duplicates are dropped"
        );
        assert!(!api.autostart);
        assert_eq!(api.restart, RestartPolicy::Always);
        assert_eq!(
            api.backoff,
            Backoff::Exponential {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(30),
                factor: 3.0,
                jitter: 0.2,
                reset_after: defaults::BACKOFF_RESET_AFTER,
            }
        );
        assert_eq!(api.start_limit.interval, Duration::from_secs(60));
        assert_eq!(api.start_limit.burst, 2);
        assert_eq!(api.start_secs, Duration::from_secs(2));
        assert_eq!(api.stop.signal, Signal::SIGINT);
        assert_eq!(
            api.stop.timeout,
            crate::model::Timeout::After(Duration::from_secs(5))
        );
        assert_eq!(api.log.max_size, 1 << 20);
        assert_eq!(api.log.keep, 2);
    }

    #[test]
    fn start_secs_defaults_to_zero_with_a_ready_mode_and_an_explicit_one_applies() {
        let plan = plan(
            "[service.plain]\ncommand = [\"a\"]\n\
             [service.notify]\ncommand = [\"a\"]\nready = \"notify\"\n\
             [service.tcp]\ncommand = [\"a\"]\nready = { tcp = \"127.0.0.1:80\" }\n\
             [service.slow]\ncommand = [\"a\"]\nready = \"notify\"\nstart_secs = \"3s\"\n",
        );
        assert_eq!(service(&plan, "plain").start_secs, Duration::from_secs(1));
        assert_eq!(service(&plan, "notify").start_secs, Duration::ZERO);
        assert_eq!(service(&plan, "tcp").start_secs, Duration::ZERO);
        assert_eq!(service(&plan, "slow").start_secs, Duration::from_secs(3));
    }

    #[test]
    fn an_empty_backoff_table_selects_exponential_backoff_with_defaults() {
        let plan = plan("[service.a]\ncommand = [\"a\"]\nrestart_sec = \"1s\"\nbackoff = {}\n");
        assert_eq!(
            service(&plan, "a").backoff,
            Backoff::Exponential {
                initial: Duration::from_secs(1),
                max: defaults::BACKOFF_MAX,
                factor: defaults::BACKOFF_FACTOR,
                jitter: defaults::BACKOFF_JITTER,
                reset_after: defaults::BACKOFF_RESET_AFTER,
            }
        );
    }

    #[test]
    fn relative_daemon_paths_resolve_against_the_config_directory() {
        let plan = plan(
            "[holdfast]\ncontrol = \"run/ctl.sock\"\nstate_dir = \"/abs/state\"\nlog_dir = \"logs\"\n",
        );
        assert_eq!(plan.daemon.control, Path::new("/etc/holdfast/run/ctl.sock"));
        assert_eq!(plan.daemon.state_dir, Path::new("/abs/state"));
        assert_eq!(plan.daemon.log_dir, Path::new("/etc/holdfast/logs"));
    }

    #[test]
    fn control_group_is_resolved_to_its_gid() {
        let plan = plan("[holdfast]\ncontrol_group = \"root\"\n");
        let group = plan.daemon.control_group.expect("root group exists");
        assert_eq!((group.name.as_str(), group.gid), ("root", 0));
    }

    #[test]
    fn an_unknown_control_group_is_reported_at_its_value() {
        let src = "[holdfast]\ncontrol_group = \"no-such-group-here\"\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "\"no-such-group-here\"");
        assert!(problem.message().contains("unknown group"), "{problem:?}");
    }

    #[test]
    fn log_journald_in_holdfast_is_every_services_default_and_a_service_may_say_otherwise() {
        use crate::model::LogForward;
        let src = "[holdfast]\nlog_journald = true\n\n[service.a]\ncommand = [\"a\"]\n\n\
                   [service.b]\ncommand = [\"b\"]\nlog.journald = false\n\n\
                   [service.c]\ncommand = [\"c\"]\nlog.keep = 2\n";
        let defaulted = plan(src);
        let forward = |name: &str| service(&defaulted, name).log.forward;
        assert_eq!(forward("a"), LogForward::Journald);
        assert_eq!(forward("b"), LogForward::FileOnly);
        assert_eq!(forward("c"), LogForward::Journald);
        let plain = plan("[service.a]\ncommand = [\"a\"]\n");
        assert_eq!(service(&plain, "a").log.forward, LogForward::FileOnly);
    }

    #[test]
    fn the_http_server_is_off_unless_an_address_is_written() {
        assert_eq!(plan("").daemon.http, None);
        let plan = plan("[holdfast]\nhttp = \"0.0.0.0:9700\"\n");
        assert_eq!(
            plan.daemon.http,
            Some("0.0.0.0:9700".parse().expect("an address"))
        );
    }

    #[test]
    fn an_http_port_alone_is_on_loopback_and_an_address_is_taken_as_written() {
        let http = |value: &str| plan(&format!("[holdfast]\nhttp = {value:?}\n")).daemon.http;
        let on = |text: &str| Some(text.parse().expect("an address"));
        assert_eq!(http(":9700"), on("127.0.0.1:9700"));
        assert_eq!(http("9700"), on("127.0.0.1:9700"));
        assert_eq!(http("0.0.0.0:9700"), on("0.0.0.0:9700"));
        assert_eq!(http("[::1]:9700"), on("[::1]:9700"));
        // No name is resolved.
        let src = "[holdfast]\nhttp = \"localhost:9700\"\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "\"localhost:9700\"");
        assert!(
            problem
                .message()
                .contains("invalid address \"localhost:9700\""),
            "{problem:?}"
        );
    }

    #[test]
    fn an_http_address_without_a_port_is_reported_at_its_value() {
        let src = "[holdfast]\nhttp = \"localhost\"\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "\"localhost\"");
        assert!(
            problem.help().is_some_and(|h| h.contains("\":9700\"")),
            "{problem:?}"
        );
    }

    #[test]
    fn an_admin_group_is_resolved_and_needs_a_control_group() {
        let plan = plan("[holdfast]\ncontrol_group = \"root\"\nadmin_group = \"root\"\n");
        assert_eq!(plan.daemon.admin_group.map(|g| g.gid), Some(0));
        let src = "[holdfast]\nadmin_group = \"root\"\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "\"root\"");
        assert!(
            problem.help().is_some_and(|h| h.contains("set it too")),
            "{problem:?}"
        );
    }

    #[test]
    fn a_zero_burst_is_rejected_with_a_hint_to_disable_restarts() {
        let src = "[service.a]\ncommand = [\"a\"]\nstart_limit = { burst = 0 }\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "0");
        assert_eq!(
            problem.help(),
            Some("use restart = \"no\" to never restart")
        );
    }

    #[test]
    fn a_zero_start_limit_interval_and_stop_timeout_are_rejected() {
        let src = "[service.a]\ncommand = [\"a\"]\nstart_limit = { interval = \"0s\" }\nstop = { timeout = \"0s\" }\n";
        assert_eq!(problems(src).len(), 2);
    }

    #[test]
    fn a_bare_integer_duration_gets_a_hint_with_a_unit() {
        let src = "[service.a]\ncommand = [\"a\"]\nrestart_sec = 5\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "5");
        assert_eq!(
            problem.help(),
            Some("write \"5s\" (or another unit: ms, s, m, h)")
        );
    }

    #[test]
    fn a_command_written_as_a_string_gets_the_array_form_as_a_hint() {
        let src = "[service.a]\ncommand = \"/bin/server --port 80\"\n";
        let problem = only_problem(src);
        let help = problem.help().expect("a hint");
        assert!(
            help.starts_with(r#"write command = ["/bin/server", "--port", "80"]"#),
            "{help}"
        );
    }

    #[test]
    fn missing_and_empty_commands_are_rejected() {
        let src = "[service.a]\nautostart = true\n[service.b]\ncommand = []\n[service.c]\ncommand = [\"\"]\n";
        let all = problems(src);
        assert_eq!(all.len(), 3, "{all:#?}");
        assert_eq!(
            snippet(src, &all[0]),
            "a",
            "a missing command points at the service name"
        );
        assert_eq!(snippet(src, &all[1]), "[]");
        assert_eq!(snippet(src, &all[2]), "\"\"");
    }

    #[test]
    fn after_targets_must_exist_and_not_be_the_service_itself() {
        let src = "[service.web]\ncommand = [\"w\"]\nafter = [\"web\", \"dbb\"]\n[service.db]\ncommand = [\"d\"]\n";
        let all = problems(src);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(all[0].message().contains("lists itself"), "{:?}", all[0]);
        assert_eq!(snippet(src, &all[1]), "\"dbb\"");
        assert!(
            all[1].help().unwrap().contains("did you mean \"db\""),
            "{:?}",
            all[1]
        );
    }

    #[test]
    fn a_dependency_cycle_is_reported_once_with_its_path() {
        let src = "[service.a]\ncommand = [\"a\"]\nafter = [\"b\"]\n\
                   [service.b]\ncommand = [\"b\"]\nafter = [\"c\"]\n\
                   [service.c]\ncommand = [\"c\"]\nafter = [\"a\"]\n";
        let problem = only_problem(src);
        assert_eq!(problem.message(), "dependency cycle: a -> b -> c -> a");
        assert_eq!(
            problem.span().map(|s| src[..s.start].lines().count()),
            Some(9),
            "points at c's after entry"
        );
    }

    #[test]
    fn two_separate_cycles_are_both_reported() {
        let src = "[service.a]\ncommand = [\"a\"]\nafter = [\"b\"]\n[service.b]\ncommand = [\"b\"]\nafter = [\"a\"]\n\
                   [service.c]\ncommand = [\"c\"]\nafter = [\"d\"]\n[service.d]\ncommand = [\"d\"]\nafter = [\"c\"]\n";
        let all = problems(src);
        let messages: Vec<&str> = all.iter().map(Problem::message).collect();
        assert_eq!(
            messages,
            [
                "dependency cycle: a -> b -> a",
                "dependency cycle: c -> d -> c"
            ]
        );
    }

    #[test]
    fn backoff_limits_are_checked() {
        let src = "[service.a]\ncommand = [\"a\"]\nrestart_sec = \"2m\"\nbackoff = { factor = 0.5, jitter = 1.0 }\n";
        let all = problems(src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(src, p)).collect();
        assert_eq!(
            snippets,
            ["\"2m\"", "0.5", "1.0"],
            "max (default 60s) < restart_sec points at restart_sec"
        );
    }

    #[test]
    fn restart_policy_typos_get_a_suggestion() {
        let problem = only_problem("[service.a]\ncommand = [\"a\"]\nrestart = \"on_failure\"\n");
        assert!(
            problem
                .help()
                .unwrap()
                .starts_with("did you mean \"on-failure\"?"),
            "{problem:?}"
        );
    }

    #[test]
    fn env_names_must_be_non_empty_and_free_of_equals_signs() {
        let src =
            "[service.a]\ncommand = [\"a\"]\nenv = { \"\" = \"x\", \"A=B\" = \"y\", OK = \"z\" }\n";
        assert_eq!(problems(src).len(), 2);
    }

    #[test]
    fn pass_env_keeps_valid_names_once_and_rejects_holdfasts_private_ones() {
        let plan = plan(
            "[holdfast]\npass_env = [\"HF_TEST\", \"LC_ALL\", \"HF_TEST\"]\n\
             [service.a]\ncommand = [\"a\"]\ninherit_env = true\n",
        );
        assert_eq!(plan.daemon.pass_env, ["HF_TEST", "LC_ALL"]);
        assert!(service(&plan, "a").inherit_env);

        let src = "[holdfast]\npass_env = [\"NOTIFY_SOCKET\"]\n";
        let problem = only_problem(src);
        assert_eq!(
            problem.message(),
            "`NOTIFY_SOCKET` in `holdfast.pass_env` is holdfast's own"
        );
        assert_eq!(snippet(src, &problem), "\"NOTIFY_SOCKET\"");
        assert_eq!(
            problems("[holdfast]\npass_env = [\"\", \"A=B\"]\n").len(),
            2
        );
    }

    #[test]
    fn working_dir_must_be_absolute() {
        let problem = only_problem("[service.a]\ncommand = [\"a\"]\nworking_dir = \"srv\"\n");
        assert!(problem.message().contains("not absolute"), "{problem:?}");
    }

    #[test]
    fn log_sizes_below_four_kib_are_rejected_and_integers_are_bytes() {
        let src = "[service.a]\ncommand = [\"a\"]\nlog = { max_size = 1024 }\n";
        assert_eq!(only_problem(src).label(), "1KiB is below 4KiB");
        let plan = plan("[service.a]\ncommand = [\"a\"]\nlog = { max_size = 4096 }\n");
        assert_eq!(service(&plan, "a").log.max_size, 4096);
    }

    #[test]
    fn a_service_named_all_is_reserved_for_every_service() {
        let problems = problems("[service.all]\ncommand = [\"sleep\", \"1\"]\n");
        assert_eq!(
            problems
                .iter()
                .map(|p| p.message().to_owned())
                .collect::<Vec<_>>(),
            ["the service name \"all\" is reserved"]
        );
    }

    #[test]
    fn a_group_is_read_and_an_invalid_group_name_is_reported_at_its_value() {
        let plan = plan("[service.a]\ncommand = [\"a\"]\nservice_group = \"backend\"\n");
        assert_eq!(service(&plan, "a").group.as_deref(), Some("backend"));
        let src = "[service.a]\ncommand = [\"a\"]\nservice_group = \"@back end\"\n";
        let problem = only_problem(src);
        assert!(
            problem.message().contains("invalid group name"),
            "{problem:?}"
        );
        assert_eq!(snippet(src, &problem), "\"@back end\"");
    }

    #[test]
    fn invalid_service_names_are_reported_at_the_table_key() {
        let src = "[service.\"-bad\"]\ncommand = [\"a\"]\n";
        let problem = only_problem(src);
        assert_eq!(snippet(src, &problem), "\"-bad\"");
    }

    #[test]
    fn unknown_keys_at_every_level_are_reported_together() {
        let src = "servce = 1\n[holdfast]\nstat_dir = \"x\"\n[service.a]\ncommand = [\"a\"]\nrestat = \"no\"\nstop = { sginal = \"INT\" }\n";
        let all = problems(src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(src, p)).collect();
        assert_eq!(snippets, ["servce", "stat_dir", "restat", "sginal"]);
        assert!(
            all.iter()
                .all(|p| p.help().is_some_and(|h| h.starts_with("did you mean"))),
            "{all:#?}"
        );
    }

    #[test]
    fn good_keys_of_a_table_with_a_bad_key_are_still_validated() {
        let src = "[service.a]\ncommand = [\"a\"]\nrestat = \"no\"\nstart_limit = { burst = 0 }\n";
        assert_eq!(problems(src).len(), 2, "the typo and the zero burst");
    }

    #[test]
    fn syntax_errors_are_reported_with_a_span() {
        let src = "[service.a]\ncommand = [\"a\"\n";
        let all = problems(src);
        assert!(!all.is_empty());
        assert!(
            all.iter()
                .all(|p| p.span().is_some() && p.message() == "invalid TOML syntax")
        );
    }

    #[test]
    fn a_service_that_is_not_a_table_is_reported() {
        let problem = only_problem("service = { a = 1 }\n");
        assert_eq!(problem.message(), "`service.a` must be a table");
    }
}
