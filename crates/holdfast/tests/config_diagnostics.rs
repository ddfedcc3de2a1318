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
        "[service.a]\ncommand = [\"a\"]\nrestat = \"no\"\nstart_limit = { burst = 0 }\n",
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
