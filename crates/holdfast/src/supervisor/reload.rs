//! The difference between two plans, as applied by `reload` and shown by `--dry-run`.

use crate::control::protocol::ReloadPlan;
use crate::model::Plan;

/// Compares the running plan with a new one. Services are compared by their whole
/// definition: any change restarts the service so that it runs what the file says.
pub fn diff(old: &Plan, new: &Plan, dry_run: bool) -> ReloadPlan {
    let mut plan = ReloadPlan {
        dry_run,
        ..ReloadPlan::default()
    };
    for (name, spec) in &new.services {
        match old.services.get(name) {
            None => plan.added.push(name.clone()),
            Some(current) if current != spec => plan.changed.push(name.clone()),
            Some(_) => plan.unchanged.push(name.clone()),
        }
    }
    plan.removed = old
        .services
        .keys()
        .filter(|name| !new.services.contains_key(*name))
        .cloned()
        .collect();
    let (a, b) = (&old.daemon, &new.daemon);
    let settings = [
        ("control", a.control != b.control),
        ("control_group", a.control_group != b.control_group),
        ("state_dir", a.state_dir != b.state_dir),
        ("log_dir", a.log_dir != b.log_dir),
    ];
    plan.ignored = settings
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| format!("[holdfast].{key}"))
        .collect();
    plan
}
