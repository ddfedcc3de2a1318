//! Observer mode's shell: asks the upstream (systemd, supervisord) of a `managed_by`
//! service what it says of it, asks it to restart the service, and takes the service
//! over when the core decides so. Every exchange with an upstream runs off the loop
//! and comes back as an input; nothing here waits.

mod supervisord;
mod systemd;
mod xmlrpc;

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::Shell;
use super::table::{Process, Role};
use crate::model::ServiceName;
use crate::model::Upstream;
use crate::process::{group, pidfd, proc_stat, reap, spawn};
use crate::supervisor::core::{Attempt, Effect, Input};
use crate::supervisor::recipe::{Output, Setup};
use crate::supervisor::service::{RunId, UpstreamReport, UpstreamView};
use crate::unix::Pid;

pub use supervisord::Supervisord;

/// Whom the answer to a sync goes to.
#[derive(Debug, Clone, Copy)]
enum SyncFor {
    /// The observation `run` (`Effect::SyncUpstream`).
    Observation(RunId),
    /// The watch `run` of a taken-over service (`Effect::WatchUpstream`).
    Watch(RunId),
}

impl SyncFor {
    fn input(self, service: ServiceName, report: UpstreamReport) -> Input {
        let report = Box::new(report);
        match self {
            SyncFor::Observation(run) => Input::Upstream {
                service,
                run,
                report,
            },
            SyncFor::Watch(run) => Input::UpstreamWatch {
                service,
                run,
                report,
            },
        }
    }
}

/// What the output of a `systemctl` is for.
#[derive(Debug, Clone, Copy)]
enum Asked {
    /// `show`: a view to report.
    Show(SyncFor),
    /// `restart`: only logged when it fails.
    Restart,
}

impl Shell {
    /// Carries out an effect of observer mode.
    pub(super) fn arbiter(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::SyncUpstream {
                service,
                run,
                upstream,
                timeout,
            } => self.sync_upstream(service, SyncFor::Observation(run), upstream, timeout),
            Effect::WatchUpstream {
                service,
                run,
                upstream,
                timeout,
            } => self.sync_upstream(service, SyncFor::Watch(run), upstream, timeout),
            Effect::RestartUpstream {
                service,
                upstream,
                timeout,
            } => self.restart_upstream(service, upstream, timeout),
            Effect::TakeOver {
                service,
                run,
                process,
                upstream,
                attempt,
            } => {
                if let Some(busy) = alive(upstream) {
                    match attempt {
                        Attempt::First => tracing::warn!("{service}: no takeover: {busy}"),
                        Attempt::Again => tracing::debug!("{service}: still no takeover: {busy}"),
                    }
                    return Some(Input::Upstream {
                        service,
                        run,
                        report: Box::new(UpstreamReport::Busy(busy)),
                    });
                }
                return Some(self.take_over(service, run, process));
            }
            _ => {}
        }
        None
    }

    fn supervisord(&self) -> Result<Supervisord, String> {
        Supervisord::of(self.sup.plan().daemon.supervisord.as_deref())
    }

    fn sync_upstream(
        &mut self,
        service: ServiceName,
        to: SyncFor,
        upstream: Upstream,
        timeout: Duration,
    ) {
        let program = match upstream {
            Upstream::Systemd { unit } => {
                let args = systemd::show_args(&unit);
                return self.run_systemctl(service, args, timeout, Asked::Show(to));
            }
            Upstream::Supervisord { program } => program,
        };
        let client = self.supervisord();
        let tx = self.inputs_tx.clone();
        tokio::spawn(async move {
            let report = match client {
                Err(e) => UpstreamReport::Unreachable(e),
                Ok(client) => match tokio::time::timeout(timeout, client.view(&program)).await {
                    Err(_) => UpstreamReport::Unreachable(no_answer(timeout)),
                    Ok(Err(e)) => UpstreamReport::Unreachable(e),
                    Ok(Ok(UpstreamReport::Seen(view))) => {
                        UpstreamReport::Seen(with_proc_start(view))
                    }
                    Ok(Ok(report)) => report,
                },
            };
            let _ = tx.send(to.input(service, report));
        });
    }

    fn restart_upstream(&mut self, service: ServiceName, upstream: Upstream, timeout: Duration) {
        let program = match upstream {
            Upstream::Systemd { unit } => {
                let args = systemd::restart_args(&unit);
                return self.run_systemctl(service, args, timeout, Asked::Restart);
            }
            Upstream::Supervisord { program } => program,
        };
        let client = self.supervisord();
        tokio::spawn(async move {
            let done = match client {
                Err(e) => Err(e),
                // Not bounded as a whole: each call is, and the wait for the stop has
                // its own bound (dropping the restart after the stop would leave the
                // program stopped).
                Ok(client) => client.restart(&program, timeout).await,
            };
            // The core sees the outcome in the next syncs (a new start, or none within
            // arbiter_timeout); the reason of a failure is for the log.
            if let Err(e) = done {
                tracing::warn!("{service}: supervisord did not restart {program}: {e}");
            }
        });
    }

    /// Runs `systemctl` (`args`) as a helper process of `service`; its output (stdout
    /// and stderr) is read off the loop, and a `show` becomes an `Input::Upstream`.
    /// One that does not finish within `timeout` is killed and counts as no answer.
    fn run_systemctl(
        &mut self,
        service: ServiceName,
        args: Vec<String>,
        timeout: Duration,
        asked: Asked,
    ) {
        let tx = self.inputs_tx.clone();
        let (read, pid) = match self.spawn_systemctl(&service, &args) {
            Ok(spawned) => spawned,
            Err(e) => {
                tracing::warn!("{service}: cannot run systemctl: {e}");
                if let Asked::Show(to) = asked {
                    let _ = tx.send(to.input(service, UpstreamReport::Unreachable(e)));
                }
                return;
            }
        };
        tokio::spawn(async move {
            let output = read_all(read, timeout).await;
            let output = match output {
                Some(text) => text,
                None => {
                    // Only while it is not reaped: its pid is not reused then.
                    let _ = super::probes::kill_group(pid);
                    tracing::warn!("{service}: {} timed out", args.join(" "));
                    if let Asked::Show(to) = asked {
                        let report = UpstreamReport::Unreachable(no_answer(timeout));
                        let _ = tx.send(to.input(service, report));
                    }
                    return;
                }
            };
            match asked {
                Asked::Show(to) => {
                    let report = match systemd::parse_show(&output, monotonic_usec()) {
                        Ok(view) => UpstreamReport::Seen(with_proc_start(view)),
                        Err(e) => UpstreamReport::Unreachable(e),
                    };
                    let _ = tx.send(to.input(service, report));
                }
                Asked::Restart if !output.trim().is_empty() => {
                    tracing::warn!("{service}: systemctl restart: {}", output.trim());
                }
                Asked::Restart => {}
            }
        });
    }

    /// Spawns `systemctl` with its output into a pipe; the read end and its pid.
    fn spawn_systemctl(
        &mut self,
        service: &ServiceName,
        args: &[String],
    ) -> Result<(std::os::fd::OwnedFd, Pid), String> {
        let mut spec = self
            .sup
            .plan()
            .services
            .get(service)
            .cloned()
            .ok_or("the service left the config")?;
        // systemctl speaks for holdfast, not as the service: the `user` and limits a
        // taken-over service would run with are not its own.
        spec.privileges = crate::model::Privileges::default();
        spec.limits = crate::model::Limits::default();
        // Nor in the service's directory (it may not exist yet), nor with a PATH that
        // cannot find systemctl: the service's own PATH (if any) comes first, the
        // standard one after it.
        spec.working_dir = Some("/".into());
        let path = match spec.env.get("PATH") {
            Some(own) => format!("{own}:{}", crate::model::defaults::PATH),
            None => crate::model::defaults::PATH.to_owned(),
        };
        spec.env.insert("PATH".to_owned(), path);
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let recipe = self.recipe(&spec);
        let output = Output {
            stdout: write.as_fd(),
            stderr: write.as_fd(),
        };
        let request = recipe.request(&spec, args, Setup::Helper, output);
        let alive_at = reap::latest();
        let pid = spawn::spawn(&request).map_err(|e| e.to_string())?.pid;
        drop(write);
        let process = Process {
            service: service.clone(),
            role: Role::Systemctl,
            alive_at,
        };
        self.table.insert(pid, process);
        Ok((read, pid))
    }

    /// The upstream is gone: hold `process` (the pid it last showed running, with its
    /// start time) as the main process of `run` if it is still that process.
    fn take_over(
        &mut self,
        service: ServiceName,
        run: RunId,
        process: Option<(Pid, u64)>,
    ) -> Input {
        let held = process.and_then(|(pid, start)| match pidfd::open_if_same(pid, start) {
            Ok(fd) => fd.map(|fd| (pid, start, fd)),
            Err(e) => {
                tracing::warn!("{service}: cannot hold pid {pid}: {e}");
                None
            }
        });
        let Some((pid, start, fd)) = held else {
            return Input::TakenOver {
                service,
                run,
                adopted: None,
            };
        };
        let group = proc_stat(pid).map_or(pid, |stat| stat.pgid);
        tracing::info!("{service}: took over pid {pid} from its upstream");
        let process = Process {
            service: service.clone(),
            role: Role::Main(run),
            alive_at: reap::latest(),
        };
        self.table.insert(pid, process);
        self.watch_adopted(pid, group, start, fd);
        self.join_cgroup(&service, group);
        Input::TakenOver {
            service,
            run,
            adopted: Some(pid),
        }
    }

    /// Moves a taken-over process and the rest of its process group into the service's
    /// cgroup, as if holdfast had started it: from now on its new memory use is counted
    /// and limited, an OOM kill is seen as one, and a stop reaches whatever it forks.
    fn join_cgroup(&mut self, service: &ServiceName, group: Pid) {
        use std::io::Write;
        if self.cgroups.is_none() {
            return;
        }
        let Some(spec) = self.sup.plan().services.get(service).cloned() else {
            return;
        };
        let procs = match self.prepare_cgroup(service, &spec) {
            Ok(procs) => procs,
            Err(e) => {
                tracing::warn!("{service}: the process taken over stays outside its cgroup: {e}");
                return;
            }
        };
        let mut procs: Vec<std::fs::File> = procs.into_iter().map(std::fs::File::from).collect();
        // A member may fork while the others move: the group is listed again until a
        // pass finds no one new (a few passes at most).
        let mut moved = std::collections::HashSet::new();
        for _ in 0..JOIN_PASSES {
            let new: Vec<Pid> = (group::group_members(group).into_iter())
                .map(|member| member.pid)
                .filter(|pid| moved.insert(*pid))
                .collect();
            if new.is_empty() {
                return;
            }
            for pid in new {
                for procs in &mut procs {
                    // One pid a write: cgroup.procs takes no more.
                    if let Err(e) = procs.write_all(pid.as_raw().to_string().as_bytes()) {
                        tracing::warn!("{service}: pid {pid} stays outside its cgroup: {e}");
                    }
                }
            }
        }
        tracing::warn!("{service}: its process group kept forking while it moved into its cgroup");
    }
}

/// Listings of a taken-over process group while it moves into its cgroup.
const JOIN_PASSES: usize = 5;

/// `view` with the `/proc` start times of its pid, which names the process should
/// holdfast take it over later, and of the upstream's own process. A pid whose parent
/// is not the upstream's process (when it names one) is none the upstream runs: it is
/// never to be adopted.
fn with_proc_start(mut view: UpstreamView) -> UpstreamView {
    let live = |pid| proc_stat(pid).ok().filter(|stat| !stat.is_zombie());
    view.upstream_pid = view
        .upstream_pid
        .and_then(|(pid, _)| Some((pid, live(pid)?.start_time)));
    view.proc_start = view
        .pid
        .and_then(live)
        .filter(|stat| {
            view.upstream_pid
                .is_none_or(|(upstream, _)| stat.ppid == upstream)
        })
        .map(|stat| stat.start_time);
    view
}

/// Why the upstream is not gone, when its own process (`upstream`: pid and start
/// time, seen at the last sync) still lives: it only does not answer.
fn alive(upstream: Option<(Pid, u64)>) -> Option<String> {
    let (pid, start) = upstream?;
    proc_stat(pid)
        .is_ok_and(|stat| stat.start_time == start && !stat.is_zombie())
        .then(|| format!("its process (pid {pid}) is alive; it only does not answer"))
}

fn no_answer(timeout: Duration) -> String {
    format!("no answer within {}", humantime::format_duration(timeout))
}

/// Reads `fd` to its end, or `None` if that takes longer than `timeout`.
async fn read_all(fd: std::os::fd::OwnedFd, timeout: Duration) -> Option<String> {
    let read = async {
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).await.ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// `CLOCK_MONOTONIC` in microseconds: systemd's monotonic timestamps count on it.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
        secs * 1_000_000 + nanos / 1000
    })
}
