//! Notifications (`sd_notify` datagrams) and watcher findings, attributed to a run by
//! the process table before they reach the core.

use crate::unix::Pid;

use super::Shell;
use super::table::Owner;
use crate::model::{ServiceKind, ServiceName};
use crate::notify::{self, NotifyMsg, server::Datagram};
use crate::process::reap;
use crate::supervisor::core::Input;
use crate::supervisor::service::{RunId, State};

impl Shell {
    /// Tells the notify socket's task the groups and main pids of services, so that it
    /// drops everyone else's datagrams. Called wherever one is added (removals may wait:
    /// a stale entry only lets a datagram through to `on_notify`). Only what changed
    /// since the last call is sent: a spawn costs the same among 1000 services as among 1.
    pub(super) fn publish_senders(&mut self) {
        self.senders.update(self.table.take_sender_changes());
    }

    /// A notification: from which service's run (by the sender's process group), and
    /// only a `MAINPID=` naming a process of that same run is kept.
    pub(super) fn on_notify(&mut self, datagram: Datagram) -> Option<Input> {
        let owner = datagram
            .pgid
            .and_then(|pgid| self.table.group_owner(pgid).cloned())
            .or_else(|| self.table.main_owner(datagram.pid))
            .map(|o| (o.service, o.run))
            .or_else(|| self.unadopted_daemon_of(datagram.pid));
        let Some((service, run)) = owner else {
            tracing::debug!(
                pid = %datagram.pid,
                "ignored a notification from a process of no service"
            );
            return None;
        };
        // Before the liveness check of `MAINPID=` (see `reap::latest`).
        let alive_at = reap::latest();
        let mut msgs = notify::parse(&datagram.text);
        msgs.retain(|msg| match msg {
            NotifyMsg::MainPid(pid) => {
                let ok = crate::process::proc_stat(*pid).is_ok_and(|stat| {
                    !stat.is_zombie()
                        && self
                            .table
                            .group_owner(stat.pgid)
                            .is_some_and(|o| o.run == run)
                });
                if !ok {
                    tracing::warn!(
                        "{service}: ignored MAINPID={pid}: not a process of the service"
                    );
                }
                ok
            }
            _ => true,
        });
        if msgs.is_empty() {
            return None;
        }
        Some(Input::Notify {
            service,
            run,
            msgs,
            alive_at,
        })
    }

    /// A watcher's finding, unless it would give one service another's process: a
    /// pidfile (without cgroups, ownership is judged by parentage, and every main process
    /// is holdfast's child) must not name the main process of another run.
    pub(super) fn vet_watcher_input(&self, input: Input) -> Option<Input> {
        if let Input::Adopted {
            service, run, pid, ..
        } = &input
        {
            if let Some(Owner {
                service: owner,
                run: owner_run,
                ..
            }) = self.table.main_owner(*pid)
            {
                if (&owner, &owner_run) != (service, run) {
                    tracing::warn!(
                        "{service}: ignored pidfile naming pid {pid}: it is the main process of {owner}"
                    );
                    return None;
                }
            }
        }
        Some(input)
    }

    /// The starting forking service whose cgroup holds `pid` while its pidfile has not
    /// named a daemon yet: the daemon left the spawned process's group and session, so
    /// only the cgroup knows it is the service's, and it may say `READY=1` before the
    /// pidfile is read. (Without cgroups such a notification cannot be attributed.)
    fn unadopted_daemon_of(&self, pid: Pid) -> Option<(ServiceName, RunId)> {
        self.sup.services().find_map(|s| {
            let State::Starting { run, .. } = s.state() else {
                return None;
            };
            let forking = matches!(s.spec().kind, ServiceKind::Forking { .. });
            if !forking || s.named_main_pid().is_some() {
                return None;
            }
            self.cgroup(s.name())?
                .pids()
                .contains(&pid)
                .then(|| (s.name().clone(), *run))
        })
    }
}
