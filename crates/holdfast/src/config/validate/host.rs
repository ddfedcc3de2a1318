//! Checks against the machine the config will run on: what would make a spawn fail.
//!
//! A program that is not there, a `working_dir` that is missing, a CPU the machine does
//! not have, a `nofile` above the kernel's ceiling: each of these passes the schema but
//! fails every spawn, so `check`, `up` and `reload` reject them up front (systemd, too,
//! refuses to start a unit whose `ExecStart=` binary is missing). The facts come through
//! [`HostFacts`] so the rules are unit-tested against a fake machine; the real one is
//! [`SystemHost`].
//!
//! These are judged at check time on the host that checks: a program installed only
//! after `check` ran is reported missing, on purpose (install first, then check).

use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use crate::config::diagnostic::Problem;
use crate::config::raw::{RawCommand, RawService};
use crate::model::{Rlimit, ServiceSpec, defaults};
use crate::process::program::{self, Found, NotFound};

pub use super::trust::Ownership;
pub use crate::process::program::FileKind;

/// The facts about the machine that host checks need.
pub trait HostFacts {
    fn file(&self, path: &Path) -> FileKind;
    /// CPUs the machine has (configured, online or not); `None` when unknown.
    fn cpus(&self) -> Option<usize>;
    /// `/proc/sys/fs/nr_open`: the highest `RLIMIT_NOFILE` the kernel allows.
    fn nr_open(&self) -> Option<u64>;
    /// holdfast's own `PATH`, which a service gets with `inherit_env = true` or with
    /// `PATH` in `[holdfast] pass_env`.
    fn own_path(&self) -> Option<String>;
    /// Whether `path` itself is a symlink (`lstat`).
    fn is_symlink(&self, path: &Path) -> bool;
    /// `path` with every symlink resolved (`realpath`); `None` when that fails.
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
    /// Whether holdfast runs as root: only then does it refuse what others could
    /// rewrite ([`super::trust`]). Fakes that do not say run as another user.
    fn runs_as_root(&self) -> bool {
        false
    }
    /// Owner and mode of `path` (following links); `None` when it cannot be read.
    fn ownership(&self, _path: &Path) -> Option<Ownership> {
        None
    }
}

/// The machine holdfast runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl HostFacts for SystemHost {
    fn file(&self, path: &Path) -> FileKind {
        FileKind::of(path)
    }

    fn cpus(&self) -> Option<usize> {
        use nix::unistd::{SysconfVar, sysconf};
        let n = sysconf(SysconfVar::_NPROCESSORS_CONF).ok().flatten()?;
        usize::try_from(n).ok().filter(|n| *n > 0)
    }

    fn own_path(&self) -> Option<String> {
        std::env::var("PATH").ok()
    }

    fn is_symlink(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn runs_as_root(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn ownership(&self, path: &Path) -> Option<Ownership> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Ownership {
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            directory: meta.is_dir(),
        })
    }

    fn nr_open(&self) -> Option<u64> {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Every host problem of one service whose spec validated; also sets the build of its
/// `[upgrade]` (the program resolved to its real path, which runs use until an upgrade).
pub(super) fn check_service(
    svc: &str,
    raw: &RawService,
    spec: &mut ServiceSpec,
    pass_env: &[String],
    host: &dyn HostFacts,
    problems: &mut Vec<Problem>,
) {
    let ctx = Ctx {
        svc,
        host,
        pass_env,
    };
    let unrunnable = ctx
        .program(raw, spec)
        .or_else(|| ctx.replaceable(raw, spec));
    if let (None, Some(_)) = (&unrunnable, &spec.upgrade) {
        match ctx.build(raw, spec) {
            Ok(build) => spec.upgrade.as_mut().expect("matched above").build = build,
            Err(problem) => problems.extend(problem),
        }
    }
    problems.extend(unrunnable);
    problems.extend(ctx.watch(raw, spec));
    problems.extend(ctx.working_dir(raw));
    problems.extend(ctx.cpu_affinity(raw));
    problems.extend(ctx.nofile(raw, spec));
}

struct Ctx<'a> {
    svc: &'a str,
    host: &'a dyn HostFacts,
    /// `[holdfast] pass_env`.
    pass_env: &'a [String],
}

/// Why a program cannot be executed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unrunnable {
    /// A path (with `/`) that does not exist.
    Missing(PathBuf),
    /// A path that exists but is a directory or has no execute bit.
    NotExecutable(PathBuf),
    /// A name without `/` found nowhere in the search path.
    NotInPath,
    /// A name found in the search path only without execute bits.
    NotExecutableInPath(PathBuf),
}

/// Resolves `program` with spawn's lookup ([`program::lookup`]), and checks a path
/// written with `/` too: relative to `working_dir`, where the child has `chdir`ed before
/// `execve`.
fn resolve(
    program: &str,
    search: &str,
    working_dir: Option<&Path>,
    host: &dyn HostFacts,
) -> Result<PathBuf, Unrunnable> {
    let written = match program::lookup(program, search, working_dir, |path| host.file(path)) {
        Ok(Found::InPath(path)) => return Ok(path),
        Ok(Found::AsWritten(path)) => path,
        Err(NotFound::Nowhere) => return Err(Unrunnable::NotInPath),
        Err(NotFound::NotExecutable(path)) => return Err(Unrunnable::NotExecutableInPath(path)),
    };
    let path = match working_dir {
        Some(dir) if written.is_relative() => {
            dir.join(program.strip_prefix("./").unwrap_or(program))
        }
        _ => written,
    };
    match host.file(&path) {
        FileKind::File { executable: true } => Ok(path),
        FileKind::Missing => Err(Unrunnable::Missing(path)),
        _ => Err(Unrunnable::NotExecutable(path)),
    }
}

impl Ctx<'_> {
    /// The `PATH` the service's spawn searches, as the service's environment will have
    /// it: `env.PATH`, else holdfast's own (`inherit_env`, or `PATH` in `pass_env`), else
    /// the fixed default.
    fn search_path(&self, spec: &ServiceSpec) -> String {
        if let Some(path) = spec.env.get("PATH") {
            return path.clone();
        }
        let inherited = spec.inherit_env || self.pass_env.iter().any(|v| v == "PATH");
        match self.host.own_path() {
            Some(path) if inherited => path,
            _ => defaults::PATH.to_owned(),
        }
    }

    fn program(&self, raw: &RawService, spec: &ServiceSpec) -> Option<Problem> {
        let svc = self.svc;
        let span = match raw.command.as_ref().map(Spanned::get_ref) {
            Some(RawCommand::Args(args)) => args.first()?.span(),
            _ => return None,
        };
        let program = spec.command.first()?;
        let search = self.search_path(spec);
        let error = resolve(program, &search, spec.working_dir.as_deref(), self.host).err()?;
        let problem = match error {
            Unrunnable::Missing(path) => Problem::new(
                format!("program of `service.{svc}.command` does not exist"),
                span,
                format!("no such file: {}", path.display()),
            )
            .with_help("install it, or correct the path; every start would fail with ENOENT"),
            Unrunnable::NotExecutable(path) => Problem::new(
                format!("program of `service.{svc}.command` is not executable"),
                span,
                format!("not an executable file: {}", path.display()),
            )
            .with_help(format!(
                "make it executable (chmod +x {}) or name the program itself",
                path.display()
            )),
            Unrunnable::NotInPath => Problem::new(
                format!("program `{program}` of `service.{svc}.command` is not in PATH"),
                span,
                "not found in PATH",
            )
            .with_help(format!(
                "write its absolute path, or set `env.PATH`; the search path is {search}"
            )),
            Unrunnable::NotExecutableInPath(path) => Problem::new(
                format!("program `{program}` of `service.{svc}.command` is not executable"),
                span,
                format!("found without execute permission: {}", path.display()),
            )
            .with_help(format!("make it executable (chmod +x {})", path.display())),
        };
        Some(problem)
    }

    /// A program (or its build) that another user could replace, when holdfast runs as
    /// root: every start would run that user's code as the service's user.
    fn replaceable(&self, raw: &RawService, spec: &ServiceSpec) -> Option<Problem> {
        let span = match raw.command.as_ref().map(Spanned::get_ref) {
            Some(RawCommand::Args(args)) => args.first()?.span(),
            _ => return None,
        };
        let search = self.search_path(spec);
        let found = resolve(
            spec.command.first()?,
            &search,
            spec.working_dir.as_deref(),
            self.host,
        );
        let why = super::trust::program(&found.ok()?, self.host)?;
        Some(
            Problem::new(
                format!("program of `service.{}.command` could be replaced by another user", self.svc),
                span,
                why,
            )
            .with_help("holdfast runs as root: make the program writable only by its owner (chmod o-w), or install it where only root writes"),
        )
    }

    /// The real path of the program spawn runs (the lookup `program` checked), so that a
    /// later flip of `upgrade.watch` changes nothing until it is rolled out.
    fn build(&self, raw: &RawService, spec: &ServiceSpec) -> Result<PathBuf, Option<Problem>> {
        let span = match raw.command.as_ref().map(Spanned::get_ref) {
            Some(RawCommand::Args(args)) => args.first().ok_or(None)?.span(),
            _ => return Err(None),
        };
        let program = spec.command.first().ok_or(None)?;
        let search = self.search_path(spec);
        let found =
            resolve(program, &search, spec.working_dir.as_deref(), self.host).map_err(|_| None)?;
        self.host.canonical(&found).ok_or_else(|| {
            Some(
                Problem::new(
                    format!("cannot resolve the build of `service.{}`", self.svc),
                    span,
                    format!("no real path for {}", found.display()),
                )
                .with_help(
                    "upgrades need the program's real path: check the links it goes through",
                ),
            )
        })
    }

    /// `upgrade.watch` is the link a deploy flips, so it must be one.
    fn watch(&self, raw: &RawService, spec: &ServiceSpec) -> Option<Problem> {
        let watch = spec.upgrade.as_ref()?.watch.as_ref()?;
        if self.host.is_symlink(watch) {
            return None;
        }
        let span = raw.upgrade.as_ref()?.get_ref().watch.as_ref()?.span();
        let label = match self.host.file(watch) {
            FileKind::Missing => "no such file",
            FileKind::Directory => "a directory, not a symlink",
            FileKind::File { .. } => "a file, not a symlink",
        };
        Some(
            Problem::new(
                format!("`service.{}.upgrade.watch` is not a symlink", self.svc),
                span,
                label,
            )
            .with_help(format!(
                "watch the link a deploy flips, e.g. ln -sfn /opt/app/releases/1 {}",
                watch.display()
            )),
        )
    }

    fn working_dir(&self, raw: &RawService) -> Option<Problem> {
        let dir = raw.working_dir.as_ref()?;
        let path = Path::new(dir.get_ref());
        if !path.is_absolute() {
            return None; // already reported by validation
        }
        let svc = self.svc;
        let label = match self.host.file(path) {
            FileKind::Directory => return None,
            FileKind::Missing => "no such directory",
            FileKind::File { .. } => "not a directory",
        };
        Some(
            Problem::new(
                format!("`service.{svc}.working_dir` does not exist"),
                dir.span(),
                label,
            )
            .with_help(format!(
                "create it (mkdir -p {}) or point working_dir at an existing directory",
                path.display()
            )),
        )
    }

    fn cpu_affinity(&self, raw: &RawService) -> Vec<Problem> {
        // The host is asked only for a service that lists CPUs (a sysfs read each time).
        let Some(cpus) = &raw.cpu_affinity else {
            return Vec::new();
        };
        let Some(have) = self.host.cpus() else {
            return Vec::new();
        };
        let svc = self.svc;
        cpus.iter()
            .filter(|cpu| usize::try_from(*cpu.get_ref()).is_ok_and(|n| n >= have))
            .map(|cpu| {
                Problem::new(
                    format!(
                        "CPU {} in `service.{svc}.cpu_affinity` does not exist on this machine",
                        cpu.get_ref()
                    ),
                    cpu.span(),
                    "no such CPU",
                )
                .with_help(format!(
                    "this machine has {have} CPU{}: list numbers from 0 to {}",
                    if have == 1 { "" } else { "s" },
                    have - 1
                ))
            })
            .collect()
    }

    fn nofile(&self, raw: &RawService, spec: &ServiceSpec) -> Option<Problem> {
        let span = raw.limits.as_ref()?.get_ref().nofile.as_ref()?.span();
        let nr_open = self.host.nr_open()?;
        let label = match spec.limits.nofile? {
            Rlimit::Value(n) if n <= nr_open => return None,
            Rlimit::Value(_) => format!("above nr_open ({nr_open})"),
            // RLIM_INFINITY is above any nr_open: setrlimit fails with EPERM.
            Rlimit::Infinity => format!("infinity is above nr_open ({nr_open})"),
        };
        let svc = self.svc;
        Some(
            Problem::new(
                format!("`service.{svc}.limits.nofile` is above the kernel's limit"),
                span,
                label,
            )
            .with_help(format!(
                "use at most {nr_open} (/proc/sys/fs/nr_open), or raise fs.nr_open with sysctl"
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A machine with exactly these files and directories.
    struct Fake {
        files: BTreeMap<&'static str, FileKind>,
    }

    impl HostFacts for Fake {
        fn file(&self, path: &Path) -> FileKind {
            let path = path.to_str().expect("test paths are utf-8");
            self.files.get(path).copied().unwrap_or(FileKind::Missing)
        }
        fn cpus(&self) -> Option<usize> {
            Some(2)
        }
        fn nr_open(&self) -> Option<u64> {
            Some(1024)
        }
        fn own_path(&self) -> Option<String> {
            Some("/opt/app/bin".to_owned())
        }
        fn is_symlink(&self, _: &Path) -> bool {
            false
        }
        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            Some(path.to_owned())
        }
    }

    fn fake() -> Fake {
        let exe = FileKind::File { executable: true };
        let data = FileKind::File { executable: false };
        Fake {
            files: BTreeMap::from([
                ("/usr/bin/sleep", exe),
                ("/usr/local/bin/tool", data),
                ("/bin/tool", exe),
                ("/opt/app/bin/run", exe),
                ("/opt/app", FileKind::Directory),
                ("/opt/data", data),
            ]),
        }
    }

    #[test]
    fn bare_names_are_searched_in_order_and_skip_non_executable_files() {
        let host = fake();
        assert_eq!(
            resolve("sleep", defaults::PATH, None, &host),
            Ok(PathBuf::from("/usr/bin/sleep"))
        );
        assert_eq!(
            resolve("tool", defaults::PATH, None, &host),
            Ok(PathBuf::from("/bin/tool")),
            "a non-executable earlier match does not stop the search"
        );
        assert_eq!(
            resolve("tool", "/usr/local/bin", None, &host),
            Err(Unrunnable::NotExecutableInPath(
                "/usr/local/bin/tool".into()
            ))
        );
        assert_eq!(
            resolve("nope", defaults::PATH, None, &host),
            Err(Unrunnable::NotInPath)
        );
        assert_eq!(
            resolve("sleep", ":/nowhere:", None, &host),
            Err(Unrunnable::NotInPath),
            "empty entries do not mean the current directory"
        );
    }

    #[test]
    fn paths_resolve_relative_to_the_working_dir() {
        let host = fake();
        let app = Some(Path::new("/opt/app"));
        assert_eq!(
            resolve("bin/run", "", app, &host),
            Ok(PathBuf::from("/opt/app/bin/run"))
        );
        assert_eq!(
            resolve("/opt/app", "", None, &host),
            Err(Unrunnable::NotExecutable("/opt/app".into()))
        );
        assert_eq!(
            resolve("/opt/data", "", None, &host),
            Err(Unrunnable::NotExecutable("/opt/data".into()))
        );
        assert_eq!(
            resolve("/opt/gone", "", None, &host),
            Err(Unrunnable::Missing("/opt/gone".into()))
        );
    }

    fn host_problems(src: &str) -> Vec<String> {
        match crate::config::parse_on_host(src, "holdfast.toml", Path::new("/"), &fake()) {
            Ok(_) => Vec::new(),
            Err(err) => err
                .problems()
                .iter()
                .map(|p| format!("{} [{}]", p.message(), p.label()))
                .collect(),
        }
    }

    #[test]
    fn a_config_that_fits_the_machine_passes() {
        let src = "[service.a]\ncommand = [\"sleep\", \"1\"]\nworking_dir = \"/opt/app\"\n\
                   cpu_affinity = [0, 1]\nlimits = { nofile = 1024 }\n";
        assert_eq!(host_problems(src), Vec::<String>::new());
    }

    #[test]
    fn everything_that_would_fail_at_spawn_is_reported_at_once() {
        let src = "[service.a]\ncommand = [\"sleep\", \"1\"]\nenv = { PATH = \"/opt\" }\n\
                   working_dir = \"/opt/data\"\ncpu_affinity = [1, 2, 7]\n\
                   limits = { nofile = \"infinity\" }\n\
                   [service.b]\ncommand = [\"/opt/gone\"]\nlimits = { nofile = 1025 }\n";
        assert_eq!(
            host_problems(src),
            [
                "program `sleep` of `service.a.command` is not in PATH [not found in PATH]",
                "`service.a.working_dir` does not exist [not a directory]",
                "CPU 2 in `service.a.cpu_affinity` does not exist on this machine [no such CPU]",
                "CPU 7 in `service.a.cpu_affinity` does not exist on this machine [no such CPU]",
                "`service.a.limits.nofile` is above the kernel's limit [infinity is above nr_open (1024)]",
                "program of `service.b.command` does not exist [no such file: /opt/gone]",
                "`service.b.limits.nofile` is above the kernel's limit [above nr_open (1024)]",
            ]
        );
    }

    #[test]
    fn holdfasts_own_path_is_searched_when_the_service_inherits_it() {
        let run = "command = [\"run\"]\n";
        assert_eq!(
            host_problems(&format!("[service.a]\n{run}")),
            ["program `run` of `service.a.command` is not in PATH [not found in PATH]"],
            "the fixed default PATH does not have it"
        );
        assert_eq!(
            host_problems(&format!("[service.a]\n{run}inherit_env = true\n")),
            Vec::<String>::new()
        );
        assert_eq!(
            host_problems(&format!(
                "[holdfast]\npass_env = [\"PATH\"]\n[service.a]\n{run}"
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn pure_parsing_does_not_look_at_the_machine() {
        let src = "[service.a]\ncommand = [\"/opt/gone\"]\ncpu_affinity = [7]\n";
        assert!(crate::config::parse(src, "holdfast.toml", Path::new("/")).is_ok());
    }
}
