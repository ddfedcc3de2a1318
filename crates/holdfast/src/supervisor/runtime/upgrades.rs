//! Upgrade triggers on the supervisor task: a flip of a watched link or `holdfast
//! upgrade` becomes a verified build handed to the core (`Input::Upgrade`), or an
//! `upgrade_refused` event, and nothing changes; a rollback points the link back.
//!
//! File checks and link writes run off this task, in blocking tasks that report through
//! `Finished::Upgrade`. A build's `verify` command is a helper process of the service (its
//! recipe, user and log, like a hook) in the process table, so its exit comes from the
//! reaper; a timer task reports its timeout, and its process group is killed then.
//!
//! What upgrades concern is a *target*: a service, or the base name of its instances
//! (they share one `[upgrade]` and one link; the core rolls them out one at a time).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::table::{Process, Role, Verify};
use super::{Finished, Shell};
use crate::control::protocol::{ControlError, ErrorKind, Reply};
use crate::model::{ExitStatus, Plan, ServiceName, ServiceSpec};
use crate::process::reap;
use crate::supervisor::core::{self as core, Input, take_reply};
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::service::Service;
use crate::unix::Pid;
use crate::upgrade::verify::{self, Refusal};
use crate::upgrade::{link, watch};

type Answer = Result<Reply, ControlError>;

/// What upgrade work done off this task reports.
pub(super) enum UpgradeMsg {
    /// A watched link changed.
    Flipped(watch::Flip),
    /// A build's file checks are done.
    Checked {
        target: ServiceName,
        result: Result<Found, Refusal>,
    },
    /// A `verify` command's timeout passed; if it is not reaped yet, it is killed.
    VerifyTimedOut { pid: Pid, timeout: Duration },
    /// What newly watched links said when their watch began.
    LinkTexts(Vec<(ServiceName, PathBuf)>),
}

/// A build that passed its file checks.
pub(super) struct Found {
    build: PathBuf,
    /// The watched link's text that led to it, when the build was taken from the link.
    link_text: Option<PathBuf>,
}

/// Who asked for an upgrade, and so who hears of its outcome.
enum Trigger {
    /// A flip of the watched link: a refusal is an event only.
    Flip,
    /// `holdfast upgrade`: the answer goes back to the client.
    Request(oneshot::Sender<Answer>),
}

/// A build being verified for a target.
struct Job {
    /// The requests that wait for its outcome (none for a flip: a refusal is an event).
    replies: Vec<oneshot::Sender<Answer>>,
    /// Set once its file checks passed, while its `verify` command runs.
    found: Option<Found>,
}

/// What the shell keeps of upgrades.
#[derive(Default)]
pub(super) struct Upgrades {
    watcher: Option<watch::Watcher>,
    /// Per target: the build being verified (one at a time).
    jobs: HashMap<ServiceName, Job>,
    /// Targets whose link flipped while a build was verified: looked at again after.
    again: BTreeSet<ServiceName>,
    /// Per target: the link texts that led to each build it ran or was moved to, for
    /// pointing the link back at the build a rollback restores (`rollback_link`).
    link_texts: HashMap<ServiceName, HashMap<PathBuf, PathBuf>>,
    /// Per target: the build the link was pointed back at; its flip is no new upgrade.
    restored: HashMap<ServiceName, PathBuf>,
}

/// The target a service belongs to: itself, or the base name of its instances.
fn target_of(spec: &ServiceSpec) -> ServiceName {
    spec.instance
        .as_ref()
        .map_or_else(|| spec.name.clone(), |i| i.base.clone())
}

/// The spec of a target (its first instance's for a base name).
fn spec_of<'a>(plan: &'a Plan, target: &ServiceName) -> Option<&'a ServiceSpec> {
    let first = crate::supervisor::rolling::instances_named(plan, target)
        .into_iter()
        .next()?;
    plan.services.get(&first)
}

/// Every watched link of `plan`, once per target.
fn watch_targets(plan: &Plan) -> BTreeSet<watch::Target> {
    plan.services
        .values()
        .filter_map(|spec| {
            let link = spec.upgrade.as_ref()?.watch.clone()?;
            Some(watch::Target {
                service: target_of(spec),
                link,
                program: PathBuf::from(spec.command.first()?),
            })
        })
        .collect()
}

/// The build a service runs, or is being moved to by a rollout under way.
fn wanted(service: &Service) -> Option<&Path> {
    match service.rollout() {
        Some(rollout) => Some(&rollout.to),
        None => service.build(),
    }
}

fn bad_request(message: String) -> ControlError {
    ControlError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// The file checks, off the supervisor task: `path` resolved and checked; `link` is read
/// first when the build is taken from it, so its text leads to the build found (a flip
/// in between is a flip of its own).
fn check(
    path: &Path,
    checksum: crate::model::Checksum,
    runner: &verify::Runner,
    link: Option<&Path>,
) -> Result<Found, Refusal> {
    let link_text = link.and_then(|l| link::read(l).ok());
    let build = verify::resolve(path)?;
    match verify::check_file(&build, checksum, runner) {
        Ok(()) => Ok(Found { build, link_text }),
        Err(reason) => Err(Refusal { build, reason }),
    }
}

impl Shell {
    /// After `upgrade --self`: each watched link is looked at once, as if it flipped. A
    /// flip the previous image had not acted on (still debounced, or during the exec)
    /// is not lost; a link that names the running build changes nothing.
    pub(super) fn look_at_links(&mut self) {
        for target in watch_targets(self.sup.plan()) {
            self.begin(target.service, None, Trigger::Flip);
        }
    }

    /// A target whose new build is being verified, if any: a self-upgrade waits for it
    /// (the verification would not be carried over).
    pub(super) fn verifying(&self) -> Option<&ServiceName> {
        self.upgrades.jobs.keys().next()
    }

    /// Watches follow the plan: started at boot, replaced after a reload that changed
    /// the watched links.
    pub(super) fn follow_watches(&mut self) {
        let targets = watch_targets(self.sup.plan());
        let current = self.upgrades.watcher.as_ref().map(watch::Watcher::targets);
        if current.unwrap_or(&BTreeSet::new()) == &targets {
            return;
        }
        self.upgrades.watcher = None;
        if targets.is_empty() {
            return;
        }
        let done = self.done_tx.clone();
        let sink = move |flip| {
            let msg = Finished::Upgrade(UpgradeMsg::Flipped(flip));
            done.send(msg).is_ok()
        };
        match watch::Watcher::start(targets.clone(), sink) {
            Ok(watcher) => self.upgrades.watcher = Some(watcher),
            Err(e) => tracing::warn!("cannot watch the upgrade links: {e}"),
        }
        let unknown: Vec<(ServiceName, PathBuf)> = targets
            .into_iter()
            .filter(|t| !self.upgrades.link_texts.contains_key(&t.service))
            .map(|t| (t.service, t.link))
            .collect();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let texts = unknown
                .into_iter()
                .filter_map(|(target, link)| Some((target, link::read(&link).ok()?)))
                .collect();
            let _ = done.send(Finished::Upgrade(UpgradeMsg::LinkTexts(texts)));
        });
    }

    pub(super) fn on_upgrade_msg(&mut self, msg: UpgradeMsg) {
        match msg {
            UpgradeMsg::Flipped(flip) => self.on_flip(flip),
            UpgradeMsg::Checked { target, result } => self.on_checked(target, result),
            UpgradeMsg::VerifyTimedOut { pid, timeout } => self.verify_timed_out(pid, timeout),
            UpgradeMsg::LinkTexts(texts) => {
                for (target, text) in texts {
                    // The text read at start leads to the build the target runs now.
                    let first =
                        crate::supervisor::rolling::instances_named(self.sup.plan(), &target)
                            .into_iter()
                            .next();
                    let build = first
                        .and_then(|name| self.sup.service(&name))
                        .and_then(|service| service.build())
                        .map(Path::to_path_buf);
                    if let Some(build) = build {
                        let texts = self.upgrades.link_texts.entry(target).or_default();
                        texts.entry(build).or_insert(text);
                    }
                }
            }
        }
    }

    /// `holdfast upgrade TARGET [--to PATH]`: answered once the build was verified and
    /// handed to the core, or refused.
    pub(super) fn upgrade_requested(
        &mut self,
        target: ServiceName,
        to: Option<PathBuf>,
        reply: oneshot::Sender<Answer>,
    ) {
        let Some(spec) = spec_of(self.sup.plan(), &target) else {
            let _ = reply.send(Err(core::unknown_service(&target)));
            return;
        };
        if spec.upgrade.is_none() {
            let _ = reply.send(Err(bad_request(format!(
                "{target} has no [service.{}.upgrade] section: only a service with one can be upgraded",
                target_of(spec)
            ))));
            return;
        }
        if let Some(to) = to.as_ref().filter(|to| !to.is_absolute()) {
            let _ = reply.send(Err(bad_request(format!(
                "--to {}: the build must be an absolute path",
                to.display()
            ))));
            return;
        }
        self.begin(target, to, Trigger::Request(reply));
    }

    fn on_flip(&mut self, flip: watch::Flip) {
        let target = flip.service;
        match flip.build {
            Err(refusal) => self.refuse(&target, &refusal),
            Ok(build) => {
                if self.upgrades.restored.get(&target) == Some(&build) {
                    // The rollback's own flip back.
                    self.upgrades.restored.remove(&target);
                    return;
                }
                if self.already(&target, &build).is_none() {
                    self.begin(target, Some(build), Trigger::Flip);
                }
            }
        }
    }

    /// What is there to say when every service of `target` runs `build` already or is
    /// being moved to it (one by one, for instances): an upgrade to it is no new one.
    fn already(&self, target: &ServiceName, build: &Path) -> Option<String> {
        let under_way = || format!("an upgrade of {target} to {} is under way", build.display());
        if self.sup.canary(target).is_some_and(|c| c.to == build) {
            return Some(under_way());
        }
        let names = crate::supervisor::rolling::instances_named(self.sup.plan(), target);
        let services: Vec<&Service> = names.iter().filter_map(|n| self.sup.service(n)).collect();
        if services.is_empty() || !services.iter().all(|s| wanted(s) == Some(build)) {
            return None;
        }
        if services.iter().any(|s| s.rollout().is_some()) {
            Some(under_way())
        } else {
            Some(format!("{target} already runs {}", build.display()))
        }
    }

    /// Verifies a build for `target`: `build`, or without one the build its program
    /// names now. One build per target at a time.
    fn begin(&mut self, target: ServiceName, build: Option<PathBuf>, by: Trigger) {
        let Some(spec) = spec_of(self.sup.plan(), &target) else {
            return; // Removed by a reload meanwhile.
        };
        let Some(upgrade) = &spec.upgrade else {
            return;
        };
        if let Some(job) = self.upgrades.jobs.get_mut(&target) {
            match (by, build) {
                (Trigger::Flip, _) => {
                    self.upgrades.again.insert(target);
                }
                // Both take the build the link names: one verification answers both
                // (a deploy that flips the link and runs `holdfast upgrade` at once).
                (Trigger::Request(reply), None) => job.replies.push(reply),
                (Trigger::Request(reply), Some(_)) => {
                    let _ = reply.send(Err(bad_request(format!(
                        "another build for {target} is being verified: try again once it is done"
                    ))));
                }
            }
            return;
        }
        let runner = verify::Runner::of(spec.privileges.credentials.as_ref());
        let checksum = upgrade.checksum;
        // A flip's build, or a request without `--to`, came from the link.
        let from_link = matches!(by, Trigger::Flip) || build.is_none();
        let link = upgrade.watch.clone().filter(|_| from_link);
        let path = build.unwrap_or_else(|| PathBuf::from(&spec.command[0]));
        let done = self.done_tx.clone();
        let replies = match by {
            Trigger::Flip => Vec::new(),
            Trigger::Request(reply) => vec![reply],
        };
        let job = Job {
            replies,
            found: None,
        };
        self.upgrades.jobs.insert(target.clone(), job);
        tokio::task::spawn_blocking(move || {
            let result = check(&path, checksum, &runner, link.as_deref());
            let _ = done.send(Finished::Upgrade(UpgradeMsg::Checked { target, result }));
        });
    }

    fn on_checked(&mut self, target: ServiceName, result: Result<Found, Refusal>) {
        let found = match result {
            Ok(found) => found,
            Err(refusal) => return self.finish(&target, Err(refusal)),
        };
        if let Some(message) = self.already(&target, &found.build) {
            let replies = self.upgrades.jobs.remove(&target).map(|j| j.replies);
            for reply in replies.into_iter().flatten() {
                let message = message.clone();
                let _ = reply.send(Ok(Reply::Accepted { message }));
            }
            return self.look_again(&target);
        }
        let spec = spec_of(self.sup.plan(), &target).cloned();
        let verify = spec
            .as_ref()
            .and_then(|s| s.upgrade.as_ref()?.verify.clone());
        let (Some(spec), Some(verify)) = (spec, verify) else {
            return self.finish(&target, Ok(found));
        };
        let command = verify::command(&verify.command, &found.build);
        match self.start_verify(&target, &spec, &command, verify.timeout) {
            Ok(()) => {
                if let Some(job) = self.upgrades.jobs.get_mut(&target) {
                    job.found = Some(found);
                }
            }
            Err(error) => {
                let reason = format!("the verify command failed to start: {error}");
                let build = found.build;
                self.finish(&target, Err(Refusal { build, reason }));
            }
        }
    }

    /// Spawns a `verify` command as a helper process of the service.
    fn start_verify(
        &mut self,
        target: &ServiceName,
        spec: &ServiceSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        if command.is_empty() {
            return Err("it is empty".to_owned());
        }
        let recipe = self.recipe(spec);
        let alive_at = reap::latest();
        let capture = self.capture(&spec.name);
        let pid = crate::supervisor::hooks::spawn_helper(&recipe, spec, command, capture)?;
        tracing::info!("{target}: verifying the new build: {command:?} (pid {pid})");
        let role = Role::Verify(Verify {
            target: target.clone(),
            timed_out: None,
        });
        let process = Process {
            service: spec.name.clone(),
            role,
            alive_at,
        };
        self.table.insert(pid, process);
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = done.send(Finished::Upgrade(UpgradeMsg::VerifyTimedOut {
                pid,
                timeout,
            }));
        });
        Ok(())
    }

    fn verify_timed_out(&mut self, pid: Pid, timeout: Duration) {
        // Not in the table: reaped already. In it, it may just have been reaped (the
        // report is on its way): the kill happens only while it is not.
        let Some(process) = self.table.process_mut(pid) else {
            return;
        };
        let Role::Verify(verify) = &mut process.role else {
            return;
        };
        match super::probes::kill_group(pid) {
            Some(Ok(_)) => verify.timed_out = Some(timeout),
            Some(Err(e)) => tracing::warn!(
                "{}: failed to kill the timed-out verify command {pid}: {e}",
                process.service
            ),
            None => {}
        }
    }

    /// A `verify` command was reaped: its exit decides.
    pub(super) fn verify_exited(&mut self, verify: Verify, status: ExitStatus) {
        let target = verify.target;
        let Some(found) = self
            .upgrades
            .jobs
            .get_mut(&target)
            .and_then(|job| job.found.take())
        else {
            return;
        };
        let failed = match (verify.timed_out, status) {
            (Some(after), _) => Some(format!(
                "the verify command timed out after {}",
                humantime::format_duration(after)
            )),
            (None, status) if status.code() == Some(0) => None,
            (None, status) => Some(format!("the verify command {status}")),
        };
        let result = match failed {
            None => Ok(found),
            Some(reason) => Err(Refusal {
                build: found.build,
                reason,
            }),
        };
        self.finish(&target, result);
    }

    /// The verification of `target`'s build is over: the build goes to the core, or is
    /// refused; whoever asked hears of it.
    fn finish(&mut self, target: &ServiceName, result: Result<Found, Refusal>) {
        let Some(job) = self.upgrades.jobs.remove(target) else {
            return;
        };
        let answer = match result {
            Ok(found) => self.hand_over(target, found),
            Err(refusal) => {
                self.refuse(target, &refusal);
                Err(bad_request(format!(
                    "upgrade of {target} to {} refused: {}",
                    refusal.build.display(),
                    refusal.reason
                )))
            }
        };
        match &answer {
            Ok(Reply::Accepted { message }) => tracing::info!("{target}: {message}"),
            Ok(_) => {}
            // A refusal was published as its event too.
            Err(e) => tracing::warn!("{target}: {}", e.message),
        }
        for reply in job.replies {
            let _ = reply.send(answer.clone());
        }
        self.look_again(target);
    }

    /// The link flipped while a build was verified: what it names now is looked at.
    fn look_again(&mut self, target: &ServiceName) {
        if self.upgrades.again.remove(target) {
            self.begin(target.clone(), None, Trigger::Flip);
        }
    }

    /// Hands a verified build to the core, which rolls it out.
    fn hand_over(&mut self, target: &ServiceName, found: Found) -> Answer {
        let input = Input::Upgrade {
            service: target.clone(),
            to: found.build.clone(),
        };
        let mut effects = self.sup.handle(input, Instant::now());
        let answer = match take_reply(&mut effects) {
            Some(Ok(core::Answer::Accepted(message))) => Ok(Reply::Accepted { message }),
            Some(Ok(core::Answer::Reload(plan))) => Ok(Reply::Reload(plan)),
            Some(Err(e)) => Err(e),
            // A core that answers nothing still took the input.
            None => Ok(Reply::Accepted {
                message: format!("upgrading {target} to {}", found.build.display()),
            }),
        };
        if let (Ok(_), Some(text)) = (&answer, found.link_text) {
            let texts = self.upgrades.link_texts.entry(target.clone()).or_default();
            texts.insert(found.build, text);
        }
        // An upgrade never completes a shutdown: the flag `execute` returns is false.
        self.execute(effects);
        answer
    }

    /// Publishes `upgrade_refused` for every service of `target` (each has its log and
    /// hooks).
    fn refuse(&mut self, target: &ServiceName, refusal: &Refusal) {
        let names = crate::supervisor::rolling::instances_named(self.sup.plan(), target);
        for name in names {
            self.publish(&Event {
                service: Some(name),
                kind: EventKind::UpgradeRefused {
                    build: refusal.build.clone(),
                    reason: refusal.reason.clone(),
                },
            });
        }
    }

    /// What the rollout's end means for the link: `upgraded` makes the new build's link
    /// text the one to go back to; `rolled_back` points the link back at the old one.
    pub(super) fn link_follows(&mut self, event: &Event) {
        let Some(spec) = (event.service.as_ref()).and_then(|s| self.sup.plan().services.get(s))
        else {
            return;
        };
        let target = target_of(spec);
        match &event.kind {
            EventKind::Upgraded { .. } => {
                self.upgrades.restored.remove(&target);
            }
            EventKind::RolledBack { build, .. } => {
                let Some(link) = spec
                    .upgrade
                    .as_ref()
                    .filter(|u| u.rollback_link)
                    .and_then(|u| u.watch.clone())
                else {
                    return;
                };
                let text = (self.upgrades.link_texts.get(&target)).and_then(|t| t.get(build));
                let Some(text) = text.cloned() else {
                    tracing::warn!(
                        "{target}: not pointing {} back: no link text is known to lead to {} (it did not come from a flip of the link)",
                        link.display(),
                        build.display()
                    );
                    return;
                };
                self.upgrades.restored.insert(target.clone(), build.clone());
                tokio::task::spawn_blocking(move || match link::point(&link, &text) {
                    Ok(()) => tracing::info!(
                        "{target}: pointed {} back at {}",
                        link.display(),
                        text.display()
                    ),
                    Err(e) => tracing::warn!(
                        "{target}: failed to point {} back at {}: {e}",
                        link.display(),
                        text.display()
                    ),
                });
            }
            _ => {}
        }
    }
}
