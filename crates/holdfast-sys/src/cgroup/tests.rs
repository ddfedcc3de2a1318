//! Detection and limit files against fake cgroup trees (plain directories), so the v2
//! code paths are checked on a v1 host too.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn temp_tree(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-cgroup-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp tree");
    dir
}

fn touch(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("has parent")).expect("create dirs");
    fs::write(path, text).expect("write fake file");
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn pure_v2_is_preferred_and_limits_go_to_the_v2_files() {
    let root = temp_tree("v2");
    touch(
        &root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    touch(
        &root.join("svc.slice/cgroup.controllers"),
        "cpu memory pids\n",
    );
    touch(&root.join("svc.slice/cgroup.procs"), "");
    let detected = detect_at(&root, "0::/svc.slice\n");
    assert_eq!(detected.preferred(), Some(Version::V2));
    assert_eq!(detected.usable_controllers(), ["cpu", "memory", "pids"]);

    let cgroups = Cgroups::setup(&detected, "holdfast").expect("setup on a fake tree");
    let parent = root.join("svc.slice/holdfast");
    assert_eq!(cgroups.parent_dir(), parent);
    assert_eq!(
        read(&root.join("svc.slice/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(&parent.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );

    let limits = CgroupLimits {
        memory: Some(64 << 20),
        memory_high: None,
        cpu_quota: Some(150),
        cpu_weight: Some(200),
        pids: Some(64),
    };
    let svc = cgroups.service("web", &limits).expect("service cgroup");
    let dir = parent.join("web");
    assert_eq!(svc.dir(), dir);
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert_eq!(
        read(&dir.join("memory.high")),
        "max",
        "unset limits are reset"
    );
    assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(&dir.join("cpu.weight")), "200");
    assert_eq!(read(&dir.join("pids.max")), "64");

    touch(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
    );
    assert_eq!(svc.oom_kills(), Some(1));
    touch(&dir.join("cgroup.procs"), "12\n34\n");
    assert_eq!(svc.pids().len(), 2);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn hybrid_without_v2_controllers_uses_the_v1_hierarchies() {
    let root = temp_tree("hybrid");
    touch(&root.join("unified/cgroup.controllers"), "");
    touch(&root.join("unified/cgroup.procs"), "");
    for c in ["memory", "cpu", "pids", "freezer"] {
        touch(&root.join(c).join("cgroup.procs"), "");
    }
    touch(&root.join("memory/sandbox/cgroup.procs"), "");
    let own = "9:name=systemd:/\n8:pids:/\n4:memory:/sandbox\n1:cpu:/\n0::/\n";
    let detected = detect_at(&root, own);
    assert_eq!(detected.preferred(), Some(Version::V1));
    assert_eq!(detected.usable_controllers(), ["memory", "cpu", "pids"]);
    assert_eq!(detected.v1_in_membership_order()[0].controllers, ["pids"]);

    let cgroups = Cgroups::setup(&detected, "holdfast-x").expect("setup on a fake tree");
    assert_eq!(cgroups.parent_dir(), root.join("pids/holdfast-x"));
    let limits = CgroupLimits {
        memory: Some(64 << 20),
        memory_high: Some(32 << 20),
        cpu_quota: None,
        cpu_weight: Some(50),
        pids: None,
    };
    let svc = cgroups.service("api", &limits).expect("service cgroup");
    let mem = root.join("memory/sandbox/holdfast-x/api");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(&mem.join("memory.soft_limit_in_bytes")), "33554432");
    let cpu = root.join("cpu/holdfast-x/api");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(&cpu.join("cpu.shares")), "512");
    assert_eq!(read(&root.join("pids/holdfast-x/api/pids.max")), "max");
    touch(
        &mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    assert_eq!(svc.oom_kills(), Some(3));
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_limit_without_its_controller_is_refused_naming_the_controller() {
    let root = temp_tree("nocontrollers");
    touch(&root.join("cgroup.controllers"), "");
    let detected = detect_at(&root, "0::/\n");
    let cgroups = Cgroups::setup(&detected, "holdfast").expect("membership-only v2");
    let limits = CgroupLimits {
        pids: Some(10),
        ..CgroupLimits::default()
    };
    let error = cgroups
        .service("x", &limits)
        .expect_err("pids is not available");
    assert!(error.to_string().contains("`pids`"), "{error}");
    assert!(cgroups.service("x", &CgroupLimits::default()).is_ok());
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn no_hierarchy_means_no_cgroups() {
    let root = temp_tree("none");
    assert_eq!(detect_at(&root, "").preferred(), None);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn setup_sweeps_empty_cgroups_of_dead_daemons_only_and_a_removed_parent_comes_back() {
    let root = temp_tree("sweep");
    touch(&root.join("cgroup.controllers"), "");
    // Above the kernel's pid_max (2^22): never a live process.
    fs::create_dir_all(root.join("holdfast-x.4194305/web")).expect("a dead daemon's cgroup");
    let alive = format!("holdfast-y.{}", std::process::id());
    fs::create_dir_all(root.join(&alive).join("web")).expect("a live daemon's cgroup");
    fs::create_dir_all(root.join("other/keep")).expect("not ours");
    let detected = detect_at(&root, "0::/\n");
    let cgroups = Cgroups::setup(&detected, "holdfast-live").expect("setup");
    assert!(
        !root.join("holdfast-x.4194305").exists(),
        "a dead daemon's cgroups go"
    );
    assert!(
        root.join(&alive).join("web").exists(),
        "a live daemon's stay, even empty"
    );
    assert!(
        root.join("other/keep").exists(),
        "only holdfast's are touched"
    );

    fs::remove_dir(root.join("holdfast-live")).expect("removed by hand");
    let svc = cgroups
        .service("web", &CgroupLimits::default())
        .expect("the parent is re-created");
    assert!(svc.dir().exists());
    let _ = fs::remove_dir_all(&root);
}
