//! `holdfast import supervisord FILE`: a supervisord.conf as a holdfast config (the
//! conversion is `interop::supervisord`).
//!
//! The config goes to stdout or `--output`; the report of what does not carry over goes
//! to stderr (as JSON with `--json`). A file supervisord would refuse gets one error
//! naming its line, exit code 3, and nothing is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use miette::{IntoDiagnostic, WrapErr};

use crate::cli::exit;
use crate::interop::supervisord::{self, Context, Finding};

#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// The `[program:x]` sections of a supervisord.conf.
    Supervisord(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The supervisord config file.
    pub file: PathBuf,
    /// Write the holdfast config here instead of stdout.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Print the report of unconverted options as JSON (on stderr).
    #[arg(long)]
    pub json: bool,
}

pub fn run(source: ImportSource) -> miette::Result<ExitCode> {
    let ImportSource::Supervisord(args) = source;
    let text = std::fs::read_to_string(&args.file)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", args.file.display()))?;
    let origin = args.file.display().to_string();
    let imported = match supervisord::import(&text, &origin, &context(&args.file)) {
        Ok(imported) => imported,
        Err(err) => {
            eprintln!("error: {origin}:{}: {}", err.line, err.message);
            return Ok(ExitCode::from(exit::INVALID_CONFIG));
        }
    };
    match &args.output {
        Some(path) => write_private(path, &imported.toml)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write {}", path.display()))?,
        None => print!("{}", imported.toml),
    }
    report(&origin, &imported.report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` readable by its owner only: `%(ENV_X)s` values of the importing shell
/// (tokens, passwords) may be in it.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through open: narrow it before writing.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// What supervisord would see reading `file` here and now.
fn context(file: &Path) -> Context {
    let here = std::path::absolute(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Context {
        here,
        env: std::env::vars().collect(),
        host_node_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
    }
}

fn report(origin: &str, findings: &[Finding], json: bool) -> miette::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(findings).into_diagnostic()?;
        eprintln!("{text}");
        return Ok(());
    }
    if findings.is_empty() {
        eprintln!("{origin}: every option converted");
        return Ok(());
    }
    eprintln!("{origin}: {} settings not converted:", findings.len());
    for finding in findings {
        eprintln!("  {finding}");
    }
    Ok(())
}
