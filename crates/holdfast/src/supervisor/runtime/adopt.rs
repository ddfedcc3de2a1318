//! Starting after a holdfast that was killed: its services' processes live on, and the
//! ledger it kept (see `ledger`) says which they are. Each live run whose main process
//! is still the one written down (pid *and* start time: a reused pid is never taken for
//! it) is adopted: held by a pidfd, its exit turned into a reap, its output pipes read
//! again, supervised, probed and restartable like any run, and never started twice.
//!
//! What is not adopted is stopped before anything starts: the runs of services no
//! longer configured or in the middle of a transition when holdfast died, the older
//! runs of a rollout, processes of the cgroups of services not adopted. A run whose spec
//! changed since it started (holdfast died during a reload) or whose service says
//! `on_restart = "stop"` is adopted, then restarted the way a restart verb does it:
//! stop signal, timeout, SIGKILL, a fresh start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;

use tokio::sync::mpsc::UnboundedSender;

use super::Shell;
use super::handover::{self, ProcessForm, StateForm};
use super::ledger::Ledger;
use crate::logs::Capture;
use crate::model::{OnRestart, Readiness, ServiceName, UpgradeMode};
use crate::process::reap::{self, Reaped};
use crate::process::{group, pidfd};
use crate::supervisor::core::{Command, Input};
use crate::supervisor::reload::fingerprint;
use crate::supervisor::service::RunId;
use crate::unix::{Pid, Signal};

/// What the shell keeps of the processes it adopted.
#[derive(Debug, Default)]
pub(super) struct Adoptions {
    /// Each adopted main process (by pid): its start time, which names it since its
    /// pid may be reused once it ends (it is no child of holdfast's to hold back from
    /// reaping), and its run's process group.
    pub(super) processes: HashMap<Pid, (u64, Pid)>,
    /// Where their exits go: the reaper's channel.
    exits: Option<UnboundedSender<Reaped>>,
}

impl Adoptions {
    pub(super) fn new(exits: UnboundedSender<Reaped>) -> Self {
        Self {
            processes: HashMap::new(),
            exits: Some(exits),
        }
    }
}

/// One adopted run's main process.
struct Adopted {
    service: ServiceName,
    main: Pid,
    group: Pid,
    start_time: u64,
    pidfd: OwnedFd,
}

impl Shell {
    /// Takes over from the holdfast that left `ledger`, then starts what is to start.
    /// Returns true once the shutdown is complete (never, in practice).
    pub(super) fn recover(&mut self, ledger: Option<Ledger>) -> bool {
        let current_boot = pidfd::boot_id().unwrap_or_default();
        let Some(mut ledger) = ledger.filter(|l| l.boot_id == current_boot) else {
            self.stop_strays(&BTreeSet::new());
            return self.apply(Input::Boot);
        };
        self.bus.resume(ledger.last_event, Vec::new());
        age(&mut ledger);
        let adopted = self.adopt_runs(&mut ledger);
        let kept: BTreeSet<(ServiceName, RunId)> = adopted
            .iter()
            .filter_map(|a| Some((a.service.clone(), run_of(&ledger, &a.service)?)))
            .collect();
        stop_leftovers(&ledger, &kept);
        let services: BTreeSet<ServiceName> = kept.iter().map(|(s, _)| s.clone()).collect();
        self.stop_strays(&services);
        self.table = handover::table_of(&ledger.processes, |service, run| {
            kept.contains(&(service.clone(), run))
        });
        self.publish_senders();
        let mut restart = Vec::new();
        for a in adopted {
            self.reattach_output(&ledger, &a);
            if let Some(why) = self.restart_reason(&ledger, &a.service) {
                restart.push((a.service.clone(), why));
            }
            let note = format!(
                "adopted pid {} from the holdfast before this one (it was killed)",
                a.main
            );
            tracing::info!("{}: {note}", a.service);
            if let Some(capture) = self.capture(&a.service) {
                capture.note(&note);
            }
            self.watch_adopted(a.main, a.group, a.start_time, a.pidfd);
        }
        let snapshot = crate::supervisor::core::Snapshot {
            next_run: ledger.next_run,
            services: handover::resumed(&ledger.services),
        };
        let mut done = self.apply(Input::Resume(snapshot));
        self.rewatch();
        for (service, why) in restart {
            tracing::info!("{service}: adopted, then restarted: {why}");
            done |= self.apply(Input::Command {
                command: Command::Restart,
                service,
            });
        }
        done
    }

    /// Why the adopted run of `service` is restarted rather than kept, if it is.
    fn restart_reason(&self, ledger: &Ledger, service: &ServiceName) -> Option<&'static str> {
        let spec = &self.sup.plan().services[service];
        let starting = ledger.services.iter().find_map(|s| match s.state {
            StateForm::Live { starting, .. } if s.name == *service => starting,
            _ => None,
        });
        let proxied = spec
            .upgrade
            .as_ref()
            .is_some_and(|u| matches!(u.mode, UpgradeMode::Proxy(_)));
        if ledger
            .runs
            .get(service)
            .is_some_and(|note| note.spec != fingerprint(spec))
        {
            Some("its definition changed since it started (a reload holdfast did not finish)")
        } else if spec.on_restart == OnRestart::Stop {
            Some("on_restart = \"stop\"")
        } else if starting == Some(false) && spec.ready == Readiness::Notify {
            Some("it was starting, and a READY=1 sent while no holdfast listened is lost")
        } else if !spec.listen.addrs.is_empty() || proxied {
            // The sockets (or the proxy) holdfast made for it died with the holdfast
            // before: a later run could not have them again.
            Some("the listen sockets or proxy holdfast keeps for it are made anew")
        } else {
            None
        }
    }

    /// The live runs of `ledger` whose main process is still there, of services still
    /// configured; the others are turned into restarts due at once (their process died
    /// while nobody watched).
    fn adopt_runs(&self, ledger: &mut Ledger) -> Vec<Adopted> {
        let plan = self.sup.plan();
        ledger
            .services
            .retain(|s| plan.services.contains_key(&s.name));
        let mut adopted = Vec::new();
        for form in &mut ledger.services {
            let StateForm::Live {
                group,
                main_pid,
                ref mut up_for,
                ..
            } = form.state
            else {
                continue;
            };
            let main = Pid::from_raw(main_pid.unwrap_or(group));
            let found =
                ledger
                    .start_times
                    .get(&main.as_raw())
                    .and_then(|start| match pidfd::open_if_same(main, *start) {
                        Ok(fd) => fd.map(|fd| (*start, fd)),
                        Err(e) => {
                            tracing::warn!("{}: cannot hold pid {main}: {e}", form.name);
                            None
                        }
                    });
            match found {
                Some((start_time, pidfd)) => {
                    // Its uptime goes on from its start, not from the ledger's last write.
                    *up_for = pidfd::running_for(start_time).unwrap_or(*up_for);
                    adopted.push(Adopted {
                        service: form.name.clone(),
                        main,
                        group: Pid::from_raw(group),
                        start_time,
                        pidfd,
                    });
                }
                None => {
                    tracing::info!(
                        "{}: its process ({main}) ended while no holdfast ran: starting it again",
                        form.name
                    );
                    form.state = StateForm::Backoff {
                        remaining: std::time::Duration::ZERO,
                    };
                }
            }
        }
        adopted
    }

    /// The output of `adopted` goes on into its log, from the pipes it still writes to
    /// (with what waited there meanwhile).
    fn reattach_output(&mut self, ledger: &Ledger, adopted: &Adopted) {
        let Some(ids) = ledger.runs.get(&adopted.service).and_then(|r| r.pipes) else {
            return;
        };
        let log_dir = self.sup.plan().daemon.log_dir.clone();
        let spec = self.sup.plan().services[&adopted.service].log;
        let mut holders = vec![adopted.main];
        holders.extend(
            group::group_members(adopted.group)
                .into_iter()
                .map(|member| member.pid)
                .filter(|pid| *pid != adopted.main),
        );
        match Capture::reattach(&log_dir, &adopted.service, spec, &holders, ids) {
            Ok(Some(capture)) => {
                capture.set_pid(Some(adopted.main));
                self.slot(&adopted.service).capture = Some(capture);
            }
            Ok(None) => tracing::info!(
                "{}: pid {} no longer writes to its pipes: its output is not captured",
                adopted.service,
                adopted.main
            ),
            Err(e) => tracing::warn!("{}: output capture not resumed: {e}", adopted.service),
        }
    }

    /// Turns the exit of an adopted process into a reap.
    pub(super) fn watch_adopted(&mut self, pid: Pid, group: Pid, start_time: u64, pidfd: OwnedFd) {
        self.adoptions.processes.insert(pid, (start_time, group));
        let Some(exits) = self.adoptions.exits.clone() else {
            return;
        };
        tokio::spawn(async move {
            let status = pidfd::exited(pidfd, pid, start_time)
                .await
                .unwrap_or(crate::model::ExitStatus::Unknown);
            let _ = exits.send(reap::adopted_exit(pid, Some(group), status));
        });
    }

    /// After `upgrade --self`: the adopted processes the previous image watched (by
    /// pid: start time and process group), watched again; one that ended meanwhile is
    /// reported ended at once.
    pub(super) fn rewatch_adopted(&mut self, adopted: &BTreeMap<i32, (u64, i32)>) {
        for (pid, (start_time, group)) in adopted {
            let (main, group) = (Pid::from_raw(*pid), Pid::from_raw(*group));
            match pidfd::open_if_same(main, *start_time) {
                Ok(Some(pidfd)) => self.watch_adopted(main, group, *start_time, pidfd),
                _ => {
                    if let Some(exits) = &self.adoptions.exits {
                        let status = crate::model::ExitStatus::Unknown;
                        let _ = exits.send(reap::adopted_exit(main, Some(group), status));
                    }
                }
            }
        }
    }

    /// Kills what the cgroups of services other than `adopted` still hold: processes
    /// of a killed holdfast that its ledger did not name (it died before writing it).
    fn stop_strays(&self, adopted: &BTreeSet<ServiceName>) {
        let Some(cgroups) = &self.cgroups else { return };
        let keep: Vec<&str> = adopted.iter().map(ServiceName::as_str).collect();
        for (service, killed) in cgroups.kill_strays(&keep) {
            tracing::warn!(
                "{service}: killed {killed} processes left in its cgroup by the holdfast before this one"
            );
        }
    }
}

/// Kills the processes (and the groups they lead) of runs in `ledger` that are not
/// `kept`, each only if it is still the process written down, and waits until they are
/// gone: what starts in their place may need their ports.
fn stop_leftovers(ledger: &Ledger, kept: &BTreeSet<(ServiceName, RunId)>) {
    let killed: Vec<OwnedFd> = ledger
        .processes
        .iter()
        .filter_map(|form| kill_leftover(ledger, form, kept))
        .collect();
    pidfd::wait_exited(&killed, KILL_WAIT);
}

/// How long a start waits for the processes it killed to be gone.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Kills `form`'s process if it belongs to no `kept` run; returns its pidfd.
fn kill_leftover(
    ledger: &Ledger,
    form: &ProcessForm,
    kept: &BTreeSet<(ServiceName, RunId)>,
) -> Option<OwnedFd> {
    let (service, run) = owner_of(form)?;
    if kept.contains(&(service.clone(), run)) {
        return None;
    }
    let pid = Pid::from_raw(form.pid);
    let start = ledger.start_times.get(&form.pid)?;
    // Held by a pidfd: the pid names that process until the kill is sent.
    let held = pidfd::open_if_same(pid, *start).ok()??;
    tracing::warn!("{service}: killing pid {pid}, left over by the holdfast before this one");
    if form.group.is_some() {
        let _ = group::signal_group(pid, Signal::SIGKILL);
    }
    let _ = crate::os::kill(pid, Signal::SIGKILL);
    Some(held)
}

/// Counts the time that passed since `ledger` was written against what it holds: a
/// restart's delay is that much shorter, an exit that much older.
fn age(ledger: &mut Ledger) {
    let Some(gap) = pidfd::since_boot().and_then(|now| now.checked_sub(ledger.written)) else {
        return;
    };
    for form in &mut ledger.services {
        if let StateForm::Backoff { remaining } = &mut form.state {
            *remaining = remaining.saturating_sub(gap);
        }
        if let Some((_, ago)) = &mut form.last_exit {
            *ago += gap;
        }
    }
}

/// The live run of `service` in `ledger`.
fn run_of(ledger: &Ledger, service: &ServiceName) -> Option<RunId> {
    ledger.services.iter().find_map(|s| match s.state {
        StateForm::Live { run, .. } if s.name == *service => Some(RunId(run)),
        _ => None,
    })
}

fn owner_of(form: &ProcessForm) -> Option<(ServiceName, RunId)> {
    use super::handover::RoleForm;
    if let Some((service, role)) = &form.process {
        let (RoleForm::Main(run) | RoleForm::Forker(run) | RoleForm::Member(run)) = *role;
        return Some((service.clone(), RunId(run)));
    }
    let (service, run) = form.group.as_ref()?;
    Some((service.clone(), RunId(*run)))
}
