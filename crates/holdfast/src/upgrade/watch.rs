//! Watching `upgrade.watch` symlinks: a flip of the link becomes a [`Flip`] for its
//! service, with the build the program path names now.
//!
//! The link's *directory* is watched (inotify, through `notify`), not the link: a
//! deploy flips it with `ln -sfn`, a rename over it, and a watch on the link itself
//! would follow the old inode away. Events are filtered by the link's name and a burst
//! of them is one flip ([`DEBOUNCE`]). The program is resolved off the supervisor task;
//! whether the build is new is the supervisor's to decide (it knows the current one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::verify;
use crate::model::ServiceName;

/// Events of one link this close together are one flip: `ln -sfn` alone is a create
/// and a rename, and a deploy script may write the link twice (a relative fix-up, a
/// retry). The delay is what one upgrade waits longer, far below any rollout's time.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// One watched link: the service it upgrades and its program, which the link leads to
/// (`/opt/api/current/server`, or the link itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub service: ServiceName,
    pub link: PathBuf,
    pub program: PathBuf,
}

/// The link of `service` changed: the build its program names now, or why there is
/// none (a link to a missing file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    pub service: ServiceName,
    pub build: Result<PathBuf, verify::Refusal>,
}

/// Watches links until dropped.
pub struct Watcher {
    targets: BTreeSet<Target>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The task owns the inotify watcher: aborting it drops the watches.
        self.task.abort();
    }
}

impl Watcher {
    /// Watches the directory of each target's link; `sink` gets each flip (and returns
    /// false once nobody listens). A directory that cannot be watched is logged and
    /// skipped: its service is upgraded by `holdfast upgrade` only.
    pub fn start(
        targets: BTreeSet<Target>,
        sink: impl Fn(Flip) -> bool + Send + 'static,
    ) -> Result<Self, notify::Error> {
        let (raw_tx, raw) = mpsc::unbounded_channel();
        let mut inotify = notify::recommended_watcher(move |event| {
            // The watcher's own thread: the task reads the events.
            let _ = raw_tx.send(event);
        })?;
        let dirs: BTreeSet<&Path> = targets.iter().filter_map(|t| t.link.parent()).collect();
        for dir in dirs {
            if let Err(e) = inotify.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {} for upgrades: {e}", dir.display());
            }
        }
        let task = tokio::spawn(run(
            inotify,
            raw,
            targets.clone().into_iter().collect(),
            sink,
        ));
        Ok(Watcher { targets, task })
    }

    /// What it watches, to tell whether a new plan needs another watcher.
    pub fn targets(&self) -> &BTreeSet<Target> {
        &self.targets
    }
}

async fn run(
    _inotify: notify::RecommendedWatcher,
    mut raw: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    targets: Vec<Target>,
    sink: impl Fn(Flip) -> bool,
) {
    let mut bursts = Debounce::default();
    loop {
        tokio::select! {
            event = raw.recv() => match event {
                Some(Ok(event)) => {
                    for i in touched(&targets, &event) {
                        bursts.bump(i, Instant::now());
                    }
                }
                Some(Err(e)) => tracing::warn!("watching upgrade links: {e}"),
                None => return,
            },
            () = sleep_until(bursts.next()) => {
                for i in bursts.take_due(Instant::now()) {
                    let target = &targets[i];
                    let program = target.program.clone();
                    let build = tokio::task::spawn_blocking(move || verify::resolve(&program))
                        .await
                        .unwrap_or_else(|e| Err(verify::Refusal {
                            build: target.program.clone(),
                            reason: format!("cannot resolve it: {e}"),
                        }));
                    let flip = Flip { service: target.service.clone(), build };
                    if !sink(flip) {
                        return;
                    }
                }
            }
        }
    }
}

/// The targets whose link `event` concerns (reads of files do not count).
fn touched(targets: &[Target], event: &notify::Event) -> Vec<usize> {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return Vec::new();
    }
    (0..targets.len())
        .filter(|&i| event.paths.iter().any(|p| same_entry(p, &targets[i].link)))
        .collect()
}

/// Whether `path` (as inotify names it: the watched directory joined with a name) is
/// the directory entry `link`.
fn same_entry(path: &Path, link: &Path) -> bool {
    path.file_name() == link.file_name() && path.parent() == link.parent()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Bursts of events per key: a key is due [`DEBOUNCE`] after its last event.
#[derive(Debug, Default)]
pub struct Debounce<K> {
    due: Vec<(K, Instant)>,
}

impl<K: PartialEq> Debounce<K> {
    /// An event of `key` at `now`: its burst goes on until `now + DEBOUNCE`.
    pub fn bump(&mut self, key: K, now: Instant) {
        let at = now + DEBOUNCE;
        match self.due.iter_mut().find(|(k, _)| *k == key) {
            Some((_, due)) => *due = at,
            None => self.due.push((key, at)),
        }
    }

    /// When the next burst ends.
    pub fn next(&self) -> Option<Instant> {
        self.due.iter().map(|(_, at)| *at).min()
    }

    /// The keys whose burst has ended by `now`, in the order they began.
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let (due, later) = std::mem::take(&mut self.due)
            .into_iter()
            .partition(|(_, at)| *at <= now);
        self.due = later;
        due.into_iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_flip_due_after_its_last_event() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut bursts = Debounce::default();
        assert_eq!(bursts.next(), None);
        bursts.bump("api", t0);
        bursts.bump("api", t0 + ms(150));
        bursts.bump("web", t0 + ms(100));
        assert_eq!(bursts.next(), Some(t0 + ms(100) + DEBOUNCE));
        assert!(bursts.take_due(t0 + ms(250)).is_empty());
        assert_eq!(bursts.take_due(t0 + ms(300)), ["web"]);
        assert_eq!(bursts.take_due(t0 + ms(350)), ["api"]);
        assert_eq!(bursts.next(), None);
    }

    #[tokio::test]
    async fn a_burst_of_flips_of_the_watched_link_is_one_flip_to_its_last_build() {
        let dir = std::env::temp_dir().join(format!("holdfast-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for build in ["a", "b", "c"] {
            std::fs::create_dir_all(dir.join(build)).expect("mkdir");
            std::fs::write(dir.join(build).join("server"), "").expect("write");
        }
        let flip = |to: &str| {
            let temp = dir.join(".current.new");
            std::os::unix::fs::symlink(to, &temp).expect("link");
            std::fs::rename(&temp, dir.join("current")).expect("rename");
        };
        flip("a");
        let target = Target {
            service: ServiceName::new("api").expect("valid name"),
            link: dir.join("current"),
            program: dir.join("current/server"),
        };
        let (tx, mut flips) = mpsc::unbounded_channel();
        let watcher = Watcher::start([target].into(), move |f| tx.send(f).is_ok())
            .expect("inotify watches the directory");
        std::fs::write(dir.join("unrelated"), "").expect("write");
        flip("b");
        flip("c");
        let first = tokio::time::timeout(Duration::from_secs(30), flips.recv()).await;
        let first = first.expect("a flip within 30s").expect("the watcher runs");
        assert_eq!(first.service.as_str(), "api");
        assert_eq!(first.build, Ok(dir.join("c/server")));
        drop(watcher);
        assert_eq!(
            flips.recv().await,
            None,
            "one flip for the burst, none after"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_events_of_the_links_name_in_its_directory_count() {
        let target = |service: &str, link: &str| Target {
            service: ServiceName::new(service).expect("valid name"),
            link: PathBuf::from(link),
            program: PathBuf::from(link).join("server"),
        };
        let targets = [
            target("api", "/opt/api/current"),
            target("web", "/opt/web/current"),
        ];
        let event = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        let rename = notify::EventKind::Modify(notify::event::ModifyKind::Name(
            notify::event::RenameMode::Both,
        ));
        let create = notify::EventKind::Create(notify::event::CreateKind::Any);
        let read = notify::EventKind::Access(notify::event::AccessKind::Any);
        assert_eq!(touched(&targets, &event(rename, "/opt/api/current")), [0]);
        assert_eq!(touched(&targets, &event(create, "/opt/web/current")), [1]);
        assert!(touched(&targets, &event(create, "/opt/api/.current.tmp")).is_empty());
        assert!(touched(&targets, &event(create, "/opt/other/current")).is_empty());
        assert!(touched(&targets, &event(read, "/opt/api/current")).is_empty());
    }
}
