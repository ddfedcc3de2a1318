//! Validation of who a service runs as and what it may consume: `user`, `group`,
//! `supplementary_groups`, `umask`, `capabilities`, `no_new_privs`, `limits`,
//! `cpu_affinity`, `oom_score_adjust`.
//!
//! Users and groups are resolved here, once, so a typo is a config error with a span
//! rather than a spawn failure at 3 a.m. Like the rest of validation, every problem is
//! recorded and the check carries on with a neutral value.

use std::ffi::CString;
use std::ops::RangeInclusive;

use nix::unistd::{Gid, Group, User};
use serde_spanned::Spanned;

use super::Validator;
use super::scalars::size;
use crate::config::diagnostic::{Problem, closest};
use crate::config::raw::{RawService, RawSize};
use crate::config::value;
use crate::model::{
    CAPABILITY_NAMES, Capability, CgroupLimits, Credentials, Limits, Privileges, Rlimit, UserRef,
};

/// What an rlimit counts: `core`, `memlock` and `stack` take sizes such as "8MiB".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RlimitUnit {
    Count,
    Bytes,
}

/// Whether an unknown Unix group's hint mentions `service_group`, the other kind of group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServiceGroupHint {
    Shown,
    Omitted,
}

/// Highest CPU number `cpu_affinity` accepts (the size of the kernel's default cpu set).
const MAX_CPU: i64 = 1023;

impl Validator<'_> {
    /// `user`, `group`, `supplementary_groups`, `umask`, `capabilities`, `no_new_privs`,
    /// `cpu_affinity` and `oom_score_adjust` of `service.<svc>`.
    pub(super) fn privileges(&mut self, svc: &str, raw: &RawService) -> Privileges {
        Privileges {
            credentials: self.credentials(svc, raw),
            umask: raw.umask.as_ref().and_then(|u| self.umask(svc, u)),
            capabilities: raw
                .capabilities
                .as_ref()
                .map(|caps| self.capabilities(svc, caps)),
            no_new_privs: raw.no_new_privs.unwrap_or(true),
            cpu_affinity: raw
                .cpu_affinity
                .as_ref()
                .map(|cpus| self.cpu_affinity(svc, cpus)),
            oom_score_adjust: raw
                .oom_score_adjust
                .as_ref()
                .and_then(|o| self.oom_score(svc, o)),
        }
    }

    /// `limits = { ... }` of `service.<svc>`, split into rlimits and cgroup limits.
    pub(super) fn limits(&mut self, svc: &str, raw: &RawService) -> (Limits, CgroupLimits) {
        let Some(limits) = &raw.limits else {
            return (Limits::default(), CgroupLimits::default());
        };
        let l = limits.get_ref();
        let mut rlimit = |key, v: &Option<Spanned<RawSize>>, unit| {
            v.as_ref().and_then(|v| self.rlimit(svc, key, v, unit))
        };
        let rlimits = Limits {
            nofile: rlimit("nofile", &l.nofile, RlimitUnit::Count),
            nproc: rlimit("nproc", &l.nproc, RlimitUnit::Count),
            core: rlimit("core", &l.core, RlimitUnit::Bytes),
            memlock: rlimit("memlock", &l.memlock, RlimitUnit::Bytes),
            stack: rlimit("stack", &l.stack, RlimitUnit::Bytes),
        };
        let cgroup = CgroupLimits {
            memory: l
                .memory
                .as_ref()
                .and_then(|v| self.memory(svc, "memory", v)),
            memory_high: l
                .memory_high
                .as_ref()
                .and_then(|v| self.memory(svc, "memory_high", v)),
            cpu_quota: l.cpu_quota.as_ref().and_then(|v| self.cpu_quota(svc, v)),
            cpu_weight: l.cpu_weight.as_ref().and_then(|v| {
                self.integer(
                    svc,
                    "cpu_weight",
                    v,
                    1..=10_000,
                    "a weight from 1 to 10000 (100 is the default), e.g. 200",
                )
                .map(|w| u32::try_from(w).expect("at most 10000"))
            }),
            pids: l.pids.as_ref().and_then(|v| {
                self.integer(
                    svc,
                    "pids",
                    v,
                    1..=i64::from(u32::MAX),
                    "a number of processes and threads, e.g. 256",
                )
                .map(|n| n.unsigned_abs())
            }),
        };
        (rlimits, cgroup)
    }

    fn credentials(&mut self, svc: &str, raw: &RawService) -> Option<Credentials> {
        let user = raw.user.as_ref().and_then(|u| self.user(svc, u));
        let group = raw
            .group
            .as_ref()
            .and_then(|g| self.gid(g, &format!("service.{svc}.group"), ServiceGroupHint::Shown));
        let extra: Vec<u32> = raw
            .supplementary_groups
            .iter()
            .flatten()
            .filter_map(|g| {
                self.gid(
                    g,
                    &format!("service.{svc}.supplementary_groups"),
                    ServiceGroupHint::Shown,
                )
            })
            .collect();
        if raw.user.is_some() && user.is_none() || raw.group.is_some() && group.is_none() {
            return None;
        }
        let (user, primary_gid) = match user {
            Some((user, gid)) => (Some(user), gid),
            None if group.is_none() && extra.is_empty() => return None,
            None => (None, 0),
        };
        let gid = group.unwrap_or(primary_gid);
        let mut groups = match &user {
            Some(user) => CString::new(user.name.as_bytes())
                .ok()
                .and_then(|name| nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).ok())
                .map(|list| list.into_iter().map(Gid::as_raw).collect())
                .unwrap_or_else(|| vec![gid]),
            None => Vec::new(),
        };
        for g in extra {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        Some(Credentials { user, gid, groups })
    }

    fn user(&mut self, svc: &str, raw: &Spanned<String>) -> Option<(UserRef, u32)> {
        let name = raw.get_ref();
        match User::from_name(name) {
            Ok(Some(user)) => Some((
                UserRef {
                    name: name.clone(),
                    uid: user.uid.as_raw(),
                    home: user.dir.display().to_string(),
                    shell: user.shell.display().to_string(),
                },
                user.gid.as_raw(),
            )),
            Ok(None) => {
                self.push(Problem::new(format!("unknown user `{name}` in `service.{svc}.user`"), raw.span(), "no such user").with_help(format!(
                        "create it (useradd --system --no-create-home {name}) or name an existing user from /etc/passwd"
                    )));
                None
            }
            Err(errno) => {
                self.push(Problem::new(
                    format!("failed to look up user `{name}`"),
                    raw.span(),
                    errno.desc(),
                ));
                None
            }
        }
    }

    /// The gid of the group `raw` names in `key`. The hint points at `service_group` where
    /// the user may have meant a group of services rather than a Unix group.
    pub(super) fn gid(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        hint: ServiceGroupHint,
    ) -> Option<u32> {
        let name = raw.get_ref();
        match Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid.as_raw()),
            Ok(None) => {
                let mut help = format!(
                    "create it (groupadd {name}) or name an existing group from /etc/group"
                );
                if hint == ServiceGroupHint::Shown {
                    help.push_str(&format!(
                        "; to act on services together (`holdfast restart @{name}`), write `service_group = \"{name}\"`"
                    ));
                }
                self.push(
                    Problem::new(
                        format!("unknown group `{name}` in `{key}`"),
                        raw.span(),
                        "no such group",
                    )
                    .with_help(help),
                );
                None
            }
            Err(errno) => {
                self.push(Problem::new(
                    format!("failed to look up group `{name}`"),
                    raw.span(),
                    errno.desc(),
                ));
                None
            }
        }
    }

    fn umask(&mut self, svc: &str, raw: &Spanned<RawSize>) -> Option<u32> {
        let value = match raw.get_ref() {
            RawSize::Text(text) => u32::from_str_radix(text.trim(), 8).ok(),
            RawSize::Bytes(n) => u32::try_from(*n).ok(),
        };
        match value {
            Some(mask) if mask <= 0o777 => Some(mask),
            _ => {
                self.push(
                    Problem::new(
                        format!("invalid `service.{svc}.umask`"),
                        raw.span(),
                        "not an octal mode up to 0777",
                    )
                    .with_help("write the mask as an octal string, e.g. umask = \"0027\""),
                );
                None
            }
        }
    }

    fn capabilities(&mut self, svc: &str, raw: &[Spanned<String>]) -> Vec<Capability> {
        let mut caps = Vec::new();
        for name in raw {
            match Capability::from_name(name.get_ref()) {
                Some(cap) if !caps.contains(&cap) => caps.push(cap),
                Some(_) => {}
                None => {
                    let wanted = name.get_ref().to_ascii_uppercase();
                    let help = match closest(&wanted, CAPABILITY_NAMES) {
                        Some(best) => format!("did you mean \"{best}\"? see capabilities(7)"),
                        None => {
                            "name a capability from capabilities(7), e.g. \"CAP_NET_BIND_SERVICE\""
                                .to_owned()
                        }
                    };
                    self.push(
                        Problem::new(
                            format!(
                                "unknown capability {:?} in `service.{svc}.capabilities`",
                                name.get_ref()
                            ),
                            name.span(),
                            "unknown capability",
                        )
                        .with_help(help),
                    );
                }
            }
        }
        caps.sort();
        caps
    }

    fn cpu_affinity(&mut self, svc: &str, raw: &[Spanned<i64>]) -> Vec<usize> {
        let mut cpus = Vec::new();
        for cpu in raw {
            match usize::try_from(*cpu.get_ref()) {
                Ok(n) if *cpu.get_ref() <= MAX_CPU => {
                    if !cpus.contains(&n) {
                        cpus.push(n);
                    }
                }
                _ => {
                    self.push(
                        Problem::new(
                            format!("invalid CPU number in `service.{svc}.cpu_affinity`"),
                            cpu.span(),
                            "not a CPU number",
                        )
                        .with_help(format!(
                            "list CPU numbers from 0 to {MAX_CPU}, e.g. cpu_affinity = [0, 1]"
                        )),
                    );
                }
            }
        }
        cpus.sort_unstable();
        cpus
    }

    fn oom_score(&mut self, svc: &str, raw: &Spanned<i64>) -> Option<i32> {
        let value = *raw.get_ref();
        if (-1000..=1000).contains(&value) {
            return Some(i32::try_from(value).expect("in -1000..=1000"));
        }
        self.push(
            Problem::new(
                format!("`service.{svc}.oom_score_adjust` is out of range"),
                raw.span(),
                "not in -1000..=1000",
            )
            .with_help("use -1000 (never kill) to 1000 (kill first); 0 is the default"),
        );
        None
    }

    fn rlimit(
        &mut self,
        svc: &str,
        key: &str,
        raw: &Spanned<RawSize>,
        unit: RlimitUnit,
    ) -> Option<Rlimit> {
        let parsed = match raw.get_ref() {
            RawSize::Text(text) if matches!(text.trim(), "infinity" | "unlimited") => {
                Ok(Rlimit::Infinity)
            }
            RawSize::Text(text) if unit == RlimitUnit::Bytes => value::parse_size(text)
                .map(Rlimit::Value)
                .map_err(|e| e.label),
            RawSize::Text(_) => Err("not a number".to_owned()),
            RawSize::Bytes(n) => u64::try_from(*n)
                .map(Rlimit::Value)
                .map_err(|_| "negative".to_owned()),
        };
        parsed
            .map_err(|label| {
                let example = match unit {
                    RlimitUnit::Bytes => "\"8MiB\"",
                    RlimitUnit::Count => "65536",
                };
                let help = format!("write a limit such as {key} = {example}, or \"infinity\"");
                self.invalid_limit(svc, key, raw, label, help);
            })
            .ok()
    }

    /// The one diagnostic of a `limits.KEY` value that does not parse or is out of range.
    fn invalid_limit(
        &mut self,
        svc: &str,
        key: &str,
        raw: &Spanned<RawSize>,
        label: String,
        help: String,
    ) {
        self.push(
            Problem::new(
                format!("invalid `service.{svc}.limits.{key}`"),
                raw.span(),
                label,
            )
            .with_help(help),
        );
    }

    fn memory(&mut self, svc: &str, key: &str, raw: &Spanned<RawSize>) -> Option<u64> {
        match size(raw.get_ref()).map_err(|e| e.label) {
            Ok(bytes) if bytes >= 1 << 20 => Some(bytes),
            other => {
                let label = other.err().unwrap_or_else(|| "below 1MiB".to_owned());
                let help = format!("write a size of at least 1MiB, e.g. {key} = \"512MiB\"");
                self.invalid_limit(svc, key, raw, label, help);
                None
            }
        }
    }

    fn cpu_quota(&mut self, svc: &str, raw: &Spanned<RawSize>) -> Option<u32> {
        let percent = match raw.get_ref() {
            RawSize::Text(text) => text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u32>().ok()),
            RawSize::Bytes(_) => None,
        };
        match percent {
            Some(p) if (1..=100_000).contains(&p) => Some(p),
            _ => {
                self.push(Problem::new(format!("invalid `service.{svc}.limits.cpu_quota`"), raw.span(), "not a percentage").with_help("write a percentage of one CPU, e.g. cpu_quota = \"150%\" for one and a half CPUs"));
                None
            }
        }
    }

    fn integer(
        &mut self,
        svc: &str,
        key: &str,
        raw: &Spanned<RawSize>,
        range: RangeInclusive<i64>,
        expected: &str,
    ) -> Option<i64> {
        match raw.get_ref() {
            RawSize::Bytes(n) if range.contains(n) => Some(*n),
            _ => {
                self.push(
                    Problem::new(
                        format!("invalid `service.{svc}.limits.{key}`"),
                        raw.span(),
                        format!("not an integer in {}..={}", range.start(), range.end()),
                    )
                    .with_help(format!("write {expected}")),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;
    use crate::model::{Capability, Rlimit, ServiceName};

    fn problems(toml: &str) -> String {
        parse(toml, "test.toml", Path::new("/"))
            .expect_err("the config is invalid")
            .render_plain()
    }

    #[test]
    fn root_with_limits_and_capabilities_is_resolved_into_the_spec() {
        let plan = parse(
            r#"
[service.web]
command = ["/bin/true"]
user = "root"
supplementary_groups = ["root"]
umask = "0027"
capabilities = ["net_bind_service", "CAP_NET_BIND_SERVICE"]
no_new_privs = false
limits = { nofile = 65536, core = "infinity", stack = "8MiB", memory = "64MiB", cpu_quota = "150%", cpu_weight = 200, pids = 64 }
cpu_affinity = [1, 0, 1]
oom_score_adjust = -500
"#,
            "test.toml",
            Path::new("/"),
        )
        .expect("valid");
        let spec = &plan.services[&ServiceName::new("web").expect("valid name")];
        let p = &spec.privileges;
        let creds = p.credentials.as_ref().expect("user resolved");
        assert_eq!(creds.user.as_ref().map(|u| u.uid), Some(0));
        assert_eq!(creds.gid, 0);
        assert_eq!(p.umask, Some(0o027));
        assert_eq!(p.capabilities, Some(vec![Capability::NET_BIND_SERVICE]));
        assert!(!p.no_new_privs);
        assert_eq!(p.cpu_affinity, Some(vec![0, 1]));
        assert_eq!(p.oom_score_adjust, Some(-500));
        assert_eq!(spec.limits.nofile, Some(Rlimit::Value(65536)));
        assert_eq!(spec.limits.core, Some(Rlimit::Infinity));
        assert_eq!(spec.limits.stack, Some(Rlimit::Value(8 << 20)));
        assert_eq!(spec.cgroup.memory, Some(64 << 20));
        assert_eq!(spec.cgroup.cpu_quota, Some(150));
        assert_eq!(spec.cgroup.cpu_weight, Some(200));
        assert_eq!(spec.cgroup.pids, Some(64));
    }

    #[test]
    fn unknown_users_groups_and_capabilities_are_reported_at_their_spans() {
        let text = problems(
            r#"
[service.web]
command = ["/bin/true"]
user = "no-such-user-xyz"
group = "no-such-group-xyz"
capabilities = ["CAP_NET_BIND_SERVIC"]
limits = { memory = "12", cpu_quota = "1.5", nofile = "lots" }
oom_score_adjust = 2000
"#,
        );
        for expected in [
            "unknown user `no-such-user-xyz` in `service.web.user`",
            "useradd --system --no-create-home no-such-user-xyz",
            "unknown group `no-such-group-xyz` in `service.web.group`",
            "did you mean \"CAP_NET_BIND_SERVICE\"?",
            "invalid `service.web.limits.memory`",
            "invalid `service.web.limits.cpu_quota`",
            "invalid `service.web.limits.nofile`",
            "`service.web.oom_score_adjust` is out of range",
        ] {
            assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn no_new_privs_is_on_unless_a_service_opts_out() {
        let plan = parse(
            "[service.a]\ncommand = [\"/bin/true\"]\n",
            "test.toml",
            Path::new("/"),
        )
        .expect("valid");
        let spec = plan.services.values().next().expect("one service");
        assert!(spec.privileges.no_new_privs);
        assert_eq!(spec.privileges.credentials, None);
    }
}
