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

    let mut cgroups = Cgroups::setup(&detected, "holdfast").expect("setup on a fake tree");
    let parent = root.join("svc.slice/holdfast");
    assert_eq!(cgroups.parent_dir(), parent);
    assert_eq!(
        read(&root.join("svc.slice/cgroup.subtree_control")),
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
    // Enabled for the children once a service's limits use them.
    assert_eq!(
        read(&parent.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    let dir = parent.join("web");
    assert_eq!(svc.dir(), dir);
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert!(
        !dir.join("memory.high").exists(),
        "an unset limit of a new cgroup keeps the kernel's default, unwritten"
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

    let mut cgroups = Cgroups::setup(&detected, "holdfast-x").expect("setup on a fake tree");
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
    assert!(
        !cpu.join("cpu.cfs_quota_us").exists() && !cpu.join("cpu.cfs_period_us").exists(),
        "no cpu.cfs_* write without a cpu_quota: the kernel's -1 stands"
    );
    assert_eq!(read(&cpu.join("cpu.shares")), "512");
    assert!(
        root.join("pids/holdfast-x/api").is_dir(),
        "the tracking hierarchy"
    );
    assert!(!root.join("pids/holdfast-x/api/pids.max").exists());
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
    let mut cgroups = Cgroups::setup(&detected, "holdfast").expect("membership-only v2");
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
    let mut cgroups = Cgroups::setup(&detected, "holdfast-live").expect("setup");
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

/// A pure v2 fake tree offering cpu, memory and pids to holdfast's cgroup `svc.slice`.
fn v2_tree(name: &str) -> (PathBuf, Detected) {
    let root = temp_tree(name);
    touch(
        &root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    touch(
        &root.join("svc.slice/cgroup.controllers"),
        "cpu memory pids\n",
    );
    let detected = detect_at(&root, "0::/svc.slice\n");
    (root, detected)
}

#[test]
fn on_v2_the_parent_enables_only_the_controllers_that_some_service_uses() {
    let (root, detected) = v2_tree("v2-needed");
    let mut cgroups = Cgroups::setup(&detected, "holdfast").expect("setup");
    let parent = root.join("svc.slice/holdfast");
    let control = parent.join("cgroup.subtree_control");

    let plain = cgroups
        .service("plain", &CgroupLimits::default())
        .expect("a cgroup without limits");
    assert!(
        !control.exists(),
        "no controller is enabled for a service without limits"
    );
    let files: Vec<_> = fs::read_dir(plain.dir()).expect("its dir").collect();
    assert!(files.is_empty(), "nothing is written into it: {files:?}");
    assert_eq!(plain.oom_kills(), None, "outside the memory controller");

    let memory = CgroupLimits {
        memory: Some(1 << 30),
        ..CgroupLimits::default()
    };
    cgroups.service("db", &memory).expect("a memory limit");
    assert_eq!(read(&control), "+memory");
    let db = parent.join("db");
    assert_eq!(read(&db.join("memory.max")), "1073741824");
    assert!(!db.join("memory.high").exists() && !db.join("pids.max").exists());

    let pids = CgroupLimits {
        pids: Some(10),
        ..CgroupLimits::default()
    };
    cgroups.service("web", &pids).expect("a pids limit");
    assert_eq!(
        read(&control),
        "+memory +pids",
        "the earlier one stays enabled"
    );
    fs::remove_file(&control).expect("forget the line");
    cgroups.service("api", &memory).expect("memory again");
    assert!(
        !control.exists(),
        "an enabled controller is not enabled again"
    );
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn on_v2_a_reload_writes_only_the_limits_that_changed_and_resets_a_removed_one() {
    let (root, detected) = v2_tree("v2-reload");
    let mut cgroups = Cgroups::setup(&detected, "holdfast").expect("setup");
    let both = CgroupLimits {
        memory: Some(64 << 20),
        cpu_quota: Some(50),
        ..CgroupLimits::default()
    };
    let mut svc = cgroups.service("web", &both).expect("service cgroup");
    let dir = svc.dir().to_owned();
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");

    fs::remove_file(dir.join("memory.max")).expect("watch for rewrites");
    cgroups.apply(&mut svc, "web", &both).expect("unchanged");
    assert!(!dir.join("memory.max").exists(), "a restart writes nothing");

    let cpu_only = CgroupLimits {
        cpu_quota: Some(200),
        ..CgroupLimits::default()
    };
    cgroups.apply(&mut svc, "web", &cpu_only).expect("reload");
    assert_eq!(
        read(&dir.join("memory.max")),
        "max",
        "the removed limit is reset"
    );
    assert_eq!(read(&dir.join("cpu.max")), "200000 100000");
    assert!(!dir.join("memory.high").exists(), "unchanged: not written");
    assert_eq!(
        svc.oom_kills(),
        None,
        "no memory limit, no OOM counter read"
    );
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_cgroup_holdfast_finds_already_there_gets_every_limit_written() {
    let (root, detected) = v2_tree("v2-found");
    let mut cgroups = Cgroups::setup(&detected, "holdfast").expect("setup");
    let memory = CgroupLimits {
        memory: Some(64 << 20),
        ..CgroupLimits::default()
    };
    cgroups.service("db", &memory).expect("enables memory");
    // Left by an earlier daemon of the same name, with a limit in it.
    let old = root.join("svc.slice/holdfast/old");
    touch(&old.join("memory.max"), "4096");
    cgroups
        .service("old", &CgroupLimits::default())
        .expect("found");
    assert_eq!(read(&old.join("memory.max")), "max");
    assert_eq!(read(&old.join("memory.high")), "max");
    let _ = fs::remove_dir_all(&root);
}

/// A v1 fake tree with the memory, cpu and pids hierarchies.
fn v1_tree(name: &str) -> (PathBuf, Detected) {
    let root = temp_tree(name);
    for c in ["memory", "cpu", "pids"] {
        touch(&root.join(c).join("cgroup.procs"), "");
    }
    let detected = detect_at(&root, "8:pids:/\n4:memory:/\n1:cpu:/\n");
    (root, detected)
}

#[test]
fn on_v1_a_service_is_in_the_pids_hierarchy_and_those_its_limits_use() {
    let (root, detected) = v1_tree("v1-needed");
    let mut cgroups = Cgroups::setup(&detected, "hf").expect("setup");
    let plain = cgroups
        .service("plain", &CgroupLimits::default())
        .expect("no limits");
    assert_eq!(plain.dir(), root.join("pids/hf/plain"));
    assert!(!root.join("memory/hf/plain").exists() && !root.join("cpu/hf/plain").exists());
    touch(&root.join("pids/hf/plain/cgroup.procs"), "");
    assert_eq!(plain.open_procs().expect("one hierarchy").len(), 1);

    let quota = CgroupLimits {
        cpu_quota: Some(50),
        ..CgroupLimits::default()
    };
    cgroups.service("busy", &quota).expect("a cpu quota");
    let cpu = root.join("cpu/hf/busy");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert!(
        !cpu.join("cpu.cfs_period_us").exists() && !cpu.join("cpu.shares").exists(),
        "the kernel's default period and shares stand"
    );
    assert!(!root.join("memory/hf/busy").exists());
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn on_v1_a_reload_joins_the_hierarchy_of_a_new_limit_and_leaves_that_of_a_removed_one() {
    let (root, detected) = v1_tree("v1-reload");
    let mut cgroups = Cgroups::setup(&detected, "hf").expect("setup");
    let mut svc = cgroups
        .service("web", &CgroupLimits::default())
        .expect("no limits");
    let memory = CgroupLimits {
        memory: Some(64 << 20),
        ..CgroupLimits::default()
    };
    cgroups
        .apply(&mut svc, "web", &memory)
        .expect("a limit added");
    let mem = root.join("memory/hf/web");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
    touch(&mem.join("memory.oom_control"), "oom_kill 2\n");
    assert_eq!(svc.oom_kills(), Some(2));
    for dir in ["pids/hf/web", "memory/hf/web"] {
        touch(&root.join(dir).join("cgroup.procs"), "");
    }
    assert_eq!(svc.open_procs().expect("both hierarchies").len(), 2);

    // The fake directory holds files, so it cannot be removed, as a real one still
    // holding a process: it stays, with no limit.
    cgroups
        .apply(&mut svc, "web", &CgroupLimits::default())
        .expect("removed");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "-1");
    assert_eq!(svc.open_procs().expect("still joined").len(), 2);
    for file in fs::read_dir(&mem).expect("its files") {
        fs::remove_file(file.expect("a file").path()).expect("emptied");
    }
    let pids = CgroupLimits {
        pids: Some(100),
        ..CgroupLimits::default()
    };
    cgroups
        .apply(&mut svc, "web", &pids)
        .expect("another reload");
    assert!(
        !mem.exists(),
        "an empty one is removed: the next run is not in it"
    );
    assert_eq!(svc.oom_kills(), None);
    assert_eq!(svc.dirs(), [root.join("pids/hf/web")]);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_cgroup_removed_by_hand_is_reported_gone_when_opened() {
    let (root, detected) = v1_tree("v1-gone");
    let mut cgroups = Cgroups::setup(&detected, "hf").expect("setup");
    let mut svc = cgroups
        .service("web", &CgroupLimits::default())
        .expect("no limits");
    fs::remove_dir(svc.dir()).expect("removed by hand");
    let error = svc.open_procs().expect_err("gone");
    assert!(error.is_gone(), "{error}");
    // A fake directory has no `cgroup.procs` of its own: opening it fails again.
    let _ = cgroups.open(&mut svc, "web", &CgroupLimits::default());
    assert!(svc.dir().is_dir(), "created again");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_control_process_finds_its_units_cgroup_as_the_parent_of_dot_control() {
    let (root, _) = v2_tree("unit-find");
    assert_eq!(
        unit_cgroup_at(&root, "0::/svc.slice/holdfast.service/.control\n"),
        UnitCgroup::Delegated {
            version: Version::V2,
            dir: root.join("svc.slice/holdfast.service"),
        }
    );
    assert_eq!(
        unit_cgroup_at(&root, "0::/user.slice/session-1.scope\n"),
        UnitCgroup::NotControl("/user.slice/session-1.scope".to_owned())
    );
    let v1 = temp_tree("unit-find-v1");
    touch(&v1.join("pids/cgroup.procs"), "");
    assert_eq!(
        unit_cgroup_at(
            &v1,
            "3:pids:/system.slice/h.service\n1:name=systemd:/system.slice/h.service/.control\n"
        ),
        UnitCgroup::Delegated {
            version: Version::V1,
            dir: v1.join("systemd/system.slice/h.service"),
        }
    );
    assert_eq!(unit_cgroup_at(&v1, "3:pids:/x\n"), UnitCgroup::Unknown);
    let _ = fs::remove_dir_all(&root);
    let _ = fs::remove_dir_all(&v1);
}

#[test]
fn releasing_a_unit_disables_the_controllers_a_crashed_holdfast_enabled_deepest_first() {
    // What a holdfast killed under systemd leaves: itself gone from its leaf, controllers
    // enabled in the unit's cgroup and in its parent, services running in their cgroups.
    let (root, _) = v2_tree("unit-release");
    let unit = root.join("svc.slice/holdfast.service");
    touch(&unit.join("cgroup.subtree_control"), "cpu memory pids\n");
    touch(&unit.join("holdfast.daemon/cgroup.subtree_control"), "");
    touch(&unit.join("holdfast/cgroup.subtree_control"), "memory\n");
    touch(&unit.join("holdfast/db/cgroup.subtree_control"), "");
    touch(&unit.join("holdfast/db/memory.max"), "67108864");
    touch(&unit.join(".control/cgroup.subtree_control"), "");

    let released = release_controllers(&unit).expect("released");
    assert_eq!(
        released,
        vec![
            (unit.join("holdfast"), vec!["memory".to_owned()]),
            (
                unit.clone(),
                vec!["cpu".to_owned(), "memory".to_owned(), "pids".to_owned()]
            ),
        ],
        "the parent's controllers go before the unit's"
    );
    assert_eq!(
        read(&unit.join("cgroup.subtree_control")),
        "-cpu -memory -pids"
    );
    assert_eq!(
        read(&unit.join("holdfast/cgroup.subtree_control")),
        "-memory"
    );

    // A unit with nothing enabled (the first start, or v2 without controllers), and one
    // whose files are missing: nothing to do, no error.
    touch(&unit.join("cgroup.subtree_control"), "");
    touch(&unit.join("holdfast/cgroup.subtree_control"), "");
    assert_eq!(release_controllers(&unit).expect("nothing"), Vec::new());
    assert_eq!(
        release_controllers(&root.join("gone.service")).expect("missing"),
        Vec::new()
    );
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn after_a_release_an_adopted_services_cgroup_gets_its_controllers_and_limits_back() {
    // The restarted holdfast's setup finds its parent enabling nothing (released) and
    // the adopted service's cgroup there: attaching it writes every limit again.
    let (root, detected) = v2_tree("unit-readopt");
    let parent = root.join("svc.slice/holdfast");
    touch(&parent.join("cgroup.subtree_control"), "-memory -pids");
    touch(&parent.join("db/memory.max"), "max");
    let mut cgroups = Cgroups::setup(&detected, "holdfast").expect("setup");
    let limits = CgroupLimits {
        memory: Some(64 << 20),
        pids: Some(32),
        ..CgroupLimits::default()
    };
    cgroups.service("db", &limits).expect("adopted cgroup");
    assert_eq!(
        read(&parent.join("cgroup.subtree_control")),
        "+memory +pids"
    );
    assert_eq!(
        read(&parent.join("db/memory.max")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&parent.join("db/pids.max")), "32");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn the_leftovers_of_a_unit_are_listed_without_the_control_process() {
    let (root, _) = v2_tree("unit-pids");
    let unit = root.join("svc.slice/holdfast.service");
    touch(&unit.join("cgroup.procs"), "");
    touch(&unit.join("holdfast/db/cgroup.procs"), "101\n102\n");
    touch(&unit.join("holdfast/web/cgroup.procs"), "201\n");
    touch(&unit.join(".control/cgroup.procs"), "999\n");
    let mut pids = unit_pids(&unit);
    pids.sort();
    assert_eq!(
        pids,
        [101, 102, 201]
            .map(holdfast_core::unix::Pid::from_raw)
            .to_vec()
    );
    let _ = fs::remove_dir_all(&root);
}
