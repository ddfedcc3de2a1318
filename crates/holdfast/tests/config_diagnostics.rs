//! What users see when a config is wrong: the rendered report, snapshotted.
//!
//! Each case is a small file with a known mistake; the snapshot shows the file:line:column,
//! the underlined snippet, the label and the help hint. Review line:column by eye when a
//! snapshot changes: the inputs below are short enough to count.

use std::path::Path;

use holdfast::config;

fn report(src: &str) -> String {
    config::parse(src, "holdfast.toml", Path::new("/etc/holdfast"))
        .expect_err("this config has a mistake")
        .render_plain()
}

#[test]
fn a_duration_written_as_a_bare_number_is_a_type_error_with_a_hint() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"]
restart_sec = 5
"#
    ));
}

#[test]
fn a_string_where_a_number_belongs_names_the_expected_type() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"]
start_limit = { interval = "10s", burst = "three" }
"#
    ));
}

#[test]
fn an_unknown_key_suggests_the_closest_valid_one() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"]
restat = "always"
"#
    ));
}

#[test]
fn a_zero_burst_suggests_disabling_restarts_instead() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"]
start_limit = { interval = "10s", burst = 0 }
"#
    ));
}

#[test]
fn an_unknown_after_target_suggests_a_declared_service() {
    insta::assert_snapshot!(report(
        r#"[service.db]
command = ["/usr/bin/db"]

[service.api]
command = ["/usr/bin/server"]
after = ["dbb"]
"#
    ));
}

#[test]
fn a_dependency_cycle_is_shown_as_a_path() {
    insta::assert_snapshot!(report(
        r#"[service.a]
command = ["/bin/a"]
after = ["b"]

[service.b]
command = ["/bin/b"]
after = ["a"]
"#
    ));
}

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = "/usr/bin/server --port 8080"
restat = "always"

[service.worker]
command = ["/usr/bin/worker"]
start_limit = { burst = 0 }
"#
    ));
}

#[test]
fn a_syntax_error_points_at_the_broken_spot() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"
restart = "always"
"#
    ));
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/holdfast.toml");
    let plan = config::load(&path).unwrap_or_else(|err| panic!("{}", err.render_plain()));
    let names: Vec<&str> = plan.services.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["api", "db", "worker"]);
}

#[test]
fn an_unreadable_file_is_reported_with_its_path() {
    let err = config::load(Path::new("/nonexistent/holdfast.toml")).expect_err("no such file");
    let text = err.render_plain();
    assert!(
        text.contains("failed to read config file \"/nonexistent/holdfast.toml\""),
        "{text}"
    );
}

// `holdfast check`, through the real binary.

fn holdfast_check(file: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("check")
        .arg(file)
        .output()
        .expect("the holdfast binary runs")
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("temp file is writable");
    path
}

#[test]
fn check_summarises_a_valid_config_and_exits_zero() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/holdfast.toml");
    let out = holdfast_check(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    assert_eq!(
        stdout,
        format!("ok: {}: 3 services (api, db, worker)\n", path.display())
    );
}

#[test]
fn check_reports_every_problem_and_exits_with_invalid_config() {
    let path = temp_file(
        "bad.toml",
        "[service.a]\ncommand = [\"sleep\"]\nrestat = \"no\"\nstart_limit = { burst = 0 }\n",
    );
    let out = holdfast_check(&path);
    std::fs::remove_dir_all(path.parent().expect("temp file has a dir")).ok();
    assert_eq!(out.status.code(), Some(3), "exit::INVALID_CONFIG");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 output");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(stderr.contains("bad.toml:3:1]"), "typo location: {stderr}");
    assert!(
        stderr.contains("bad.toml:4:25]"),
        "burst location: {stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no colour when stderr is not a terminal"
    );
}

#[test]
fn check_names_an_unreadable_file_and_fails() {
    let out = holdfast_check(Path::new("/nonexistent/holdfast.toml"));
    assert_eq!(out.status.code(), Some(1), "exit::FAILURE");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 output");
    assert!(
        stderr.contains("\"/nonexistent/holdfast.toml\""),
        "{stderr}"
    );
}

#[test]
fn a_duration_past_the_bound_is_rejected_and_infinity_only_where_a_timeout_takes_it() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"]
start_timeout = "18446744073709551615s"
hook_timeout = "400d"
restart_sec = "infinity"
stop = { timeout = "infinity" }
"#
    ));
}

// What would fail at spawn, judged against a fake machine so the snapshots do not depend
// on the host: 2 CPUs, nr_open 1048576, and only the files listed.

struct FakeHost;

impl config::HostFacts for FakeHost {
    fn file(&self, path: &Path) -> config::FileKind {
        match path.to_str() {
            Some("/usr/bin/server" | "/usr/bin/sleep" | "/opt/api/current/server") => {
                config::FileKind::File { executable: true }
            }
            Some("/srv/app/README") => config::FileKind::File { executable: false },
            Some("/srv/app") => config::FileKind::Directory,
            _ => config::FileKind::Missing,
        }
    }
    fn cpus(&self) -> Option<usize> {
        Some(2)
    }
    fn nr_open(&self) -> Option<u64> {
        Some(1_048_576)
    }
    fn own_path(&self) -> Option<String> {
        Some("/usr/bin".to_owned())
    }
    fn is_symlink(&self, path: &Path) -> bool {
        path == Path::new("/opt/api/current")
    }
    fn canonical(&self, path: &Path) -> Option<std::path::PathBuf> {
        Some(match path.strip_prefix("/opt/api/current") {
            Ok(rest) => Path::new("/opt/api/a").join(rest),
            Err(_) => path.to_owned(),
        })
    }
}

fn host_report(src: &str) -> String {
    config::parse_on_host(src, "holdfast.toml", Path::new("/etc/holdfast"), &FakeHost)
        .expect_err("this config cannot run on the fake host")
        .render_plain()
}

#[test]
fn a_program_that_does_not_exist_is_reported_with_its_path() {
    insta::assert_snapshot!(host_report(
        r#"[service.api]
command = ["/usr/bin/sever", "--port", "8080"]
"#
    ));
}

#[test]
fn a_bare_program_name_is_looked_up_in_the_default_path() {
    insta::assert_snapshot!(host_report(
        r#"[service.api]
command = ["serverd"]

[service.worker]
command = ["sleep", "1000"]
env = { PATH = "/opt/bin" }
"#
    ));
}

#[test]
fn a_program_without_execute_permission_is_reported() {
    insta::assert_snapshot!(host_report(
        r#"[service.api]
command = ["./README"]
working_dir = "/srv/app"
"#
    ));
}

#[test]
fn a_missing_working_dir_is_reported() {
    insta::assert_snapshot!(host_report(
        r#"[service.api]
command = ["/usr/bin/server"]
working_dir = "/srv/gone"
"#
    ));
}

#[test]
fn a_cpu_the_machine_does_not_have_is_reported() {
    insta::assert_snapshot!(host_report(
        r#"[service.api]
command = ["/usr/bin/server"]
cpu_affinity = [0, 1, 2]
"#
    ));
}

#[test]
fn nofile_above_nr_open_is_reported() {
    insta::assert_snapshot!(host_report(
        r#"[service.api]
command = ["/usr/bin/server"]
limits = { nofile = 2000000 }

[service.worker]
command = ["/usr/bin/sleep", "1000"]
limits = { nofile = "infinity" }
"#
    ));
}

#[test]
fn two_services_waiting_for_the_same_port_are_reported() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"]
ready = { tcp = "127.0.0.1:8080" }

[service.admin]
command = ["/usr/bin/server"]
ready = { http = "http://0.0.0.0:8080/health" }
"#
    ));
}

#[test]
fn check_warns_about_a_config_without_services_and_exits_zero() {
    let path = temp_file("empty.toml", "[holdfast]\n");
    let out = holdfast_check(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(0), "a warning is not an error");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 output");
    assert!(
        stderr.starts_with("warning: ") && stderr.contains("no [service.*] tables"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    assert!(stdout.contains(": 0 services"), "{stdout}");
}

#[test]
fn check_rejects_what_would_fail_at_spawn_on_this_machine() {
    let path = temp_file(
        "spawn.toml",
        "[service.a]\ncommand = [\"no-such-program-xyz\"]\nworking_dir = \"/nonexistent/dir\"\n\
         cpu_affinity = [1000]\nlimits = { nofile = \"infinity\" }\n",
    );
    let out = holdfast_check(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(3), "exit::INVALID_CONFIG");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 output");
    assert!(
        stderr.contains("spawn.toml:2:12]"),
        "command location: {stderr}"
    );
    assert!(stderr.contains("not found in PATH"), "{stderr}");
    assert!(stderr.contains("spawn.toml:3:15]"), "working_dir: {stderr}");
    assert!(stderr.contains("no such directory"), "{stderr}");
    assert!(stderr.contains("no such CPU"), "{stderr}");
    assert!(stderr.contains("above nr_open"), "{stderr}");
}

#[test]
fn upgrade_modes_that_lack_what_they_need_say_what_to_add() {
    insta::assert_snapshot!(report(
        r#"[service.handover]
command = ["/usr/bin/server"]
[service.handover.upgrade]
mode = "handover"

[service.proxy]
command = ["/usr/bin/server"]
listen = ["unix:/run/proxy.sock"]
[service.proxy.upgrade]
mode = "proxy"
proxy = "http"

[service.reuse]
command = ["/usr/bin/server", "--port", "{port}"]
listen = ["tcp://127.0.0.1:8080"]
[service.reuse.upgrade]
mode = "reuseport"
"#
    ));
}

#[test]
fn bad_listen_addresses_and_upgrade_values_are_each_reported() {
    insta::assert_snapshot!(report(
        r#"[service.api]
command = ["/usr/bin/server"]
listen = ["tcp://localhost:80", "unix:run/api.sock", "udp://0.0.0.0:53", "tcp://0.0.0.0:8080", "tcp://127.0.0.1:8080"]
backlog = 0
[service.api.upgrade]
mode = "handoff"
ready_timeout = "0s"
checksum = "always"
ports = "31000-31099"
verify = { timeout = "5s" }
"#
    ));
}

#[test]
fn the_watched_link_must_be_a_symlink_and_hold_the_program() {
    let src = r#"[service.api]
command = ["/usr/bin/server"]
listen = ["tcp://127.0.0.1:8080"]
[service.api.upgrade]
mode = "handover"
watch = "/srv/app"
"#;
    insta::assert_snapshot!(host_report(src));
}

#[test]
fn the_build_is_the_program_behind_the_watched_link() {
    let src = r#"[service.api]
command = ["/opt/api/current/server"]
listen = ["tcp://127.0.0.1:8080"]
[service.api.upgrade]
mode = "handover"
watch = "/opt/api/current"
"#;
    let plan = config::parse_on_host(src, "holdfast.toml", Path::new("/etc/holdfast"), &FakeHost)
        .expect("valid on the fake host");
    let api = &plan.services[&"api".parse().expect("name")];
    let upgrade = api.upgrade.as_ref().expect("[upgrade] is set");
    assert_eq!(upgrade.build, Path::new("/opt/api/a/server"));
    assert_eq!(api.command[0], "/opt/api/current/server");
}
