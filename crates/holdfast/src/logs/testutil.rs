//! Test helpers: temporary directories removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("holdfast-logs-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir can be created");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `cond` holds, polling every 15 ms, failing the test after `secs` seconds.
/// The condition is asynchronous: asking a capture for its recent lines is.
pub(crate) async fn wait_until<F>(what: &str, secs: u64, mut cond: impl FnMut() -> F)
where
    F: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    }
}

/// Reads a file that may not exist yet as a string (empty if missing).
pub(crate) fn read_or_empty(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
