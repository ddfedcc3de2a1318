//! Finding the cgroup hierarchies and holdfast's own place in them, from
//! `/proc/self/cgroup` and the mounts under `/sys/fs/cgroup`.
//!
//! Pure over its inputs (`detect_at` takes the root directory and the text of
//! `/proc/self/cgroup`), so unit tests run it against a fake tree.

use std::path::{Path, PathBuf};

use super::{CONTROLLERS, Version};

/// One mounted hierarchy and holdfast's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// holdfast's cgroup path inside the hierarchy, e.g. `/` or `/system.slice/x`.
    pub own_path: String,
    /// v1: the controllers bound to this hierarchy. v2: the controllers available to
    /// holdfast's cgroup (its `cgroup.controllers`).
    pub controllers: Vec<String>,
}

impl Hierarchy {
    pub fn own_dir(&self) -> PathBuf {
        match self.own_path.trim_matches('/') {
            "" => self.mount.clone(),
            path => self.mount.join(path),
        }
    }
}

/// What this host offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    /// The unified hierarchy, if mounted.
    pub v2: Option<Hierarchy>,
    /// `true` when the unified hierarchy is mounted at the root (no v1 at all).
    pub pure_v2: bool,
    /// v1 hierarchies of the controllers holdfast uses (memory, cpu, pids).
    pub v1: Vec<Hierarchy>,
}

impl Detected {
    /// v2 when it is the only hierarchy or offers memory and pids to holdfast; else v1
    /// when any of holdfast's controllers is mounted there; else v2 without controllers
    /// (membership and kill only); else nothing.
    pub fn preferred(&self) -> Option<Version> {
        let v2_has = |c: &str| {
            self.v2
                .as_ref()
                .is_some_and(|h| h.controllers.iter().any(|x| x == c))
        };
        if self.v2.is_some() && (self.pure_v2 || (v2_has("memory") && v2_has("pids"))) {
            Some(Version::V2)
        } else if !self.v1.is_empty() {
            Some(Version::V1)
        } else if self.v2.is_some() {
            Some(Version::V2)
        } else {
            None
        }
    }

    /// v1 hierarchies, the tracking one first: the one whose `cgroup.procs` tells
    /// membership, which every service's cgroup is in. `pids` when mounted: the cheapest
    /// controller state to create (a counter; on a 2-vCPU VM with Linux 6.18 a `mkdir`
    /// costs about 25 us there, 40 us in `cpu`, 65-110 us in `memory`, and 40 us in a v2
    /// hierarchy without controllers, which has more files), and it counts tasks for
    /// `status`. A named hierarchy (`name=systemd`) would be no cheaper and is systemd's.
    pub fn v1_in_membership_order(&self) -> Vec<&Hierarchy> {
        const TRACKING_ORDER: [&str; 3] = ["pids", "cpu", "memory"];
        let mut list: Vec<&Hierarchy> = self.v1.iter().collect();
        list.sort_by_key(|h| {
            TRACKING_ORDER
                .iter()
                .position(|c| *c == h.controllers[0])
                .unwrap_or(TRACKING_ORDER.len())
        });
        list
    }

    /// Controllers holdfast could use, by version in use.
    pub fn usable_controllers(&self) -> Vec<String> {
        match self.preferred() {
            Some(Version::V2) => self
                .v2
                .as_ref()
                .map(|h| {
                    h.controllers
                        .iter()
                        .filter(|c| CONTROLLERS.contains(&c.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            Some(Version::V1) => self.v1.iter().map(|h| h.controllers[0].clone()).collect(),
            None => Vec::new(),
        }
    }
}

/// Detects the real host's hierarchies.
pub fn detect() -> Detected {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect_at(Path::new("/sys/fs/cgroup"), &own)
}

/// Detects hierarchies under `root` given the text of `/proc/self/cgroup`.
pub fn detect_at(root: &Path, proc_self_cgroup: &str) -> Detected {
    // "id:controllers:path"; v2 is "0::path".
    let entries: Vec<(Vec<&str>, &str)> = proc_self_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some((
                controllers.split(',').filter(|c| !c.is_empty()).collect(),
                path,
            ))
        })
        .collect();

    let (v2_mount, pure_v2) = if root.join("cgroup.controllers").exists() {
        (Some(root.to_owned()), true)
    } else if root.join("unified/cgroup.controllers").exists() {
        (Some(root.join("unified")), false)
    } else {
        (None, false)
    };
    let v2 = v2_mount.and_then(|mount| {
        let own_path = entries
            .iter()
            .find(|(controllers, _)| controllers.is_empty())
            .map(|(_, path)| (*path).to_owned())?;
        let mut h = Hierarchy {
            mount,
            own_path,
            controllers: Vec::new(),
        };
        h.controllers = std::fs::read_to_string(h.own_dir().join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Some(h)
    });

    let v1 = if pure_v2 {
        Vec::new()
    } else {
        CONTROLLERS
            .iter()
            .filter_map(|controller| {
                let mount = root.join(controller);
                if !mount.join("cgroup.procs").exists() || mount.join("cgroup.controllers").exists()
                {
                    return None;
                }
                let own_path = entries
                    .iter()
                    .find(|(controllers, _)| controllers.contains(controller))
                    .map(|(_, path)| (*path).to_owned())?;
                Some(Hierarchy {
                    mount,
                    own_path,
                    controllers: vec![(*controller).to_owned()],
                })
            })
            .collect()
    };
    Detected { v2, pure_v2, v1 }
}
