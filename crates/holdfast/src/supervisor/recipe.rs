//! The one recipe for every process holdfast starts on a service's behalf: its main
//! process, its exec probes and its event hooks get the same environment, identity
//! variables and resource limits, so a probe or hook sees the world the service sees.
//!
//! The environment is clean, like systemd's: not holdfast's own environment but `PATH`
//! (a fixed default), `LANG` (if holdfast has it), the `[holdfast] pass_env` variables,
//! `HOME`/`USER`/`LOGNAME`/`SHELL` of the service's user, `PWD` (= `working_dir`), the
//! configured `env`, `HOLDFAST_SERVICE` (`web@1` for an instance), `HOLDFAST_INSTANCE`
//! (0..N-1, only with `instances`) and `INVOCATION_ID`. `inherit_env = true` starts
//! from holdfast's whole environment instead (never its [`PRIVATE_ENV`] variables).
//!
//! What differs per role is added by the caller: the main process gets `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`, its cgroup and capabilities; a hook gets the event's `HOLDFAST_*`
//! variables. Helpers never get more privileges than the service
//! ([`limits::helper_setup`]).

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, RawFd};

use crate::model::{PRIVATE_ENV, ServiceName, ServiceSpec, UserRef, defaults};
use crate::process::limits::{self, NofileBaseline};
use crate::process::spawn::{ProcessSetup, RlimitSetting, SpawnRequest};

/// How a process's setup differs by what it is to its service.
#[derive(Debug, Clone, Copy)]
pub enum Setup<'a> {
    /// The service's own process: it joins the service's cgroup (the open `cgroup.procs`
    /// files) and gets its capabilities, CPU affinity and OOM score, the service's
    /// `listen` sockets (`LISTEN_FDS`, with `listen_fd_names` as `LISTEN_FDNAMES`) and
    /// `extra_fds` at fixed numbers (the readiness pipe of `ready = { fd = N }`).
    Main {
        cgroup_procs: &'a [BorrowedFd<'a>],
        listen_fds: &'a [BorrowedFd<'a>],
        listen_fd_names: &'a [String],
        extra_fds: &'a [(BorrowedFd<'a>, RawFd)],
    },
    /// An exec probe or an event hook: the service's user, umask, `no_new_privs` and
    /// limits, but no cgroup and no capabilities (see [`limits::helper_setup`]).
    Helper,
}

/// Where a process's output goes (its stdin is always `/dev/null`).
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// Environment and limits of a process of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The service's environment, as the module documentation lists it.
    pub env: Vec<(String, String)>,
    /// The spec's rlimits, and holdfast's original `nofile` soft limit when the spec sets
    /// none (holdfast raised its own).
    pub rlimits: Vec<RlimitSetting>,
}

impl Recipe {
    /// Later layers win: the base (clean, or holdfast's with `inherit_env`), `pass_env`,
    /// the user's identity and `PWD`, the configured `env`, and last the two variables
    /// that identify the run, which the configured `env` cannot fake.
    pub fn new(
        inherited: &Inherited,
        spec: &ServiceSpec,
        invocation_id: &str,
        nofile: Option<NofileBaseline>,
    ) -> Self {
        let mut env = Env::default();
        // Also with `inherit_env`, in case holdfast was started without a PATH.
        env.set("PATH", defaults::PATH);
        if spec.inherit_env {
            env.extend(&inherited.all);
        } else if let Some(lang) = inherited.get("LANG") {
            env.set("LANG", lang);
        }
        env.extend(&inherited.passed);
        // A service without `user` (or with only `group`) runs as holdfast's user.
        let user = spec
            .privileges
            .credentials
            .as_ref()
            .and_then(|c| c.user.as_ref())
            .or(inherited.own_user.as_ref());
        if let Some(user) = user {
            env.set("HOME", &user.home);
            env.set("USER", &user.name);
            env.set("LOGNAME", &user.name);
            env.set("SHELL", &user.shell);
        }
        if let Some(dir) = &spec.working_dir {
            env.set("PWD", &dir.display().to_string());
        }
        for (key, value) in &spec.env {
            env.set(key, value);
        }
        env.set("HOLDFAST_SERVICE", spec.name.as_str());
        if let Some(instance) = &spec.instance {
            env.set("HOLDFAST_INSTANCE", &instance.index.to_string());
        }
        env.set("INVOCATION_ID", invocation_id);
        Self {
            env: env.0,
            rlimits: limits::rlimit_settings(&spec.limits, nofile),
        }
    }

    /// How a helper (exec probe, hook) of `spec` is set up: the service's user, umask,
    /// `no_new_privs` and these limits; no cgroup, no capabilities.
    pub fn helper_setup<'a>(&'a self, spec: &'a ServiceSpec) -> ProcessSetup<'a> {
        limits::helper_setup(spec, &self.rlimits)
    }

    /// Adds (or replaces) one variable, for what only one role gets: the main
    /// process's `NOTIFY_SOCKET`, a hook's event.
    pub fn set(&mut self, key: &str, value: String) {
        set_var(&mut self.env, key, value);
    }

    /// The one way a process of `spec` is spawned, whatever it is to the service: this
    /// recipe's environment and limits, the service's user and `working_dir`, `command`,
    /// and what differs by `setup`.
    pub fn request<'a>(
        &'a self,
        spec: &'a ServiceSpec,
        command: &'a [String],
        setup: Setup<'a>,
        output: Output<'a>,
    ) -> SpawnRequest<'a> {
        let (setup, (listen_fds, listen_fd_names), extra_fds) = match setup {
            Setup::Main {
                cgroup_procs,
                listen_fds,
                listen_fd_names,
                extra_fds,
            } => {
                let privileges = &spec.privileges;
                let setup = ProcessSetup {
                    cgroup_procs,
                    rlimits: &self.rlimits,
                    cpu_affinity: privileges.cpu_affinity.as_deref(),
                    oom_score_adjust: privileges.oom_score_adjust,
                    umask: privileges.umask,
                    credentials: privileges.credentials.as_ref(),
                    capabilities: privileges.capabilities.as_deref(),
                    no_new_privs: privileges.no_new_privs,
                };
                (setup, (listen_fds, listen_fd_names), extra_fds)
            }
            Setup::Helper => (self.helper_setup(spec), (&[][..], &[][..]), &[][..]),
        };
        SpawnRequest {
            program: &command[0],
            args: &command[1..],
            env: &self.env,
            working_dir: spec.working_dir.as_deref(),
            stdout: output.stdout,
            stderr: output.stderr,
            listen_fds,
            listen_fd_names,
            extra_fds,
            setup,
        }
    }
}

/// Sets `key` in `vars`: each name once, a later value replaces the earlier in place.
fn set_var(vars: &mut Vec<(String, String)>, key: &str, value: String) {
    match vars.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => vars.push((key.to_owned(), value)),
    }
}

/// An environment being built: each name once, a later `set` replaces the value in place.
#[derive(Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        set_var(&mut self.0, key, value.to_owned());
    }

    fn extend(&mut self, vars: &[(String, String)]) {
        for (key, value) in vars {
            self.set(key, value);
        }
    }
}

/// What services may take from holdfast's own situation, captured once at its start
/// (holdfast's environment does not change while it runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inherited {
    /// holdfast's environment minus [`PRIVATE_ENV`]: the base with `inherit_env = true`.
    pub all: Vec<(String, String)>,
    /// The `[holdfast] pass_env` variables that holdfast's environment has.
    pub passed: Vec<(String, String)>,
    /// The user holdfast runs as, from the password database: the identity of services
    /// without `user` (root's `HOME=/root`, `SHELL`, ... when holdfast runs as root).
    pub own_user: Option<UserRef>,
}

impl Inherited {
    /// From holdfast's environment and user. Variables that are not UTF-8 are left out.
    pub fn capture(pass_env: &[String]) -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::from_vars(vars, pass_env, own_user())
    }

    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        pass_env: &[String],
        own_user: Option<UserRef>,
    ) -> Self {
        let all: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| !PRIVATE_ENV.contains(&k.as_str()))
            .collect();
        let passed = pass_env
            .iter()
            .filter_map(|name| all.iter().find(|(k, _)| k == name).cloned())
            .collect();
        Self {
            all,
            passed,
            own_user,
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.all
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn own_user() -> Option<UserRef> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten()?;
    Some(UserRef {
        name: user.name,
        uid: uid.as_raw(),
        home: user.dir.display().to_string(),
        shell: user.shell.display().to_string(),
    })
}

/// The environments of all services: what they inherit, and the `INVOCATION_ID` of each
/// service's current run. Like systemd's, the id is random (128 bits, 32 hex digits) and
/// new per run; the run's exec probes and hooks share it, so their output can be tied to
/// the run (a hook on `exited` gets the id of the run that exited).
#[derive(Debug, Default)]
pub struct Environments {
    inherited: Inherited,
    invocations: HashMap<ServiceName, String>,
}

impl Environments {
    pub fn new(inherited: Inherited) -> Self {
        Self {
            inherited,
            invocations: HashMap::new(),
        }
    }

    /// A new run of `name` begins: it gets a fresh `INVOCATION_ID`.
    pub fn begin_run(&mut self, name: &ServiceName) {
        self.invocations.insert(name.clone(), invocation_id());
    }

    /// Each service's current `INVOCATION_ID`, to hand to a re-executed holdfast.
    pub fn invocations(&self) -> &HashMap<ServiceName, String> {
        &self.invocations
    }

    /// Goes on with the runs a previous image of holdfast started (`upgrade --self`).
    pub fn resume_invocations(&mut self, invocations: HashMap<ServiceName, String>) {
        self.invocations = invocations;
    }

    /// The recipe of `spec`'s current run. Before its first run (a hook on `waiting`)
    /// each call gets an id of its own.
    pub fn recipe(&self, spec: &ServiceSpec, nofile: Option<NofileBaseline>) -> Recipe {
        let id = match self.invocations.get(&spec.name) {
            Some(id) => id.clone(),
            None => invocation_id(),
        };
        Recipe::new(&self.inherited, spec, &id, nofile)
    }
}

/// 128 random bits in hex, like systemd's `INVOCATION_ID`. Unique, not secret: fastrand's
/// randomly seeded generator is enough.
fn invocation_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Credentials;

    fn spec() -> ServiceSpec {
        let name = ServiceName::new("api").expect("valid name");
        ServiceSpec::with_defaults(name, vec!["/bin/true".to_owned()])
    }

    fn user(name: &str, home: &str) -> UserRef {
        UserRef {
            name: name.to_owned(),
            uid: 1000,
            home: home.to_owned(),
            shell: "/bin/bash".to_owned(),
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// holdfast started as root from a login shell, under systemd, with a test tag.
    /// The recipe's environment by name.
    fn env_of(recipe: &Recipe) -> HashMap<&str, &str> {
        recipe
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn inherited(pass_env: &[&str]) -> Inherited {
        let pass_env: Vec<String> = pass_env.iter().map(|s| (*s).to_owned()).collect();
        Inherited::from_vars(
            vars(&[
                ("PATH", "/root/bin:/usr/bin"),
                ("LANG", "C.UTF-8"),
                ("HOME", "/root"),
                ("TERM", "xterm"),
                ("SECRET_TOKEN", "s3cret"),
                ("HF_TEST", "tag-1"),
                ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ]),
            &pass_env,
            Some(user("root", "/root")),
        )
    }

    fn sorted(recipe: &Recipe) -> Vec<(String, String)> {
        let mut env = recipe.env.clone();
        env.sort();
        env
    }

    #[test]
    fn a_service_gets_the_clean_environment_and_nothing_else_of_holdfast() {
        let mut spec = spec();
        spec.working_dir = Some("/srv/api".into());
        let recipe = Recipe::new(&inherited(&[]), &spec, "0123", None);
        assert_eq!(
            sorted(&recipe),
            vars(&[
                ("HOLDFAST_SERVICE", "api"),
                ("HOME", "/root"),
                ("INVOCATION_ID", "0123"),
                ("LANG", "C.UTF-8"),
                ("LOGNAME", "root"),
                ("PATH", defaults::PATH),
                ("PWD", "/srv/api"),
                ("SHELL", "/bin/bash"),
                ("USER", "root"),
            ])
        );
    }

    #[test]
    fn pass_env_adds_the_named_variables_holdfast_has() {
        let inherited = inherited(&["HF_TEST", "NOT_SET"]);
        let recipe = Recipe::new(&inherited, &spec(), "0123", None);
        let names: Vec<&str> = recipe.env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"HF_TEST"), "{names:?}");
        assert!(!names.contains(&"NOT_SET"), "{names:?}");
        assert!(!names.contains(&"TERM"), "{names:?}");
    }

    #[test]
    fn inherit_env_brings_back_holdfasts_environment_but_not_its_private_variables() {
        let mut spec = spec();
        spec.inherit_env = true;
        let recipe = Recipe::new(&inherited(&[]), &spec, "0123", None);
        let env = env_of(&recipe);
        assert_eq!(env["PATH"], "/root/bin:/usr/bin", "holdfast's own PATH");
        assert_eq!(env["TERM"], "xterm");
        assert_eq!(env["SECRET_TOKEN"], "s3cret");
        assert!(!env.contains_key("NOTIFY_SOCKET"), "private to holdfast");
        assert_eq!(env["INVOCATION_ID"], "0123");
    }

    #[test]
    fn the_service_user_and_the_configured_env_win_but_not_over_the_run_identity() {
        let mut spec = spec();
        spec.privileges.credentials = Some(Credentials {
            user: Some(user("appsvc", "/home/appsvc")),
            gid: 1000,
            groups: vec![1000],
        });
        spec.env
            .insert("PATH".to_owned(), "/opt/app/bin".to_owned());
        spec.env.insert("LANG".to_owned(), "de_DE.UTF-8".to_owned());
        spec.env
            .insert("HOLDFAST_SERVICE".to_owned(), "fake".to_owned());
        spec.env
            .insert("INVOCATION_ID".to_owned(), "fake".to_owned());
        let recipe = Recipe::new(&inherited(&[]), &spec, "0123", None);
        let env = env_of(&recipe);
        assert_eq!(env["HOME"], "/home/appsvc");
        assert_eq!(env["USER"], "appsvc");
        assert_eq!(env["LOGNAME"], "appsvc");
        assert_eq!(env["PATH"], "/opt/app/bin");
        assert_eq!(env["LANG"], "de_DE.UTF-8");
        assert_eq!(env["HOLDFAST_SERVICE"], "api");
        assert_eq!(env["INVOCATION_ID"], "0123");
        assert_eq!(recipe.env.len(), env.len(), "each variable once");
    }

    #[test]
    fn main_probe_and_hook_share_environment_identity_and_cwd_but_only_main_gets_its_cgroup_and_cpus()
     {
        use std::os::fd::AsFd;
        let mut spec = spec();
        spec.working_dir = Some("/srv/api".into());
        spec.privileges.cpu_affinity = Some(vec![0]);
        let recipe = Recipe::new(&inherited(&[]), &spec, "0123", None);
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let output = Output {
            stdout: null.as_fd(),
            stderr: null.as_fd(),
        };
        let procs = [null.as_fd()];
        let main_setup = Setup::Main {
            cgroup_procs: &procs,
            listen_fds: &[],
            listen_fd_names: &[],
            extra_fds: &[],
        };
        let probe_command = vec!["/bin/check".to_owned(), "--quick".to_owned()];
        let main = recipe.request(&spec, &spec.command, main_setup, output);
        let probe = recipe.request(&spec, &probe_command, Setup::Helper, output);
        assert_eq!(main.program, "/bin/true");
        assert_eq!(
            (probe.program, probe.args),
            ("/bin/check", &probe_command[1..])
        );
        assert_eq!(main.env, probe.env);
        assert_eq!(main.working_dir, probe.working_dir);
        assert_eq!(main.setup.rlimits, probe.setup.rlimits);
        assert_eq!(main.setup.no_new_privs, probe.setup.no_new_privs);
        assert_eq!(main.setup.cgroup_procs.len(), 1);
        assert_eq!(main.setup.cpu_affinity, Some(&[0][..]));
        assert!(probe.setup.cgroup_procs.is_empty());
        assert_eq!(probe.setup.cpu_affinity, None);
        assert_eq!(probe.setup.capabilities, None);
    }

    #[test]
    fn an_instance_learns_its_number_and_its_full_name() {
        let base = ServiceName::new("web").expect("valid name");
        let mut spec = spec();
        spec.name = base.instance(2);
        spec.env
            .insert("HOLDFAST_INSTANCE".to_owned(), "fake".to_owned());
        spec.instance = Some(crate::model::Instance { base, index: 2 });
        let recipe = Recipe::new(&inherited(&[]), &spec, "0123", None);
        let env = env_of(&recipe);
        assert_eq!(env["HOLDFAST_INSTANCE"], "2");
        assert_eq!(env["HOLDFAST_SERVICE"], "web@2");
        let plain = Recipe::new(&inherited(&[]), &self::spec(), "0123", None);
        assert!(plain.env.iter().all(|(k, _)| k != "HOLDFAST_INSTANCE"));
    }

    #[test]
    fn each_run_gets_a_fresh_invocation_id_shared_by_its_helpers() {
        let mut envs = Environments::new(inherited(&[]));
        let spec = spec();
        let id = |r: &Recipe| {
            r.env
                .iter()
                .find(|(k, _)| k == "INVOCATION_ID")
                .map(|(_, v)| v.clone())
                .expect("an INVOCATION_ID")
        };
        envs.begin_run(&spec.name);
        let main = id(&envs.recipe(&spec, None));
        assert_eq!(main.len(), 32);
        assert!(main.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            id(&envs.recipe(&spec, None)),
            main,
            "a probe of the same run"
        );
        envs.begin_run(&spec.name);
        assert_ne!(id(&envs.recipe(&spec, None)), main, "the next run");
    }
}
