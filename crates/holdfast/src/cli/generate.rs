//! `holdfast gen systemd|supervisord`: a holdfast config as another supervisor's unit
//! or program section (the conversions are in `interop`).
//!
//! The config is loaded and validated like `holdfast check` does it: a config with
//! problems gets the same diagnostics, exit code 3 and no output at all.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use miette::{IntoDiagnostic, WrapErr, miette};

use crate::cli::exit;
use crate::config::{self, ConfigError, Templates};
use crate::interop::supervisord;
use crate::interop::systemd::{self, GeneratedUnit, SelfInputs, Template};
use crate::model::{Plan, ServiceSpec};

#[derive(Debug, Subcommand)]
pub enum GenTarget {
    /// A systemd unit: of one service (`NAME.service`, `NAME@.service` for instances) or,
    /// with --self, of holdfast itself.
    Systemd(SystemdArgs),
    /// supervisord `[program:NAME]` sections of services.
    Supervisord(SupervisordArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(
        long,
        short = 'c',
        env = "HOLDFAST_CONFIG",
        default_value = "/etc/holdfast/holdfast.toml"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct SystemdArgs {
    /// The service (its config table's name).
    #[arg(required_unless_present = "self_unit", conflicts_with = "self_unit")]
    pub name: Option<String>,
    /// The unit that runs holdfast itself with this config.
    #[arg(long = "self")]
    pub self_unit: bool,
    /// With --self: the holdfast binary the unit runs, where it is not this one (a
    /// container's or another host's path) [default: this binary].
    #[arg(long, conflicts_with = "name", value_name = "PATH")]
    pub exe: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write the unit into this directory (as NAME.service) instead of stdout.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SupervisordArgs {
    /// The services (their config tables' names); their service_groups become
    /// [group:x] sections.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(target: GenTarget) -> miette::Result<ExitCode> {
    match target {
        GenTarget::Systemd(args) => systemd_unit(&args),
        GenTarget::Supervisord(args) => supervisord_program(&args),
    }
}

fn systemd_unit(args: &SystemdArgs) -> miette::Result<ExitCode> {
    let path = &args.config.config;
    let (plan, templates) = match load(path)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let unit = match &args.name {
        None => self_unit(&plan, path, args.exe.as_deref())?,
        Some(name) => {
            let (spec, count) = find(&plan, name)?;
            let template = match count {
                1 => None,
                count => Some(template(&templates, spec, count)?),
            };
            systemd::service_unit(spec, &plan, template.as_ref()).into_diagnostic()?
        }
    };
    emit(&unit, args.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

fn self_unit(plan: &Plan, config: &Path, exe: Option<&Path>) -> miette::Result<GeneratedUnit> {
    let exe = match exe {
        Some(exe) if exe.is_absolute() => exe.to_path_buf(),
        Some(exe) => return Err(miette!("--exe {} must be an absolute path", exe.display())),
        None => std::env::current_exe()
            .into_diagnostic()
            .wrap_err("cannot find the running holdfast binary")?,
    };
    let inputs = SelfInputs {
        exe,
        config: std::path::absolute(config).into_diagnostic()?,
    };
    systemd::self_unit(plan, &inputs).into_diagnostic()
}

/// The validated plan (with its instanced services as written), or the exit code after
/// the diagnostics were printed.
pub(crate) fn load(path: &Path) -> miette::Result<Result<(Plan, Templates), ExitCode>> {
    match config::load_with_templates(path) {
        Ok(loaded) => Ok(Ok(loaded)),
        Err(err @ ConfigError::Read { .. }) => Err(err.into()),
        Err(err) => {
            eprint!("{}", err.render_terminal(std::io::stderr().is_terminal()));
            Ok(Err(ExitCode::from(exit::INVALID_CONFIG)))
        }
    }
}

/// The service named `name` in the config (for instances: the first) and how many
/// copies run.
pub(crate) fn find<'p>(plan: &'p Plan, name: &str) -> miette::Result<(&'p ServiceSpec, u32)> {
    let copies: Vec<&ServiceSpec> = plan
        .services
        .values()
        .filter(|s| {
            s.name.as_str() == name || s.instance.as_ref().is_some_and(|i| i.base.as_str() == name)
        })
        .collect();
    let Some(first) = copies.first() else {
        let known: Vec<&str> = plan.services.values().map(|s| s.name.base()).collect();
        return Err(miette!(
            "no service {name:?} in the config (services: {})",
            known.join(", ")
        ));
    };
    let count = if first.name.instance_index().is_some() {
        u32::try_from(copies.len()).unwrap_or(u32::MAX)
    } else {
        1
    };
    Ok((first, count))
}

/// `command` and `env` of `[service.NAME]` as written, `{instance}` and all (the plan
/// has them filled in per instance), from the loaded config's templates.
fn template(templates: &Templates, spec: &ServiceSpec, count: u32) -> miette::Result<Template> {
    let base = spec.instance.as_ref().map_or(&spec.name, |i| &i.base);
    let written = templates
        .get(base)
        .ok_or_else(|| miette!("no [service.{base}] table"))?;
    Ok(Template {
        count,
        command: written.command.clone(),
        env: written.env.clone(),
    })
}

/// The unit on stdout, or into `dir` (announced on stderr).
fn emit(unit: &GeneratedUnit, dir: Option<&Path>) -> miette::Result<()> {
    let Some(dir) = dir else {
        print!("{}", unit.text);
        return Ok(());
    };
    let path = dir.join(&unit.file_name);
    std::fs::write(&path, &unit.text)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn supervisord_program(args: &SupervisordArgs) -> miette::Result<ExitCode> {
    let path = &args.config.config;
    let (plan, templates) = match load(path)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut text = String::new();
    let mut specs = Vec::new();
    for name in &args.names {
        let (spec, count) = find(&plan, name)?;
        let template = match count {
            1 => None,
            count => Some(template(&templates, spec, count)?),
        };
        let priority = supervisord::export::priority(&plan, &spec.name);
        text +=
            &supervisord::export::program(spec, template.as_ref(), priority).into_diagnostic()?;
        specs.push(spec);
    }
    text += &supervisord::export::groups(specs);
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
