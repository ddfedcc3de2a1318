//! Validation of `[service.X.health]`.
//!
//! Same rules as the rest of `validate`: every problem is recorded at its span with a
//! hint, and a default stands in so the other checks still run.

use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use serde_spanned::Spanned;

use super::scalars::Count;
use super::{Validator, upgrade};
use crate::config::diagnostic::{Problem, choice_help};
use crate::config::raw::{RawHealth, RawThreshold};
use crate::model::{DecaySpec, HealthSpec, Probe, Threshold, UnhealthyAction, defaults};

const UNHEALTHY_ACTIONS: [&str; 2] = ["restart", "none"];

/// Probing more often than this costs CPU and tells nothing more.
const MIN_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl Validator<'_> {
    pub(super) fn health(&mut self, svc: &str, raw: &Spanned<RawHealth>) -> Option<HealthSpec> {
        let span = raw.span();
        let raw = raw.get_ref();
        let probe = self.probe(svc, raw, span.clone());
        let (interval, timeout) = self.probe_timing(svc, raw);
        let decay = self.decay(svc, raw, span);
        let unhealthy_action = self.unhealthy_action(svc, raw);
        Some(HealthSpec {
            probe: probe?,
            interval,
            timeout,
            decay,
            unhealthy_action,
        })
    }

    /// `interval` and `timeout`: one probe at a time, at most ten a second.
    fn probe_timing(&mut self, svc: &str, raw: &RawHealth) -> (Duration, Duration) {
        let interval = self.duration(
            raw.interval.as_ref(),
            svc,
            "health.interval",
            defaults::HEALTH_INTERVAL,
        );
        if let (true, Some(at)) = (interval < MIN_PROBE_INTERVAL, &raw.interval) {
            self.push(
                Problem::new(
                    format!(
                        "`service.{svc}.health.interval` must be at least {}",
                        humantime::format_duration(MIN_PROBE_INTERVAL)
                    ),
                    at.span(),
                    "too often",
                )
                .with_help(
                    "probe e.g. every \"5s\"; more than 10 probes a second tell nothing more",
                ),
            );
        }
        let timeout = self.nonzero_duration(
            raw.timeout.as_ref(),
            svc,
            "health.timeout",
            defaults::HEALTH_TIMEOUT.min(interval),
            "give the probe time to answer, e.g. \"2s\"",
        );
        // A zero timeout is reported above and is never longer than the interval.
        if timeout > interval && !interval.is_zero() {
            // Point at whichever of the two the user wrote.
            let at = raw
                .timeout
                .as_ref()
                .map(Spanned::span)
                .or_else(|| raw.interval.as_ref().map(Spanned::span));
            if let Some(at) = at {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.health.timeout` is longer than its interval"),
                        at,
                        format!(
                            "timeout {} > interval {}",
                            humantime::format_duration(timeout),
                            humantime::format_duration(interval)
                        ),
                    )
                    .with_help("one probe at a time: make the timeout at most the interval"),
                );
            }
        }
        (interval, timeout)
    }

    /// `grace`, `degraded`, `unhealthy` and `recover`: how probe results become a state.
    fn decay(&mut self, svc: &str, raw: &RawHealth, span: Range<usize>) -> DecaySpec {
        let grace = self.duration(
            raw.grace.as_ref(),
            svc,
            "health.grace",
            defaults::HEALTH_GRACE,
        );

        let degraded = self.threshold(
            svc,
            "degraded",
            raw.degraded.as_ref(),
            defaults::DEGRADED_FAILURES,
            defaults::DEGRADED_WITHIN,
        );
        let unhealthy = self.threshold(
            svc,
            "unhealthy",
            raw.unhealthy.as_ref(),
            defaults::UNHEALTHY_FAILURES,
            defaults::UNHEALTHY_WITHIN,
        );
        if unhealthy.failures < degraded.failures {
            let at = raw
                .unhealthy
                .as_ref()
                .and_then(|u| u.get_ref().failures.as_ref().map(Spanned::span))
                .or_else(|| {
                    raw.degraded
                        .as_ref()
                        .and_then(|d| d.get_ref().failures.as_ref().map(Spanned::span))
                })
                .unwrap_or(span);
            self.push(
                Problem::new(
                    format!(
                        "`service.{svc}.health.unhealthy.failures` is below `degraded.failures`"
                    ),
                    at,
                    format!("{} < {}", unhealthy.failures, degraded.failures),
                )
                .with_help("UNHEALTHY is worse than DEGRADED: it needs at least as many failures"),
            );
        }
        let recover_successes = self.at_least_one(
            raw.recover
                .as_ref()
                .and_then(|r| r.get_ref().successes.as_ref()),
            svc,
            "health.recover.successes",
            defaults::RECOVER_SUCCESSES,
            Count {
                zero: "zero",
                help: "use e.g. 3: that many consecutive successes bring the state back to OK",
            },
        );
        DecaySpec {
            grace,
            degraded,
            unhealthy,
            recover_successes,
        }
    }

    fn probe(&mut self, svc: &str, raw: &RawHealth, span: Range<usize>) -> Option<Probe> {
        if !self.exactly_one_probe(svc, raw, span) {
            return None;
        }
        if raw.http.is_none() {
            for (key, at) in [
                ("status", raw.status.as_ref().map(Spanned::span)),
                ("body", raw.body.as_ref().map(Spanned::span)),
            ] {
                if let Some(at) = at {
                    self.push(
                        Problem::new(
                            format!("`service.{svc}.health.{key}` only applies to http probes"),
                            at,
                            "not an http probe",
                        )
                        .with_help(format!("remove `{key}`")),
                    );
                }
            }
        }
        if let Some(url) = &raw.http {
            return self.http_probe(svc, raw, url);
        }
        if let Some(address) = &raw.tcp {
            return self.tcp_probe(svc, address);
        }
        let exec = raw.exec.as_ref().expect("exactly one probe is given");
        let command = self.command_array(
            &format!("service.{svc}.health.exec"),
            "exec",
            exec,
            "[\"/bin/check\", \"--quick\"]",
        )?;
        Some(Probe::Exec { command })
    }

    /// One of `http`, `tcp` and `exec`, reported at the second when there are more.
    fn exactly_one_probe(&mut self, svc: &str, raw: &RawHealth, span: Range<usize>) -> bool {
        let given: Vec<(&str, Range<usize>)> = [
            raw.http.as_ref().map(|h| ("http", h.span())),
            raw.tcp.as_ref().map(|t| ("tcp", t.span())),
            raw.exec.as_ref().map(|e| ("exec", e.span())),
        ]
        .into_iter()
        .flatten()
        .collect();
        match given.as_slice() {
            [] => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.health` has no probe"),
                        span,
                        "missing http, tcp or exec",
                    )
                    .with_help(
                        "add one: http = \"http://127.0.0.1:8080/health\", tcp = \"127.0.0.1:8080\" or exec = [\"/bin/check\"]",
                    ),
                );
                false
            }
            [_] => true,
            [(first, _), (second, at), ..] => {
                self.push(
                    Problem::new(
                        format!("`service.{svc}.health` has more than one probe"),
                        at.clone(),
                        format!("`{second}` as well as `{first}`"),
                    )
                    .with_help("keep exactly one of http, tcp and exec"),
                );
                false
            }
        }
    }

    fn http_probe(&mut self, svc: &str, raw: &RawHealth, url: &Spanned<String>) -> Option<Probe> {
        let status = match &raw.status {
            None => 200..=399,
            Some(text) => self.status_range(svc, text).unwrap_or(200..=399),
        };
        let (authority, path) = self.http_url(svc, url)?;
        Some(Probe::Http {
            url: upgrade::with_private_port(url.get_ref()).into_owned(),
            authority,
            path,
            status,
            body: raw.body.as_ref().map(|b| b.get_ref().clone()),
        })
    }

    fn tcp_probe(&mut self, svc: &str, address: &Spanned<String>) -> Option<Probe> {
        let text = upgrade::with_private_port(address.get_ref());
        // Port 0 only as `{port}`, the proxied run's private port.
        let private = address.get_ref().contains(upgrade::PORT);
        let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0 || private)
        });
        if !valid {
            self.push(
                Problem::new(
                    format!("invalid address in `service.{svc}.health.tcp`"),
                    address.span(),
                    "not host:port",
                )
                .with_help("write a host and a port, e.g. \"127.0.0.1:8080\""),
            );
            return None;
        }
        Some(Probe::Tcp {
            address: text.into_owned(),
        })
    }

    /// `http://host[:port][/path]` → (`host:port`, `/path`).
    fn http_url(&mut self, svc: &str, url: &Spanned<String>) -> Option<(String, String)> {
        let problem = |label: &str, help: &str| {
            Problem::new(
                format!("invalid URL in `service.{svc}.health.http`"),
                url.span(),
                label,
            )
            .with_help(help.to_owned())
        };
        let uri: hyper::Uri = match upgrade::with_private_port(url.get_ref()).parse() {
            Ok(uri) => uri,
            Err(e) => {
                self.push(problem(
                    &e.to_string(),
                    "write a URL such as \"http://127.0.0.1:8080/health\"",
                ));
                return None;
            }
        };
        if uri.scheme_str() != Some("http") {
            self.push(problem(
                "only http:// is supported",
                "probe plain HTTP, or use exec = [\"curl\", \"-fsS\", \"https://...\"] for TLS",
            ));
            return None;
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            self.push(problem(
                "no host",
                "write a URL such as \"http://127.0.0.1:8080/health\"",
            ));
            return None;
        };
        // `Uri::port` is `None` both without a port and with one that is no u16.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let after_host = authority
            .rsplit_once(']')
            .map_or(authority, |(_, rest)| rest);
        let written = after_host.rsplit_once(':').map(|(_, port)| port);
        let port = match (written, uri.port_u16()) {
            (_, Some(port)) => port,
            (None, None) => 80,
            (Some(port), None) => {
                self.push(problem(
                    "port out of range",
                    &format!("{port} is no TCP port: use 1-65535"),
                ));
                return None;
            }
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        Some((format!("{host}:{port}"), path))
    }

    /// `"200-399"` or `"200"`.
    fn status_range(&mut self, svc: &str, raw: &Spanned<String>) -> Option<RangeInclusive<u16>> {
        let text = raw.get_ref().trim();
        let (low, high) = text.split_once('-').unwrap_or((text, text));
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        match (parse(low), parse(high)) {
            (Some(low), Some(high)) if low <= high => Some(low..=high),
            _ => {
                self.push(
                    Problem::new(
                        format!("invalid `service.{svc}.health.status`"),
                        raw.span(),
                        "not a status range",
                    )
                    .with_help("write one status or a range of statuses (100-599), e.g. \"200-399\" or \"204\""),
                );
                None
            }
        }
    }

    fn threshold(
        &mut self,
        svc: &str,
        key: &str,
        raw: Option<&Spanned<RawThreshold>>,
        failures: u32,
        within: Duration,
    ) -> Threshold {
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return Threshold { failures, within };
        };
        let failures = self.at_least_one(
            raw.failures.as_ref(),
            svc,
            &format!("health.{key}.failures"),
            failures,
            Count {
                zero: "zero",
                help: &format!("the default is {failures}"),
            },
        );
        let within = self.nonzero_duration(
            raw.within.as_ref(),
            svc,
            &format!("health.{key}.within"),
            within,
            "failures are counted within this sliding window, e.g. \"60s\"",
        );
        Threshold { failures, within }
    }

    /// `unhealthy.action`; `degraded` takes none.
    fn unhealthy_action(&mut self, svc: &str, raw: &RawHealth) -> UnhealthyAction {
        if let Some(action) = raw
            .degraded
            .as_ref()
            .and_then(|d| d.get_ref().action.as_ref())
        {
            self.push(
                Problem::new(
                    format!("`service.{svc}.health.degraded` has no `action`"),
                    action.span(),
                    "not allowed here",
                )
                .with_help("DEGRADED is reported only; set the action on `unhealthy`"),
            );
        }
        let Some(action) = raw
            .unhealthy
            .as_ref()
            .and_then(|u| u.get_ref().action.as_ref())
        else {
            return UnhealthyAction::Restart;
        };
        match action.get_ref().as_str() {
            "restart" => UnhealthyAction::Restart,
            "none" => UnhealthyAction::None,
            other => {
                self.push(
                    Problem::new(
                        format!("unknown action {other:?} in `service.{svc}.health.unhealthy`"),
                        action.span(),
                        "unknown action",
                    )
                    .with_help(choice_help(
                        other,
                        &UNHEALTHY_ACTIONS,
                        "valid actions",
                    )),
                );
                UnhealthyAction::Restart
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{plan, problems, snippet};

    use crate::model::{Probe, ServiceName, UnhealthyAction};

    const CMD: &str = "[service.api]\ncommand = [\"/bin/api\"]\n";

    #[test]
    fn a_health_table_with_every_key_is_converted_to_the_model() {
        let src = format!(
            "{CMD}[service.api.health]\nhttp = \"http://localhost:8080/health?deep=1\"\nstatus = \"200-204\"\nbody = \"ok\"\ninterval = \"1s\"\ntimeout = \"500ms\"\ngrace = \"10s\"\ndegraded = {{ failures = 3, within = \"30s\" }}\nunhealthy = {{ failures = 5, within = \"60s\", action = \"none\" }}\nrecover = {{ successes = 2 }}\n"
        );
        let plan = plan(&src);
        let health = plan.services[&ServiceName::new("api").unwrap()]
            .health
            .clone()
            .expect("health is set");
        assert_eq!(
            health.probe,
            Probe::Http {
                url: "http://localhost:8080/health?deep=1".to_owned(),
                authority: "localhost:8080".to_owned(),
                path: "/health?deep=1".to_owned(),
                status: 200..=204,
                body: Some("ok".to_owned()),
            }
        );
        assert_eq!(health.interval, Duration::from_secs(1));
        assert_eq!(health.timeout, Duration::from_millis(500));
        assert_eq!(health.decay.grace, Duration::from_secs(10));
        assert_eq!(health.decay.degraded.failures, 3);
        assert_eq!(health.decay.unhealthy.within, Duration::from_secs(60));
        assert_eq!(health.decay.recover_successes, 2);
        assert_eq!(health.unhealthy_action, UnhealthyAction::None);
    }

    #[test]
    fn health_defaults_follow_the_documentation() {
        let plain = plan(&format!(
            "{CMD}[service.api.health]\ntcp = \"127.0.0.1:80\"\n"
        ));
        let health = plain.services[&ServiceName::new("api").unwrap()]
            .health
            .clone()
            .expect("health is set");
        assert_eq!(health.interval, Duration::from_secs(5));
        assert_eq!(health.timeout, Duration::from_secs(2));
        assert_eq!(health.decay.degraded.failures, 2);
        assert_eq!(health.decay.degraded.within, Duration::from_secs(60));
        assert_eq!(health.decay.unhealthy.failures, 4);
        assert_eq!(health.decay.unhealthy.within, Duration::from_secs(120));
        assert_eq!(health.decay.recover_successes, 3);
        assert_eq!(health.unhealthy_action, UnhealthyAction::Restart);
        // A short interval caps the default timeout.
        let short = plan(&format!(
            "{CMD}[service.api.health]\ntcp = \"127.0.0.1:80\"\ninterval = \"200ms\"\n"
        ));
        let health = short.services[&ServiceName::new("api").unwrap()]
            .health
            .clone()
            .unwrap();
        assert_eq!(health.timeout, Duration::from_millis(200));
    }

    #[test]
    fn health_problems_point_at_the_offending_value() {
        let src =
            format!("{CMD}[service.api.health]\nhttp = \"https://x/health\"\ntcp = \"x:1\"\n");
        let all = problems(&src);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(
            snippet(&src, &all[0]),
            "\"x:1\"",
            "the second probe is the problem"
        );

        let src = format!("{CMD}[service.api.health]\nhttp = \"https://x/health\"\n");
        let all = problems(&src);
        assert!(all[0].to_string().contains("invalid URL"), "{all:#?}");

        let src = format!(
            "{CMD}[service.api.health]\ntcp = \"localhost\"\ntimeout = \"10s\"\nstatus = \"200\"\nunhealthy = {{ failures = 1 }}\nrecover = {{ successes = 0 }}\n"
        );
        let all = problems(&src);
        let snippets: Vec<&str> = all.iter().map(|p| snippet(&src, p)).collect();
        assert_eq!(
            snippets,
            vec!["\"localhost\"", "\"10s\"", "\"200\"", "1", "0"],
            "{all:#?}"
        );
    }

    #[test]
    fn a_port_out_of_range_and_a_probe_storm_are_rejected() {
        // Found in review: :99999 probed port 80, and "1ns" probed as fast as it could.
        for url in ["http://127.0.0.1:99999/", "http://[::1]:70000/health"] {
            let src = format!("{CMD}[service.api.health]\nhttp = \"{url}\"\n");
            let all = problems(&src);
            assert_eq!(all.len(), 1, "{all:#?}");
            assert!(all[0].label().contains("port out of range"), "{all:#?}");
        }
        let src = format!(
            "{CMD}[service.api.health]\ntcp = \"127.0.0.1:1\"\ninterval = \"1ns\"\ntimeout = \"1ns\"\n"
        );
        let all = problems(&src);
        assert_eq!(snippet(&src, &all[0]), "\"1ns\"", "{all:#?}");
        assert!(all[0].to_string().contains("at least 100ms"), "{all:#?}");
    }

    #[test]
    fn an_exec_probe_is_checked_like_a_command() {
        let src = format!("{CMD}[service.api.health]\nexec = \"/bin/check --quick\"\n");
        let all = problems(&src);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(
            all[0].message(),
            "`service.api.health.exec` must be an array"
        );
        assert_eq!(
            all[0].help(),
            Some(
                "write exec = [\"/bin/check\", \"--quick\"]: holdfast runs no shell, so each argument is its own string"
            )
        );
        let src = format!("{CMD}[service.api.health]\nexec = [\"/bin/check\", \"a\\u0000b\"]\n");
        let all = problems(&src);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert_eq!(
            all[0].message(),
            "`service.api.health.exec` has an argument containing NUL"
        );
    }
}
