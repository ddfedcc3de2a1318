//! The shell's side of instances: commands that name a service running as instances
//! (`start|stop|restart web` for `web@0` ..), and driving the rolling restart that
//! [`rolling::Rolls`] decides.

use std::time::Instant;

use super::Shell;
use crate::control::protocol::{ControlError, Reply, Request};
use crate::model::ServiceName;
use crate::supervisor::Command;
use crate::supervisor::event::Event;
use crate::supervisor::rolling::{self, Begin, Step};

/// A control answer and whether the shutdown is complete, as `on_control` returns them.
type Answer = (Result<Reply, ControlError>, bool);

impl Shell {
    /// Answers a start, stop or restart that names a service by the base name of its
    /// instances; `None` for every other request, which takes the usual way. A stop or
    /// start by hand of any instance ends that service's roll: the operator took over.
    pub(super) fn for_instances(&mut self, request: &Request, now: Instant) -> Option<Answer> {
        let (Request::Start { name } | Request::Stop { name } | Request::Restart { name }) =
            request
        else {
            return None;
        };
        if !matches!(request, Request::Restart { .. }) {
            self.rolls.cancel(name);
        }
        if self.sup.plan().services.contains_key(name) {
            return None;
        }
        let instances = rolling::instances_named(self.sup.plan(), name);
        if instances.is_empty() {
            return None;
        }
        Some(match request {
            Request::Restart { .. } => self.begin_roll(name, instances, now),
            Request::Start { .. } => {
                self.each(&instances, |shell, i| shell.command(Command::Start, i, now))
            }
            _ => self.each(&instances, |shell, i| shell.command(Command::Stop, i, now)),
        })
    }

    /// Applies `one` to every instance; the first error is the answer (the instances
    /// before it were already acted on, as with several names on the command line).
    pub(super) fn each(
        &mut self,
        instances: &[ServiceName],
        mut one: impl FnMut(&mut Self, &ServiceName) -> Answer,
    ) -> Answer {
        let mut messages = Vec::new();
        let mut done = false;
        for instance in instances {
            let (reply, finished) = one(self, instance);
            done |= finished;
            match reply {
                Ok(Reply::Accepted { message }) => messages.push(message),
                other => return (other, done),
            }
        }
        let message = messages.join("\n");
        (Ok(Reply::Accepted { message }), done)
    }

    fn begin_roll(
        &mut self,
        base: &ServiceName,
        instances: Vec<ServiceName>,
        now: Instant,
    ) -> Answer {
        let order = instances
            .iter()
            .map(ServiceName::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let first = match self.rolls.begin(base.clone(), instances) {
            Begin::Restart(first) => first,
            Begin::Joined { again } => return (Ok(Self::joined(base, &again)), false),
            Begin::Nothing => {
                let message = String::new();
                return (Ok(Reply::Accepted { message }), false);
            }
        };
        tracing::info!("{base}: rolling restart of {order}");
        let (reply, done) = self.restart(&first, now);
        let reply = match reply {
            Ok(_) => Ok(Reply::Accepted {
                message: format!(
                    "restarting {order} one after another, each once the one before is back up"
                ),
            }),
            Err(e) => {
                self.rolls.refused(&first);
                Err(e)
            }
        };
        (reply, done)
    }

    /// The answer to a restart of `base` while its roll is under way: the roll goes on,
    /// `again` are restarted once more at its end.
    fn joined(base: &ServiceName, again: &[ServiceName]) -> Reply {
        let mut message = format!("a rolling restart of {base} is under way; joined it");
        if !again.is_empty() {
            let again = again
                .iter()
                .map(ServiceName::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            message.push_str(&format!(
                ": {again} will be restarted again at its end, one after another"
            ));
        }
        tracing::info!("{base}: {message}");
        Reply::Accepted { message }
    }

    /// Notes what a published event means for a roll; acted on by [`Self::roll_on`]
    /// once the effects that published it are executed.
    pub(super) fn roll_event(&mut self, event: &Event) {
        let Some(service) = &event.service else {
            return;
        };
        if let Some(step) = self.rolls.on_event(service, &event.kind) {
            self.roll_steps.push(step);
        }
    }

    /// Restarts the instances whose turn came. Returns true once the shutdown is
    /// complete (a restart cannot complete one, but its effects are executed alike).
    pub(super) fn roll_on(&mut self) -> bool {
        let mut done = false;
        for step in std::mem::take(&mut self.roll_steps) {
            match step {
                Step::Restart(next) => {
                    let (reply, finished) = self.restart(&next, Instant::now());
                    done |= finished;
                    if let Err(e) = reply {
                        tracing::warn!("{next}: rolling restart halted: {}", e.message);
                        self.rolls.refused(&next);
                    }
                }
                Step::Finished(base) => tracing::info!("{base}: rolling restart done"),
                Step::Halted { base, instance } => tracing::warn!(
                    "{base}: rolling restart halted: {instance} did not come back up; the instances after it keep running their old copies"
                ),
            }
        }
        done
    }
}
