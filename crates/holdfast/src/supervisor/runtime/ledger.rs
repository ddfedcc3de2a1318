//! The ledger: what runs, written down in `<state_dir>/running.json` for the holdfast
//! started after this one if this one is killed (SIGKILL, a crash, the OOM killer).
//! That holdfast adopts the processes it finds there (see `adopt`): same pids, no second
//! copy, no orphan.
//!
//! What it holds: the core's state of every service that can be carried on (see
//! `Supervisor::carried`), the processes and process groups of the runs (as
//! `upgrade --self` hands them over), each process's start time (a pid alone may be
//! reused by the time it is read), the fingerprint of the spec each live run was started
//! with and the identities of its output pipes.
//!
//! Invariants:
//! - the file is replaced atomically (a temp file, fsync, rename, fsync of the
//!   directory): a reader finds the previous version or the new one, never half;
//! - it is written off the loop, one write at a time: changes while a write is under
//!   way make one more write when it is done, so a restart storm costs a bounded number
//!   of writes, not one per event;
//! - a clean shutdown removes it once every service has stopped: a ledger found at
//!   start means the previous holdfast did not get to stop its services.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::handover::{self, ProcessForm, ServiceForm};
use super::{Finished, Shell};
use crate::model::ServiceName;
use crate::process::{proc_stat, reap};
use crate::supervisor::reload::fingerprint;
use crate::unix::Pid;

/// The ledger's name in `state_dir`.
pub(super) const FILE: &str = "running.json";
/// Changes whenever the form changes incompatibly: a ledger of another format is not
/// read (its processes are then stopped, not adopted).
pub(super) const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Ledger {
    pub format: u32,
    /// The boot it was written in: start times count from the boot.
    pub boot_id: String,
    /// When it was written, as time since boot (see `pidfd::since_boot`): the time
    /// that passed until the next holdfast read it counts against what was pending
    /// (a restart's delay).
    #[serde(default)]
    pub written: Duration,
    /// The number of the last event published: the next holdfast goes on from it, so
    /// `events --since N` keeps its meaning.
    #[serde(default)]
    pub last_event: u64,
    pub next_run: u64,
    pub services: Vec<ServiceForm>,
    pub processes: Vec<ProcessForm>,
    /// The start time (clock ticks since boot) of each process of `processes` that was
    /// alive when the ledger was written.
    pub start_times: BTreeMap<i32, u64>,
    /// Per service with a live run: what that run is.
    pub runs: BTreeMap<ServiceName, RunNote>,
}

/// What a live run was started as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RunNote {
    /// `reload::fingerprint` of its spec.
    pub spec: u64,
    /// Its stdout and stderr pipes (see `Capture::pipe_ids`).
    pub pipes: Option<[u64; 2]>,
}

/// The shell's side: whether the ledger is behind, and the write under way.
#[derive(Debug, Default)]
pub(super) struct Writer {
    path: PathBuf,
    boot_id: String,
    behind: bool,
    writing: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn new(state_dir: &Path) -> Self {
        let boot_id = crate::process::pidfd::boot_id()
            .inspect_err(|e| tracing::warn!("cannot read the boot id: {e}"))
            .unwrap_or_default();
        Self {
            path: state_dir.join(FILE),
            boot_id,
            ..Self::default()
        }
    }

    /// Something the ledger holds changed.
    pub(super) fn behind(&mut self) {
        self.behind = true;
    }

    /// At a clean shutdown, every service stopped: waits for a write under way, then
    /// removes the ledger.
    pub(super) async fn remove(&mut self) {
        if let Some(write) = self.writing.take() {
            let _ = write.await;
        }
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

impl Shell {
    /// Writes the ledger if it is behind and no write is under way.
    pub(super) fn write_ledger(&mut self) {
        if !self.ledger.behind || self.ledger.writing.is_some() {
            return;
        }
        self.ledger.behind = false;
        let ledger = self.ledger_now();
        let path = self.ledger.path.clone();
        // Adopted processes are not holdfast's children, whose start times are read
        // while they cannot be reaped (see `reap::while_unreaped`).
        let adopted: HashMap<Pid, u64> = (self.adoptions.processes.iter())
            .map(|(pid, (start, _))| (*pid, *start))
            .collect();
        let done = self.done_tx.clone();
        self.ledger.writing = Some(tokio::task::spawn_blocking(move || {
            let mut ledger = ledger;
            ledger.start_times = start_times(&ledger.processes, &adopted);
            if let Err(e) = write(&path, &ledger) {
                tracing::warn!("cannot write {}: {e}", path.display());
            }
            let _ = done.send(Finished::Ledger);
        }));
    }

    /// A write is done: the next one may start.
    pub(super) fn ledger_written(&mut self) {
        self.ledger.writing = None;
        self.write_ledger();
    }

    /// The ledger as of now, but for the start times (read off the loop).
    fn ledger_now(&self) -> Ledger {
        let carried = self.sup.carried(Instant::now());
        let runs = self
            .sup
            .services()
            .filter(|s| s.run().is_some())
            .map(|s| {
                let pipes = self
                    .slots
                    .get(s.name())
                    .and_then(|slot| slot.capture.as_ref())
                    .map(crate::logs::Capture::pipe_ids);
                let note = RunNote {
                    spec: fingerprint(s.spec()),
                    pipes,
                };
                (s.name().clone(), note)
            })
            .collect();
        Ledger {
            format: FORMAT,
            boot_id: self.ledger.boot_id.clone(),
            written: crate::process::pidfd::since_boot().unwrap_or_default(),
            last_event: self.bus.last_seq(),
            next_run: carried.next_run,
            services: handover::services(&carried),
            processes: handover::processes(&self.table),
            start_times: BTreeMap::new(),
            runs,
        }
    }
}

/// The start time of each process (not mere group) of `processes` still alive: read
/// while it cannot be reaped (the pid cannot be reused meanwhile), or known from its
/// adoption.
fn start_times(processes: &[ProcessForm], adopted: &HashMap<Pid, u64>) -> BTreeMap<i32, u64> {
    processes
        .iter()
        .filter(|form| form.process.is_some())
        .filter_map(|form| {
            let pid = Pid::from_raw(form.pid);
            // A child first: an adopted process that ended may have left its pid to one.
            let start = reap::while_unreaped(pid, || proc_stat(pid).ok().map(|s| s.start_time))
                .flatten()
                .or_else(|| adopted.get(&pid).copied())?;
            Some((form.pid, start))
        })
        .collect()
}

/// Replaces the file at `path` with `ledger`, atomically and durably.
fn write(path: &Path, ledger: &Ledger) -> io::Result<()> {
    crate::private_file::replace(
        path,
        &serde_json::to_vec(ledger).expect("plain data serializes"),
    )
}

/// The ledger a killed holdfast left in `state_dir`, if any. One that cannot be read
/// (another format, damaged) is reported and treated as none.
pub(super) fn read(state_dir: &Path) -> Option<Ledger> {
    let path = state_dir.join(FILE);
    let bytes = match read_no_follow(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("cannot read {}: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_slice::<Ledger>(&bytes) {
        Ok(ledger) if ledger.format == FORMAT => Some(ledger),
        Ok(ledger) => {
            tracing::warn!(
                "{} is of format {} (this holdfast reads {FORMAT}): not used",
                path.display(),
                ledger.format
            );
            None
        }
        Err(e) => {
            tracing::warn!("{} is damaged ({e}): not used", path.display());
            None
        }
    }
}

/// The file at `path`, not through a symlink, and only if holdfast's own user wrote it
/// and nobody else may: the ledger decides which processes holdfast adopts, signals
/// and kills.
fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut file = crate::private_file::open(path)?;
    let meta = file.metadata()?;
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {} with mode {:o}: only holdfast's own user may write it",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::testutil::TempDir;

    #[test]
    fn a_written_ledger_reads_back_the_same() {
        let dir = TempDir::new("ledger");
        let ledger = Ledger {
            format: FORMAT,
            boot_id: "b".to_owned(),
            written: Duration::from_secs(5),
            last_event: 3,
            next_run: 7,
            services: Vec::new(),
            processes: Vec::new(),
            start_times: BTreeMap::from([(42, 1000)]),
            runs: BTreeMap::new(),
        };
        write(&dir.path().join(FILE), &ledger).expect("written");
        write(&dir.path().join(FILE), &ledger).expect("and replaced");
        assert_eq!(read(dir.path()), Some(ledger));
    }

    #[test]
    fn a_ledger_others_may_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("open-ledger");
        let path = dir.path().join(FILE);
        let ledger = Ledger {
            format: FORMAT,
            boot_id: "b".to_owned(),
            written: Duration::ZERO,
            last_event: 0,
            next_run: 1,
            services: Vec::new(),
            processes: Vec::new(),
            start_times: BTreeMap::new(),
            runs: BTreeMap::new(),
        };
        write(&path, &ledger).expect("written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert_eq!(read(dir.path()), None);
    }

    #[test]
    fn a_damaged_ledger_is_none() {
        let dir = TempDir::new("damaged-ledger");
        std::fs::write(dir.path().join(FILE), b"{\"format\": 1, \"bo").expect("written");
        assert_eq!(read(dir.path()), None);
    }
}
