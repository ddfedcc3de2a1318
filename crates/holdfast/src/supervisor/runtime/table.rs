//! The process table: the one place that knows whose every pid is.
//!
//! A pid number can name two things at once, and the table records both: a process
//! holdfast started or learned of (a service's main process, a forking service's
//! forker, a former main process, an exec probe, an event hook), and a process group
//! of a service's run (the spawned process leads one; a daemon that called `setsid`
//! leads another). The group is kept after its leader is reaped, for as long as the
//! runtime finds members in it.
//!
//! Invariants:
//! - a pid names at most one process; inserting a process replaces what was known of an
//!   earlier one with the same pid;
//! - each process carries the reap number ([`ReapSeq`]) at which it was seen alive: only
//!   a reap numbered later is its exit, an earlier one was of a process that had the pid
//!   before (pids are reused);
//! - a run has at most one main process (or forker): naming a new one makes the old one
//!   a mere member of the run;
//! - reaps that matched no process of the table are kept (the last [`UNCLAIMED_KEPT`]),
//!   also those of a known process group: a main pid learned from `MAINPID=` or a
//!   pidfile may already be reaped when it is adopted (a forking daemon that wrote its
//!   pidfile and died at once is a member of the forker's group until then).
//!
//! Pure data: no system calls. The runtime asks the kernel (is a group still alive?) and
//! tells the table.
//!
//! Indexed by run and by role besides by pid, so that what concerns one run (its exit,
//! its groups) or the hooks costs what they hold, not the size of the table: a respawn
//! among 1000 idle services costs what it costs among 1.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::unix::Pid;

use crate::health::probe::ExecDeadline;
use crate::model::ServiceName;
use crate::process::reap::{ReapSeq, Reaped};
use crate::supervisor::service::RunId;

/// Reaped pids that matched no process of the table, remembered briefly (see the module
/// invariants).
pub const UNCLAIMED_KEPT: usize = 256;

/// A run of one service (an instance is a service of its own, `web@1`): what a process
/// or process group belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub service: ServiceName,
    pub run: RunId,
}

/// What a process is to its service, which decides what its exit means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The run's main process: its exit is the run's exit.
    Main(RunId),
    /// The spawned process of a forking service, which starts the daemon: its exit is
    /// the run's exit too (the core expects it while starting).
    Forker(RunId),
    /// A process of the run that is no longer its main one (`MAINPID=` or a pidfile named
    /// another): its exit only raises the question whether the run is empty now.
    Member(RunId),
    /// An exec health probe of the run: its exit is the probe's result.
    Probe(RunId, ExecProbe),
    /// An event hook: its exit is logged as the hook's.
    Hook(Hook),
    /// The `verify` command of a new build: its exit decides whether the build is used.
    Verify(Verify),
    /// A `systemctl` asked about (or to restart) an observed service: what it prints
    /// decides, its exit only ends it.
    Systemctl,
}

impl Role {
    /// The run the process belongs to; a hook belongs to its service, not to a run.
    pub fn run(&self) -> Option<RunId> {
        match self {
            Role::Main(run) | Role::Forker(run) | Role::Member(run) | Role::Probe(run, _) => {
                Some(*run)
            }
            Role::Hook(_) | Role::Verify(_) | Role::Systemctl => None,
        }
    }

    /// What the process is, as holdfast's debug log names it.
    pub fn describe(&self) -> String {
        match self {
            Role::Main(run) => format!("main process of run {}", run.0),
            Role::Forker(run) => format!("forker of run {}", run.0),
            Role::Member(run) => format!("member of run {}", run.0),
            Role::Probe(run, _) => format!("exec probe of run {}", run.0),
            Role::Hook(hook) => format!("{} hook", hook.event),
            Role::Verify(verify) => format!("verify command of {}", verify.target),
            Role::Systemctl => "systemctl".to_owned(),
        }
    }

    /// A main process or forker: the one process whose exit ends the run.
    pub fn is_main(&self) -> bool {
        matches!(self, Role::Main(_) | Role::Forker(_))
    }
}

/// A running exec health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecProbe {
    /// When it was spawned: its exit is timed from here (the probe latency histogram).
    pub began: Instant,
    pub deadline: ExecDeadline,
}

impl ExecProbe {
    /// A probe spawned at `began`, its timeout still ahead.
    pub fn new(began: Instant) -> Self {
        ExecProbe {
            began,
            deadline: ExecDeadline::NotReached,
        }
    }
}

/// A running event hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The event kind it runs for (`exited`, ...).
    pub event: String,
    pub deadline: Instant,
    pub timeout: Duration,
    /// SIGKILL was sent to its group at the deadline.
    pub killed: bool,
}

/// A running `verify` command of a build being checked for an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// What the upgrade was asked for: a service, or the base name of its instances.
    pub target: ServiceName,
    /// Its timeout passed and its process group was killed.
    pub timed_out: Option<Duration>,
}

/// One process in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub service: ServiceName,
    pub role: Role,
    /// The latest reap number when the process was known to be alive.
    pub alive_at: ReapSeq,
}

impl Process {
    /// The run it belongs to (none for a hook).
    pub fn owner(&self) -> Option<Owner> {
        Some(Owner {
            service: self.service.clone(),
            run: self.role.run()?,
        })
    }
}

/// Who a reaped process was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A process of the table, now removed from it.
    Process(Process),
    /// A process the table did not know, in a process group of this run.
    InGroup(Owner),
    /// Neither: kept for a while in case its pid is adopted later.
    Unclaimed,
}

/// What [`ProcessTable::adopt_main`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// The pid is the run's main process now.
    Adopted,
    /// The process had already exited (its reap came before the adoption): the run's
    /// main process is gone.
    Exited(Reaped),
}

/// What one pid number stands for.
#[derive(Debug, Default, Clone)]
struct Entry {
    process: Option<Process>,
    /// The run whose process group has this id.
    group: Option<Owner>,
}

impl Entry {
    /// The runs this pid is a process or a process group of (a main process usually
    /// leads its run's group: the same run twice).
    fn runs(&self) -> [Option<RunId>; 2] {
        let process = self.process.as_ref().and_then(|p| p.role.run());
        let group = self
            .group
            .as_ref()
            .map(|o| o.run)
            .filter(|r| Some(*r) != process);
        [process, group]
    }

    fn is_hook(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|p| matches!(p.role, Role::Hook(_)))
    }

    /// See [`ProcessTable::senders`].
    fn is_sender(&self) -> bool {
        self.group.is_some()
            || self.process.as_ref().is_some_and(|p| {
                matches!(p.role, Role::Main(_) | Role::Forker(_) | Role::Member(_))
            })
    }
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    pids: HashMap<Pid, Entry>,
    unclaimed: VecDeque<Reaped>,
    /// The pids of each run's processes and process groups.
    by_run: HashMap<RunId, Vec<Pid>>,
    /// The pids of running hooks.
    hook_pids: HashSet<Pid>,
    /// Pids that may have become senders or stopped being ones since the last
    /// [`ProcessTable::take_sender_changes`].
    sender_changes: Vec<Pid>,
}

impl ProcessTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `process` under `pid`, replacing any earlier process of that pid.
    pub fn insert(&mut self, pid: Pid, process: Process) {
        if process.role.is_main() {
            let owner = process.owner().expect("a main process belongs to a run");
            self.demote_mains(owner.run);
        }
        self.update(pid, |entry| entry.process = Some(process));
    }

    /// Records that the process group `pgid` belongs to `owner`'s run, unless it is
    /// known already (a group does not change owner while it has members).
    pub fn add_group(&mut self, pgid: Pid, owner: Owner) {
        self.update(pgid, |entry| {
            entry.group.get_or_insert(owner);
        });
    }

    /// The process with this pid, if the table knows it.
    pub fn process(&self, pid: Pid) -> Option<&Process> {
        self.pids.get(&pid)?.process.as_ref()
    }

    /// For what changes within a role (an exec probe's deadline): the indexes assume
    /// that the role's kind and run stay.
    pub fn process_mut(&mut self, pid: Pid) -> Option<&mut Process> {
        self.pids.get_mut(&pid)?.process.as_mut()
    }

    /// The run whose process group `pgid` is.
    pub fn group_owner(&self, pgid: Pid) -> Option<&Owner> {
        self.pids.get(&pgid)?.group.as_ref()
    }

    /// The run whose main process (or forker) `pid` is.
    pub fn main_owner(&self, pid: Pid) -> Option<Owner> {
        self.process(pid)
            .filter(|p| p.role.is_main())
            .and_then(Process::owner)
    }

    /// Whether the run's main process (or forker) is still in the table, i.e. not reaped.
    pub fn has_main(&self, run: RunId) -> bool {
        self.pids_of(run)
            .filter_map(|pid| self.process(pid))
            .any(|p| p.role.is_main() && p.role.run() == Some(run))
    }

    /// Who the reaped process was. A process of the table is removed from it, unless
    /// the reap came no later than the process was seen alive (then it was an earlier
    /// process with the same pid, and its process group decides). A reap that is no
    /// process of the table is kept for [`ProcessTable::adopt_main`], whether or not its
    /// group is known.
    pub fn claim(&mut self, reaped: &Reaped) -> Claim {
        if self
            .process(reaped.pid)
            .is_some_and(|p| reaped.seq > p.alive_at)
        {
            let process = self.update(reaped.pid, |entry| entry.process.take());
            return Claim::Process(process.expect("checked above"));
        }
        if self.unclaimed.len() == UNCLAIMED_KEPT {
            self.unclaimed.pop_front();
        }
        self.unclaimed.push_back(*reaped);
        match reaped.pgid.and_then(|pgid| self.group_owner(pgid)) {
            Some(owner) => Claim::InGroup(owner.clone()),
            None => Claim::Unclaimed,
        }
    }

    /// `pid`, seen alive at `alive_at`, is now the main process of `owner`'s run; the
    /// former main process stays a member of the run. If the pid was reaped after
    /// `alive_at` already (an unclaimed reap), that reap is the main process's exit.
    pub fn adopt_main(&mut self, pid: Pid, owner: Owner, alive_at: ReapSeq) -> Adoption {
        self.demote_mains(owner.run);
        let exit = self
            .unclaimed
            .iter()
            .position(|r| r.pid == pid && r.seq > alive_at);
        if let Some(i) = exit {
            let reaped = self.unclaimed.remove(i).expect("position is in range");
            return Adoption::Exited(reaped);
        }
        let process = Process {
            service: owner.service,
            role: Role::Main(owner.run),
            alive_at,
        };
        self.insert(pid, process);
        Adoption::Adopted
    }

    /// The process groups of `run`.
    pub fn groups_of(&self, run: RunId) -> Vec<Pid> {
        self.pids_of(run)
            .filter(|pgid| self.group_owner(*pgid).is_some_and(|o| o.run == run))
            .collect()
    }

    /// Forgets the process group `pgid` (it has no members any more).
    pub fn forget_group(&mut self, pgid: Pid) {
        if self.pids.contains_key(&pgid) {
            self.update(pgid, |entry| entry.group = None);
        }
    }

    /// Every process group of a run, with its run.
    pub fn groups(&self) -> impl Iterator<Item = (Pid, &Owner)> {
        self.pids
            .iter()
            .filter_map(|(pid, e)| Some((*pid, e.group.as_ref()?)))
    }

    /// Every process in the table.
    pub fn processes(&self) -> impl Iterator<Item = (Pid, &Process)> {
        self.pids
            .iter()
            .filter_map(|(pid, e)| Some((*pid, e.process.as_ref()?)))
    }

    /// Calls `f` with each running hook, to check or change its deadline.
    pub fn each_hook_mut(&mut self, mut f: impl FnMut(Pid, &ServiceName, &mut Hook)) {
        for pid in &self.hook_pids {
            if let Some(Process {
                service,
                role: Role::Hook(hook),
                ..
            }) = self.pids.get_mut(pid).and_then(|e| e.process.as_mut())
            {
                f(*pid, service, hook);
            }
        }
    }

    /// The running hooks.
    pub fn hooks(&self) -> impl Iterator<Item = (Pid, &ServiceName, &Hook)> {
        self.hook_pids
            .iter()
            .filter_map(|pid| Some((*pid, self.process(*pid)?)))
            .filter_map(|(pid, p)| match &p.role {
                Role::Hook(hook) => Some((pid, &p.service, hook)),
                _ => None,
            })
    }

    /// Who may send notifications: the process groups of runs and their main processes
    /// (and former ones).
    pub fn senders(&self) -> impl Iterator<Item = Pid> + '_ {
        self.pids
            .iter()
            .filter(|(_, e)| e.is_sender())
            .map(|(pid, _)| *pid)
    }

    /// What changed among [`ProcessTable::senders`] since the last call: each pid with
    /// whether it is one now.
    pub fn take_sender_changes(&mut self) -> Vec<(Pid, bool)> {
        let mut changed = std::mem::take(&mut self.sender_changes);
        changed.sort_unstable();
        changed.dedup();
        changed
            .into_iter()
            .map(|pid| (pid, self.pids.get(&pid).is_some_and(Entry::is_sender)))
            .collect()
    }

    /// The pids of `run`'s processes and process groups (and maybe a few more).
    fn pids_of(&self, run: RunId) -> impl Iterator<Item = Pid> + '_ {
        self.by_run.get(&run).into_iter().flatten().copied()
    }

    /// The main process (or forker) of `run` becomes a member (of the same run: no
    /// index changes).
    fn demote_mains(&mut self, run: RunId) {
        let Some(pids) = self.by_run.get(&run) else {
            return;
        };
        for pid in pids {
            let process = self.pids.get_mut(pid).and_then(|e| e.process.as_mut());
            if let Some(process) = process {
                if process.role.is_main() && process.role.run() == Some(run) {
                    process.role = Role::Member(run);
                }
            }
        }
    }

    /// Applies `change` to the entry of `pid` (made if missing, dropped once empty) and
    /// keeps the indexes up to date.
    fn update<R>(&mut self, pid: Pid, change: impl FnOnce(&mut Entry) -> R) -> R {
        let entry = self.pids.entry(pid).or_default();
        let (runs, hook, sender) = (entry.runs(), entry.is_hook(), entry.is_sender());
        let result = change(entry);
        let (new_runs, new_hook, new_sender) = (entry.runs(), entry.is_hook(), entry.is_sender());
        if entry.process.is_none() && entry.group.is_none() {
            self.pids.remove(&pid);
        }
        for run in runs.into_iter().flatten() {
            if !new_runs.contains(&Some(run)) {
                self.unlink(run, pid);
            }
        }
        for run in new_runs.into_iter().flatten() {
            if !runs.contains(&Some(run)) {
                self.by_run.entry(run).or_default().push(pid);
            }
        }
        if hook != new_hook {
            if new_hook {
                self.hook_pids.insert(pid);
            } else {
                self.hook_pids.remove(&pid);
            }
        }
        if sender != new_sender {
            self.sender_changes.push(pid);
        }
        result
    }

    fn unlink(&mut self, run: RunId, pid: Pid) {
        if let Some(pids) = self.by_run.get_mut(&run) {
            pids.retain(|p| *p != pid);
            if pids.is_empty() {
                self.by_run.remove(&run);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::model::ExitStatus;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).expect("valid name")
    }

    fn owner(service: &str, run: u64) -> Owner {
        Owner {
            service: name(service),
            run: RunId(run),
        }
    }

    fn process(service: &str, role: Role, alive_at: u64) -> Process {
        Process {
            service: name(service),
            role,
            alive_at: ReapSeq(alive_at),
        }
    }

    fn reaped(pid: i32, pgid: i32, seq: u64, code: i32) -> Reaped {
        Reaped {
            pid: Pid::from_raw(pid),
            seq: ReapSeq(seq),
            pgid: Some(Pid::from_raw(pgid)),
            status: ExitStatus::Exited(code),
        }
    }

    fn hook(event: &str) -> Role {
        Role::Hook(Hook {
            event: event.to_owned(),
            deadline: Instant::now(),
            timeout: Duration::from_secs(5),
            killed: false,
        })
    }

    /// A service's main process (leading its group), one exec probe and one hook, each
    /// in its own process group, all reaped in one batch: each exit goes to its role.
    #[test]
    fn a_probe_a_hook_and_the_main_process_reaped_together_are_each_told_apart() {
        let mut table = ProcessTable::new();
        let run = RunId(1);
        table.insert(Pid::from_raw(100), process("web", Role::Main(run), 0));
        table.add_group(Pid::from_raw(100), owner("web", 1));
        let probe = Role::Probe(run, ExecProbe::new(Instant::now()));
        table.insert(Pid::from_raw(101), process("web", probe.clone(), 0));
        let hook = hook("started");
        table.insert(Pid::from_raw(102), process("web", hook.clone(), 0));

        let batch = [
            reaped(102, 102, 1, 0),
            reaped(101, 101, 2, 1),
            reaped(100, 100, 3, 3),
        ];
        let claims: Vec<Claim> = batch.iter().map(|r| table.claim(r)).collect();
        assert_eq!(
            claims,
            [
                Claim::Process(process("web", hook, 0)),
                Claim::Process(process("web", probe, 0)),
                Claim::Process(process("web", Role::Main(run), 0)),
            ]
        );
        assert!(!table.has_main(run));
        assert_eq!(table.processes().count(), 0);
        assert_eq!(
            table.groups_of(run),
            [Pid::from_raw(100)],
            "the group outlives its leader until found empty"
        );
    }

    #[test]
    fn an_unknown_process_in_a_runs_group_is_claimed_by_that_run() {
        let mut table = ProcessTable::new();
        table.add_group(Pid::from_raw(100), owner("web", 1));
        assert_eq!(
            table.claim(&reaped(150, 100, 1, 0)),
            Claim::InGroup(owner("web", 1))
        );
        table.forget_group(Pid::from_raw(100));
        assert_eq!(table.claim(&reaped(151, 100, 2, 0)), Claim::Unclaimed);
    }

    #[test]
    fn a_reap_no_later_than_the_process_was_seen_alive_is_of_an_earlier_process() {
        let mut table = ProcessTable::new();
        table.insert(Pid::from_raw(200), process("db", Role::Main(RunId(4)), 7));
        // The pid's earlier holder, reaped as number 7, is not the announced process.
        assert_eq!(table.claim(&reaped(200, 200, 7, 0)), Claim::Unclaimed);
        assert!(table.has_main(RunId(4)));
        assert!(matches!(
            table.claim(&reaped(200, 200, 8, 0)),
            Claim::Process(Process {
                role: Role::Main(RunId(4)),
                ..
            })
        ));
    }

    #[test]
    fn adopting_a_main_pid_makes_the_old_main_a_member_and_finds_an_early_exit() {
        let mut table = ProcessTable::new();
        let run = RunId(2);
        table.insert(Pid::from_raw(300), process("app", Role::Forker(run), 0));
        assert_eq!(
            table.adopt_main(Pid::from_raw(301), owner("app", 2), ReapSeq(0)),
            Adoption::Adopted
        );
        assert_eq!(
            table.process(Pid::from_raw(300)).unwrap().role,
            Role::Member(run)
        );
        assert_eq!(table.main_owner(Pid::from_raw(301)), Some(owner("app", 2)));

        // A daemon that was reaped (unclaimed) before its pidfile was read.
        let early = reaped(400, 400, 5, 1);
        assert_eq!(table.claim(&early), Claim::Unclaimed);
        assert_eq!(
            table.adopt_main(Pid::from_raw(400), owner("app", 2), ReapSeq(4)),
            Adoption::Exited(early)
        );
        assert!(!table.has_main(run), "neither 301 (demoted) nor 400 (gone)");
        // A daemon that died in the forker's group before its pidfile was read: its
        // group claims the reap, and the adoption still finds it.
        table.add_group(Pid::from_raw(600), owner("app", 2));
        let in_group = reaped(601, 600, 6, 7);
        assert_eq!(table.claim(&in_group), Claim::InGroup(owner("app", 2)));
        assert_eq!(
            table.adopt_main(Pid::from_raw(601), owner("app", 2), ReapSeq(5)),
            Adoption::Exited(in_group)
        );
        // A reap no later than the sighting was an earlier holder of the pid.
        let stale = reaped(500, 500, 5, 1);
        table.claim(&stale);
        assert_eq!(
            table.adopt_main(Pid::from_raw(500), owner("app", 2), ReapSeq(5)),
            Adoption::Adopted
        );
    }

    #[test]
    fn only_the_last_reaps_that_matched_nothing_are_kept() {
        let mut table = ProcessTable::new();
        for i in 0..=UNCLAIMED_KEPT as i32 {
            table.claim(&reaped(1000 + i, 1000 + i, i as u64 + 1, 0));
        }
        let owner = owner("x", 1);
        let first = table.adopt_main(Pid::from_raw(1000), owner.clone(), ReapSeq::default());
        assert_eq!(first, Adoption::Adopted, "the oldest was dropped");
        let last = Pid::from_raw(1000 + UNCLAIMED_KEPT as i32);
        assert!(matches!(
            table.adopt_main(last, owner, ReapSeq::default()),
            Adoption::Exited(_)
        ));
    }

    #[test]
    fn senders_are_groups_and_service_processes_but_not_helpers() {
        let mut table = ProcessTable::new();
        table.insert(Pid::from_raw(10), process("a", Role::Main(RunId(1)), 0));
        table.add_group(Pid::from_raw(10), owner("a", 1));
        table.add_group(Pid::from_raw(11), owner("a", 1));
        table.insert(Pid::from_raw(12), process("a", hook("exited"), 0));
        let probe = Role::Probe(RunId(1), ExecProbe::new(Instant::now()));
        table.insert(Pid::from_raw(13), process("a", probe, 0));
        let mut senders: Vec<i32> = table.senders().map(Pid::as_raw).collect();
        senders.sort_unstable();
        assert_eq!(senders, [10, 11]);
        assert_eq!(table.hooks().count(), 1);
    }

    /// The indexes by run and by role against a walk of every pid, after every step of
    /// random sequences of inserts, groups, adoptions, reaps and forgotten groups (pids
    /// and runs drawn from small ranges, so that they collide and get reused).
    #[test]
    fn the_indexes_by_run_and_role_say_what_a_walk_of_every_pid_says() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut table = ProcessTable::new();
            let mut published: BTreeSet<Pid> = BTreeSet::new();
            for seq in 1..200 {
                random_change(&mut rng, &mut table, seq);
                for run in (1..5).map(RunId) {
                    let walked = table
                        .processes()
                        .any(|(_, p)| p.role.is_main() && p.role.run() == Some(run));
                    assert_eq!(table.has_main(run), walked, "seed {seed}: main of {run:?}");
                    let mut groups = table.groups_of(run);
                    groups.sort_unstable();
                    let mut walked: Vec<Pid> = (table.pids.iter())
                        .filter(|(_, e)| e.group.as_ref().is_some_and(|o| o.run == run))
                        .map(|(pgid, _)| *pgid)
                        .collect();
                    walked.sort_unstable();
                    assert_eq!(groups, walked, "seed {seed}: groups of {run:?}");
                }
                let mut by_run: BTreeMap<RunId, BTreeSet<Pid>> = BTreeMap::new();
                for (pid, entry) in &table.pids {
                    for run in entry.runs().into_iter().flatten() {
                        by_run.entry(run).or_default().insert(*pid);
                    }
                }
                let indexed: BTreeMap<RunId, BTreeSet<Pid>> = (table.by_run.iter())
                    .map(|(run, pids)| (*run, pids.iter().copied().collect()))
                    .collect();
                assert_eq!(indexed, by_run, "seed {seed}: nothing stale by run");
                let hooks: BTreeSet<Pid> = table.hooks().map(|(pid, _, _)| pid).collect();
                let walked: BTreeSet<Pid> = (table.processes())
                    .filter(|(_, p)| matches!(p.role, Role::Hook(_)))
                    .map(|(pid, _)| pid)
                    .collect();
                assert_eq!(hooks, walked, "seed {seed}: hooks");
                for (pid, sender) in table.take_sender_changes() {
                    if sender {
                        published.insert(pid);
                    } else {
                        published.remove(&pid);
                    }
                }
                let senders: BTreeSet<Pid> = table.senders().collect();
                assert_eq!(published, senders, "seed {seed}: senders");
            }
        }
    }

    fn random_change(rng: &mut fastrand::Rng, table: &mut ProcessTable, seq: u64) {
        let pid = Pid::from_raw(rng.i32(100..112));
        let run = RunId(rng.u64(1..5));
        match rng.u8(0..7) {
            0 => table.insert(pid, process("a", Role::Main(run), seq)),
            1 => {
                let role = match rng.u8(0..3) {
                    0 => Role::Member(run),
                    1 => Role::Probe(run, ExecProbe::new(Instant::now())),
                    _ => hook("exited"),
                };
                table.insert(pid, process("a", role, seq));
            }
            2 => table.add_group(pid, owner("a", run.0)),
            3 => {
                table.adopt_main(pid, owner("a", run.0), ReapSeq(seq));
            }
            4 => table.forget_group(pid),
            _ => {
                let pgid = rng.i32(100..112);
                table.claim(&reaped(pid.as_raw(), pgid, seq + 1000, 0));
            }
        }
    }
}
