//! `holdfast demo`: supervise the bundled demo app on an embedded config.
//!
//! Works from a fresh clone with `cargo run --release -- demo`: demo-app is built on
//! demand with the same cargo and profile that built holdfast.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{Context, IntoDiagnostic, bail};

const TEMPLATE: &str = include_str!("demo.toml");

pub fn run() -> miette::Result<ExitCode> {
    let demo_app = demo_app()?;
    let dir = std::env::temp_dir().join(format!("holdfast-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).into_diagnostic()?;
    let config = dir.join("holdfast.toml");
    let rendered = TEMPLATE
        .replace("{DIR}", &dir.display().to_string())
        .replace("{DEMO_APP}", &demo_app.display().to_string());
    std::fs::write(&config, rendered)
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to write {}", config.display()))?;

    let me = std::env::current_exe().into_diagnostic()?;
    let socket = dir.join("control.sock");
    // Made now (`up` reuses it), so that the URL printed below opens the controls too.
    let token_path = crate::web::token::path(&dir.join("state"));
    std::fs::create_dir_all(dir.join("state")).into_diagnostic()?;
    let token = crate::web::token::Token::load_or_create(&token_path).into_diagnostic()?;
    println!(
        "\
holdfast demo: supervising 3 demo-app services (web, api, worker)
  dashboard  http://127.0.0.1:9700/#token={token}
  config     {config}
  web        http://127.0.0.1:18080/   api http://127.0.0.1:18081/   worker http://127.0.0.1:18082/
  status     {me} status -s {socket}
  logs       {me} logs worker -f -s {socket}
  try        curl 127.0.0.1:18080/crash?code=7   (watch it come back)
             {me} stop api -s {socket}; edit the config, then {me} reload -s {socket}
  Ctrl-C stops everything cleanly.
",
        config = config.display(),
        me = me.display(),
        socket = socket.display(),
        token = token.expose(),
    );
    let code = super::up::run(&config, super::up::LogArgs::default())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(code)
}

/// The demo-app binary next to holdfast's own, built with cargo if it is missing.
fn demo_app() -> miette::Result<PathBuf> {
    let me = std::env::current_exe().into_diagnostic()?;
    let dir = me.parent().expect("an executable lives in a directory");
    let candidate = dir.join("demo-app");
    if candidate.exists() {
        return Ok(candidate);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let release = dir.file_name().is_some_and(|n| n == "release");
    eprintln!("holdfast demo: building demo-app (first run only)…");
    let mut build = std::process::Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "--quiet", "-p", "demo-app"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .into_diagnostic()
        .wrap_err("failed to run cargo to build demo-app")?;
    if !status.success() || !candidate.exists() {
        bail!(
            help = "build it by hand: cargo build --release -p demo-app",
            "could not build demo-app ({status})"
        );
    }
    Ok(candidate)
}
