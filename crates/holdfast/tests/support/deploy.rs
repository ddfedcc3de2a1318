//! A deploy tree laid out as operators lay it out: `builds/ID/server` and a `current`
//! symlink flipped by an atomic rename (what `ln -sfn B current.tmp && mv -T current.tmp
//! current` does). Removed on drop, kept when the test fails.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Deploy {
    root: PathBuf,
}

impl Deploy {
    /// An empty tree in a directory of its own.
    pub fn new() -> Deploy {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "holdfast-deploy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("builds")).expect("the builds directory is created");
        Deploy { root }
    }

    /// The `current` link.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    /// Build `id`'s directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join("builds").join(id)
    }

    /// Writes build `id`'s `server` with `text` and `mode`; returns its path.
    pub fn build(&self, id: &str, text: &str, mode: u32) -> PathBuf {
        let dir = self.dir(id);
        fs::create_dir_all(&dir).expect("the build directory is created");
        let server = dir.join("server");
        fs::write(&server, text).expect("the server is written");
        fs::set_permissions(&server, fs::Permissions::from_mode(mode))
            .expect("the server's mode is set");
        server
    }

    /// Points `current` at `target` (the link's text: relative to the tree, or absolute)
    /// in one atomic rename.
    pub fn flip(&self, target: impl AsRef<Path>) {
        let temp = self.root.join("current.tmp");
        let _ = fs::remove_file(&temp);
        symlink(target, &temp).expect("the new link is created");
        fs::rename(&temp, self.current()).expect("the link is renamed over current");
    }

    /// Waits until the text of the `current` link is `target`: holdfast points it back
    /// after a rollback beside its `rolled_back` event, not before it.
    pub fn wait_points_at(&self, daemon: &super::Daemon, target: impl AsRef<Path>) {
        let target = target.as_ref();
        daemon.wait_until(&format!("current points at {}", target.display()), |_| {
            fs::read_link(self.current()).is_ok_and(|text| text == target)
        });
    }
}

impl Drop for Deploy {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
