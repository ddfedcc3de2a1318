//! `holdfast doctor`: what this host offers holdfast, read from `/proc` and
//! `/sys/fs/cgroup`: the cgroup version and controllers holdfast would use (and what is
//! missing for `limits`), user namespaces, holdfast's own capabilities, `core_pattern`,
//! whether it runs under systemd, and whether it is PID 1.
//!
//! Read-only: it creates no cgroup and changes nothing.

use std::fs;
use std::process::ExitCode;

use serde::Serialize;

use crate::cgroup::{self, CONTROLLERS, Version};
use crate::model::{CAPABILITY_NAMES, Capability};

#[derive(Debug, Serialize)]
pub struct Report {
    pub cgroup: CgroupReport,
    pub user_namespaces: UserNamespaces,
    /// Effective capabilities of this process, by name.
    pub capabilities: Vec<String>,
    /// All capabilities the kernel knows are effective.
    pub all_capabilities: bool,
    pub core_pattern: Option<String>,
    pub systemd: SystemdReport,
    /// The service manager running this process (`systemd:UNIT`, `supervisord:PROGRAM`).
    pub managed_by: Option<String>,
    pub pid: u32,
    pub pid1: bool,
    /// Soft and hard `RLIMIT_NOFILE` of this process.
    pub nofile: (u64, u64),
}

#[derive(Debug, Serialize)]
pub struct CgroupReport {
    /// "v2", "v1", or null when none is usable.
    pub in_use: Option<String>,
    /// "unified", "hybrid", "legacy" or "none".
    pub layout: String,
    pub v2_mount: Option<String>,
    /// Controllers available to holdfast's cgroup in the unified hierarchy.
    pub v2_controllers: Vec<String>,
    /// v1 hierarchies of holdfast's controllers: `controller -> own cgroup dir`.
    pub v1: Vec<(String, String)>,
    /// Controllers `limits` can use.
    pub usable: Vec<String>,
    /// Controllers holdfast would use but cannot.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UserNamespaces {
    pub max: Option<u64>,
    /// `kernel.unprivileged_userns_clone` where the kernel has it (Debian).
    pub unprivileged_clone: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct SystemdReport {
    pub notify_socket: bool,
    pub invocation_id: bool,
    pub pid1_comm: Option<String>,
    pub under_systemd: bool,
}

pub fn run(json: bool) -> miette::Result<ExitCode> {
    let report = gather();
    let text = if json {
        serde_json::to_string_pretty(&report).expect("the report serializes") + "\n"
    } else {
        render(&report)
    };
    // A closed pipe (`holdfast doctor | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

pub fn gather() -> Report {
    let detected = cgroup::detect();
    let usable = detected.usable_controllers();
    let layout = match (&detected.v2, detected.pure_v2, detected.v1.is_empty()) {
        (Some(_), true, _) => "unified",
        (Some(_), false, _) => "hybrid",
        (None, _, false) => "legacy",
        (None, _, true) => "none",
    };
    let cgroup = CgroupReport {
        in_use: detected.preferred().map(|v: Version| v.to_string()),
        layout: layout.to_owned(),
        v2_mount: detected.v2.as_ref().map(|h| h.mount.display().to_string()),
        v2_controllers: detected
            .v2
            .as_ref()
            .map(|h| h.controllers.clone())
            .unwrap_or_default(),
        v1: detected
            .v1
            .iter()
            .map(|h| (h.controllers[0].clone(), h.own_dir().display().to_string()))
            .collect(),
        missing: CONTROLLERS
            .iter()
            .filter(|c| !usable.iter().any(|u| u == *c))
            .map(|c| (*c).to_owned())
            .collect(),
        usable,
    };

    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let last_cap: u8 = read_trim("/proc/sys/kernel/cap_last_cap")
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let capabilities: Vec<String> = (0..=last_cap.min(63))
        .map(Capability::from_number)
        .filter(|c| cap_eff & c.mask() != 0)
        .map(|c| c.to_string())
        .collect();
    let all_capabilities = capabilities.len() == usize::from(last_cap.min(63)) + 1;

    let pid1_comm = read_trim("/proc/1/comm");
    let systemd = SystemdReport {
        under_systemd: crate::notify::outer::OuterManager::systemd_in_environment(),
        // Read as the detection reads them: set but empty is unset.
        notify_socket: crate::notify::outer::env_var("NOTIFY_SOCKET").is_some(),
        invocation_id: crate::notify::outer::env_var("INVOCATION_ID").is_some(),
        pid1_comm,
    };
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((0, 0));
    Report {
        cgroup,
        user_namespaces: UserNamespaces {
            max: read_trim("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse().ok()),
            unprivileged_clone: read_trim("/proc/sys/kernel/unprivileged_userns_clone")
                .map(|s| s == "1"),
        },
        capabilities,
        all_capabilities,
        core_pattern: read_trim("/proc/sys/kernel/core_pattern"),
        systemd,
        managed_by: crate::notify::outer::OuterManager::detect().map(|m| m.to_string()),
        pid: std::process::id(),
        pid1: std::process::id() == 1,
        nofile,
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn render(r: &Report) -> String {
    let mut lines = cgroup_lines(&r.cgroup);
    let userns = match (r.user_namespaces.max, r.user_namespaces.unprivileged_clone) {
        (Some(0), _) => "disabled (max_user_namespaces = 0)".to_owned(),
        (Some(max), Some(false)) => format!("root only (max {max}, unprivileged_userns_clone = 0)"),
        (Some(max), _) => format!("available (max {max})"),
        (None, _) => "not supported by this kernel".to_owned(),
    };
    lines.push(format!("user namespaces:  {userns}"));
    lines.push(format!("capabilities:     {}", capabilities(r)));
    lines.push(format!(
        "core_pattern:     {}",
        r.core_pattern.as_deref().unwrap_or("unknown")
    ));
    lines.push(systemd_line(&r.systemd));
    lines.push(format!(
        "managed by:       {}",
        r.managed_by
            .as_deref()
            .unwrap_or("nothing (holdfast is restarted by no one if it dies)")
    ));
    lines.push(format!(
        "PID 1:            {} (pid {}); `holdfast up` otherwise becomes a child subreaper",
        yes_no(r.pid1),
        r.pid
    ));
    lines.push(format!(
        "open files:       soft {} / hard {}; `holdfast up` raises soft to hard",
        r.nofile.0, r.nofile.1
    ));
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The cgroup layout, the hierarchies holdfast uses and what limits can use.
fn cgroup_lines(c: &CgroupReport) -> Vec<String> {
    let mut lines = vec![format!(
        "cgroups:          {} layout, holdfast uses {}",
        c.layout,
        c.in_use.as_deref().unwrap_or("none (process groups only)")
    )];
    if let Some(mount) = &c.v2_mount {
        let controllers = if c.v2_controllers.is_empty() {
            "none delegated".to_owned()
        } else {
            c.v2_controllers.join(" ")
        };
        lines.push(format!(
            "  v2 hierarchy:   {mount} (controllers: {controllers})"
        ));
    }
    for (controller, dir) in &c.v1 {
        lines.push(format!("  v1 {controller:<12}{dir}"));
    }
    let usable = if c.usable.is_empty() {
        "nothing".to_owned()
    } else {
        c.usable.join(", ")
    };
    lines.push(format!("  limits can use: {usable}"));
    if !c.missing.is_empty() {
        lines.push(format!(
            "  missing:        {} (limits needing {} are refused at spawn)",
            c.missing.join(", "),
            if c.missing.len() == 1 { "it" } else { "them" }
        ));
    }
    lines
}

/// holdfast's capabilities: all, all but a few, none, or the list.
fn capabilities(r: &Report) -> String {
    if r.all_capabilities {
        format!("all {} (full root)", r.capabilities.len())
    } else if r.capabilities.len() > CAPABILITY_NAMES.len() / 2 {
        let lacking: Vec<&str> = CAPABILITY_NAMES
            .iter()
            .copied()
            .filter(|name| !r.capabilities.iter().any(|c| c == name))
            .collect();
        format!("all but {}", lacking.join(", "))
    } else if r.capabilities.is_empty() {
        "none: cannot switch users, set limits or create cgroups".to_owned()
    } else {
        r.capabilities.join(", ")
    }
}

fn systemd_line(s: &SystemdReport) -> String {
    let set = |b: bool| if b { "set" } else { "unset" };
    format!(
        "systemd:          {} (NOTIFY_SOCKET {}, INVOCATION_ID {}, PID 1 is {})",
        if s.under_systemd {
            "running under systemd"
        } else {
            "not under systemd"
        },
        set(s.notify_socket),
        set(s.invocation_id),
        s.pid1_comm.as_deref().unwrap_or("unknown")
    )
}
