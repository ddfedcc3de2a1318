//! Who a service runs as and what it may consume: credentials, capabilities, rlimits,
//! cgroup limits, CPU affinity, OOM score.
//!
//! Like the rest of the model these values are fully checked: users and groups are
//! resolved to ids at validation time, capability names to numbers, percentages and
//! sizes to integers in range. `process::spawn` and `cgroup` apply them as they are.

use std::fmt;

/// The identity a service runs under (`user`, `group`, `supplementary_groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `None` when only `group` was set: the service stays root with another gid.
    pub user: Option<UserRef>,
    /// Primary gid: `group` if set, else the user's primary group.
    pub gid: u32,
    /// The complete supplementary group list (`setgroups`): the user's groups from the
    /// group database plus `supplementary_groups`. Empty for root-with-a-group, so the
    /// service never keeps root's supplementary groups.
    pub groups: Vec<u32>,
}

/// A user resolved from the password database at validation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub name: String,
    pub uid: u32,
    /// Becomes `HOME`.
    pub home: String,
    /// Becomes `SHELL`.
    pub shell: String,
}

/// Process attributes set between fork and exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    pub credentials: Option<Credentials>,
    /// `None`: inherit holdfast's umask.
    pub umask: Option<u32>,
    /// `None`: not configured (root keeps every capability, another user gets none).
    /// `Some(list)`: exactly these stay permitted, effective, inheritable and ambient
    /// (so they survive the uid change and exec) and the bounding set loses the rest.
    pub capabilities: Option<Vec<Capability>>,
    /// `PR_SET_NO_NEW_PRIVS`: exec can never grant more (setuid bits, file caps).
    pub no_new_privs: bool,
    /// CPUs the service may run on (`sched_setaffinity`); `None`: inherit.
    pub cpu_affinity: Option<Vec<usize>>,
    /// Written to `/proc/self/oom_score_adj`, -1000..=1000.
    pub oom_score_adjust: Option<i32>,
}

impl Default for Privileges {
    fn default() -> Self {
        Self {
            credentials: None,
            umask: None,
            capabilities: None,
            no_new_privs: true,
            cpu_affinity: None,
            oom_score_adjust: None,
        }
    }
}

/// One rlimit value: both soft and hard limit are set to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rlimit {
    Value(u64),
    Infinity,
}

/// Resource limits of the process (`setrlimit`); `None` inherits holdfast's value, except
/// `nofile`, whose soft limit is reset to what holdfast itself started with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub nofile: Option<Rlimit>,
    pub nproc: Option<Rlimit>,
    pub core: Option<Rlimit>,
    pub memlock: Option<Rlimit>,
    pub stack: Option<Rlimit>,
}

/// Limits enforced by the service's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Hard limit in bytes: beyond it the kernel reclaims, then OOM-kills in the cgroup.
    pub memory: Option<u64>,
    /// Soft limit (v2 `memory.high`, v1 `memory.soft_limit_in_bytes`).
    pub memory_high: Option<u64>,
    /// Percent of one CPU, e.g. 150 for one and a half CPUs.
    pub cpu_quota: Option<u32>,
    /// Relative CPU weight 1..=10000, 100 being the default (v1: shares = weight * 1024 / 100).
    pub cpu_weight: Option<u32>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

/// A Linux capability by number (`CAP_NET_BIND_SERVICE` = 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(u8);

/// Capability names in number order (linux/capability.h).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

impl Capability {
    pub const NET_BIND_SERVICE: Capability = Capability(10);

    /// `"CAP_NET_BIND_SERVICE"`, `"net_bind_service"`: case-insensitive, prefix optional.
    pub fn from_name(name: &str) -> Option<Capability> {
        let upper = name.trim().to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        CAPABILITY_NAMES
            .iter()
            .position(|n| *n == full)
            .map(|i| Capability(u8::try_from(i).expect("41 names fit in u8")))
    }

    /// A capability number the running kernel reported; numbers beyond the table exist
    /// on newer kernels and print as `cap_<n>`.
    pub fn from_number(n: u8) -> Capability {
        Capability(n)
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// The bitmask `bit` in a 64-bit capability set.
    pub fn mask(self) -> u64 {
        1 << self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match CAPABILITY_NAMES.get(usize::from(self.0)) {
            Some(name) => f.write_str(name),
            None => write!(f, "cap_{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_parse_with_or_without_prefix_in_any_case() {
        assert_eq!(
            Capability::from_name("CAP_NET_BIND_SERVICE"),
            Some(Capability::NET_BIND_SERVICE)
        );
        assert_eq!(
            Capability::from_name("net_bind_service"),
            Some(Capability::NET_BIND_SERVICE)
        );
        assert_eq!(Capability::from_name("CAP_NOPE"), None);
        assert_eq!(
            Capability::NET_BIND_SERVICE.to_string(),
            "CAP_NET_BIND_SERVICE"
        );
        assert_eq!(
            Capability::from_number(40).to_string(),
            "CAP_CHECKPOINT_RESTORE"
        );
        assert_eq!(Capability::from_number(63).to_string(), "cap_63");
    }
}
