//! [`Capture`]: the pipes a service writes to, and the task that drains them into the
//! service's log file.
//!
//! Invariants:
//! - our copies of the write ends stay `O_CLOEXEC`, so only the process they are handed
//!   to (dup2'ed to fd 1 and 2) inherits them;
//! - the reader task owns the read ends and ends only at EOF on both, that is once the
//!   `Capture` is dropped and every process holding a write end has closed it;
//! - the task never waits for the disk to recover (see `file`): reads continue, failed
//!   writes are dropped and counted.

use std::fs::DirBuilder;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::net::unix::pipe::Receiver;

use super::file::{LogFile, reason};
use super::line::LineSplitter;
use super::record::{self, Stamp, Stream};
use super::ring::Ring;
use crate::model::{LogSpec, ServiceName};

/// Lines kept in memory for [`Capture::recent`].
const RECENT_LINES: usize = 256;
/// Bytes kept in memory for [`Capture::recent`].
const RECENT_BYTES: usize = 256 * 1024;
/// Pipe capacity asked for (best effort): absorbs bursts while the reader writes.
const PIPE_SIZE: i32 = 256 * 1024;
/// Bytes read from a pipe at a time.
const READ_SIZE: usize = 64 * 1024;

/// Capture of one service's stdout and stderr, kept across restarts of the service.
///
/// Dropping it closes holdfast's write ends; the reader task keeps draining until EOF
/// (grandchildren may still hold the pipes), writes a last partial line, and ends.
#[derive(Debug)]
pub struct Capture {
    shared: Arc<Mutex<Shared>>,
    path: PathBuf,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// What the reader task and the supervisor's `note`s both write to.
#[derive(Debug)]
struct Shared {
    file: LogFile,
    recent: Ring,
}

impl Shared {
    fn append(&mut self, stamp: &Stamp, stream: Stream, text: &[u8]) {
        let line = record::format(stamp, stream, text);
        self.file.push(&line);
        self.recent.push(line);
    }
}

impl Capture {
    /// Creates `log_dir` (0750) if needed, opens `<log_dir>/<service>.log` for appending
    /// (0640, refusing a symlink), creates the stdout and stderr pipes and spawns the
    /// task that drains them.
    ///
    /// # Panics
    /// If called outside a tokio runtime with IO enabled.
    pub fn open(log_dir: &Path, service: &ServiceName, spec: LogSpec) -> io::Result<Capture> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(log_dir)
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!(
                        "failed to create log directory \"{}\": {}",
                        log_dir.display(),
                        reason(&err)
                    ),
                )
            })?;
        let path = log_dir.join(format!("{service}.log"));
        let file = LogFile::open(path.clone(), spec)?;
        let (stdout_read, stdout) = pipe()?;
        let (stderr_read, stderr) = pipe()?;
        let stdout_read = Receiver::from_owned_fd(stdout_read)?;
        let stderr_read = Receiver::from_owned_fd(stderr_read)?;

        let shared = Arc::new(Mutex::new(Shared {
            file,
            recent: Ring::new(RECENT_LINES, RECENT_BYTES),
        }));
        let task_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            tokio::join!(
                drain(stdout_read, Stream::Stdout, &task_shared),
                drain(stderr_read, Stream::Stderr, &task_shared),
            );
            lock(&task_shared).file.flush();
        });

        Ok(Capture {
            shared,
            path,
            stdout,
            stderr,
        })
    }

    /// Write end of the stdout pipe, to be dup2'ed to fd 1 of the child. Our copy stays
    /// `O_CLOEXEC`.
    pub fn stdout(&self) -> BorrowedFd<'_> {
        self.stdout.as_fd()
    }

    /// Write end of the stderr pipe, to be dup2'ed to fd 2 of the child.
    pub fn stderr(&self) -> BorrowedFd<'_> {
        self.stderr.as_fd()
    }

    /// The current log file, `<log_dir>/<service>.log`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies new rotation settings (after a reload); they take effect at the next write.
    pub fn set_spec(&self, spec: LogSpec) {
        lock(&self.shared).file.set_spec(spec);
    }

    /// Writes holdfast's own line into the service log (tag `holdfast`), e.g.
    /// `started pid 42` or `exited 3, restarting in 2s`. Each line of a multi-line note
    /// becomes its own record.
    pub fn note(&self, line: &str) {
        let stamp = Stamp::now();
        let mut shared = lock(&self.shared);
        for part in line.lines() {
            shared.append(&stamp, Stream::Holdfast, part.as_bytes());
        }
        shared.file.flush();
    }

    /// The last `n` lines (at most 256), formatted as in the file, oldest first. Lines are
    /// kept even when the disk refused them, so crash reports see them.
    pub fn recent(&self, n: usize) -> Vec<String> {
        lock(&self.shared).recent.last(n)
    }
}

/// A log that panicked mid-write is still the best log we have: ignore poisoning.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pipe as (read end, write end), both `O_CLOEXEC`; the write end stays blocking
/// because the child expects an ordinary blocking stdout.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| {
        io::Error::other(format!("failed to create log pipe: {}", errno.desc()))
    })?;
    // Best effort: a larger buffer only smooths bursts, the default works too.
    let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((read, write))
}

/// Reads one pipe until EOF, appending its lines to the log.
async fn drain(pipe: Receiver, stream: Stream, shared: &Mutex<Shared>) {
    let mut buf = vec![0; READ_SIZE];
    let mut lines = LineSplitter::default();
    loop {
        match pipe.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let stamp = Stamp::now();
                let mut shared = lock(shared);
                lines.push(&buf[..n], |line| shared.append(&stamp, stream, line));
                shared.file.flush();
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if let Err(err) = pipe.readable().await {
                    tracing::error!(?stream, "failed to wait on log pipe: {err}");
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::error!(?stream, "failed to read log pipe: {err}");
                break;
            }
        }
    }
    let stamp = Stamp::now();
    let mut shared = lock(shared);
    lines.finish(|line| shared.append(&stamp, stream, line));
    shared.file.flush();
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use super::*;
    use crate::logs::file::rotated_path;
    use crate::logs::testutil::{TempDir, read_or_empty, wait_until};

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn spec(max_size: u64, keep: u32) -> LogSpec {
        LogSpec { max_size, keep }
    }

    /// Runs `script` with stdout/stderr on the capture's pipes. The `Command` (and with it
    /// our dups of the write ends) is dropped before returning, so only the child holds
    /// them.
    fn spawn_sh(capture: &Capture, script: &str) -> Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(capture.stdout().try_clone_to_owned().unwrap())
            .stderr(capture.stderr().try_clone_to_owned().unwrap())
            .spawn()
            .expect("/bin/sh can be spawned")
    }

    /// Waits for the child off the runtime thread, so the reader task keeps draining.
    async fn wait_child(mut child: Child, secs: u64) -> std::process::ExitStatus {
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(Duration::from_secs(secs), waiting)
            .await
            .unwrap_or_else(|_| panic!("child still running after {secs}s: it was blocked"))
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn output_of_a_real_child_is_captured_with_timestamps_and_stream_tags() {
        let dir = TempDir::new("capture-child");
        let log_dir = dir.path().join("logs");
        let capture = Capture::open(&log_dir, &name("web"), spec(1 << 20, 2)).unwrap();
        assert_eq!(capture.path(), log_dir.join("web.log"));
        let mode = std::fs::metadata(&log_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "log dir is at most 0750, got {mode:o}");

        capture.note("started pid 42");
        let child = spawn_sh(
            &capture,
            "echo hello; echo oops >&2; printf 'bad \\377 byte\\n'; printf partial",
        );
        assert!(wait_child(child, 60).await.success());
        let path = capture.path().to_owned();
        wait_until("both streams are in the file", 30, || {
            let log = read_or_empty(&path);
            log.contains("hello") && log.contains("oops") && log.contains("byte")
        })
        .await;
        assert!(
            !read_or_empty(&path).contains("partial"),
            "held until newline or EOF"
        );

        drop(capture);
        wait_until("the partial line is written at EOF", 30, || {
            read_or_empty(&path).contains("partial")
        })
        .await;
        let log = read_or_empty(&path);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 5, "{log}");
        for line in &lines {
            let (stamp, rest) = line.split_at(24);
            humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp:?}: {e}"));
            assert!(stamp.ends_with('Z'), "UTC: {line}");
            assert_eq!(&rest[..1], " ");
        }
        assert!(
            lines[0].ends_with(" holdfast started pid 42"),
            "{}",
            lines[0]
        );
        assert!(
            lines.iter().any(|l| l.ends_with(" stdout   hello")),
            "{log}"
        );
        assert!(lines.iter().any(|l| l.ends_with(" stderr   oops")), "{log}");
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(" stdout   bad \u{fffd} byte")),
            "{log}"
        );
        assert!(lines[4].ends_with(" stdout   partial"), "{log}");
    }

    #[tokio::test]
    async fn recent_returns_the_last_lines_including_notes() {
        let dir = TempDir::new("capture-recent");
        let capture = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap();
        let child = spawn_sh(&capture, "for i in $(seq 1 300); do echo line $i; done");
        assert!(wait_child(child, 60).await.success());
        wait_until("the last line is read", 30, || {
            capture
                .recent(1)
                .first()
                .is_some_and(|l| l.ends_with("line 300"))
        })
        .await;
        capture.note("exited 0\nnot restarting");
        let recent = capture.recent(3);
        assert!(recent[0].ends_with("stdout   line 300"), "{recent:?}");
        assert!(recent[1].ends_with("holdfast exited 0"), "{recent:?}");
        assert!(recent[2].ends_with("holdfast not restarting"), "{recent:?}");
        assert_eq!(
            capture.recent(1000).len(),
            RECENT_LINES,
            "the ring is bounded"
        );
    }

    #[tokio::test]
    async fn a_child_writing_50_mb_as_fast_as_it_can_completes() {
        let dir = TempDir::new("capture-50mb");
        let max = 4 << 20;
        let capture = Capture::open(dir.path(), &name("noisy"), spec(max, 2)).unwrap();
        let child = spawn_sh(
            &capture,
            "line=$(head -c 999 /dev/zero | tr '\\0' x); \
             yes \"$line\" | head -c 50000000; \
             yes \"$line\" | head -c 1000000 >&2; echo END",
        );
        assert!(
            wait_child(child, 300).await.success(),
            "the child exits by itself"
        );
        wait_until("all output is read", 120, || {
            capture
                .recent(1)
                .first()
                .is_some_and(|l| l.ends_with("stdout   END"))
        })
        .await;
        let path = capture.path().to_owned();
        for k in 0..=2 {
            let file = if k == 0 {
                path.clone()
            } else {
                rotated_path(&path, k)
            };
            let size = std::fs::metadata(&file).unwrap().len();
            assert!(
                size <= max,
                "{} is {size} bytes, over {max}",
                file.display()
            );
        }
        assert!(!rotated_path(&path, 3).exists(), "keep = 2");
        assert!(read_or_empty(&path).ends_with(" stdout   END\n"));
    }

    #[tokio::test]
    async fn a_symlinked_log_file_is_refused() {
        let dir = TempDir::new("capture-symlink");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("web.log")).unwrap();
        let err = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[tokio::test]
    async fn a_reload_can_change_rotation_settings() {
        let dir = TempDir::new("capture-set-spec");
        let capture = Capture::open(dir.path(), &name("web"), spec(1 << 20, 2)).unwrap();
        for i in 0..10 {
            capture.note(&format!("note {i}"));
        }
        assert!(!rotated_path(capture.path(), 1).exists());
        capture.set_spec(spec(100, 1));
        capture.note("after reload");
        assert!(
            rotated_path(capture.path(), 1).exists(),
            "rotated at the next write"
        );
        assert!(read_or_empty(capture.path()).ends_with("holdfast after reload\n"));
    }

    /// A tmpfs mounted for the test, unmounted on drop.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path, size: &str) -> Result<Self, String> {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            }
            Ok(Self(dir.to_owned()))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            // Lazy: the reader task may still hold the log file open.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    #[tokio::test]
    async fn a_full_disk_drops_output_without_blocking_the_child_and_says_so_later() {
        let dir = TempDir::new("capture-disk-full");
        let mnt = dir.path().join("tmpfs");
        let tmpfs = match Tmpfs::mount(&mnt, "64k") {
            Ok(tmpfs) => tmpfs,
            Err(reason) => {
                eprintln!("skipped: cannot mount a tmpfs: {reason}");
                return;
            }
        };
        let ballast = mnt.join("ballast");
        std::fs::write(&ballast, vec![0u8; 40 * 1024]).unwrap();
        let capture = Capture::open(&mnt.join("logs"), &name("web"), spec(10 << 20, 1)).unwrap();
        let child = spawn_sh(
            &capture,
            "yes 'a line that will not fit on this tiny disk' | head -n 20000; echo END",
        );
        assert!(
            wait_child(child, 120).await.success(),
            "the child is never blocked"
        );
        wait_until("all output is read", 60, || {
            capture
                .recent(1)
                .first()
                .is_some_and(|l| l.ends_with("stdout   END"))
        })
        .await;
        let before = read_or_empty(capture.path());
        assert!(!before.contains("dropped"), "nothing can be written yet");

        std::fs::remove_file(&ballast).unwrap();
        capture.note("disk has space again");
        let log = read_or_empty(capture.path());
        let dropped: Vec<&str> = log.lines().filter(|l| l.contains("dropped")).collect();
        assert_eq!(
            dropped.len(),
            1,
            "one line about dropped output: {dropped:?}"
        );
        let words: Vec<&str> = dropped[0].split_whitespace().collect();
        assert_eq!(words[1..3], ["holdfast", "dropped"], "{}", dropped[0]);
        let bytes: u64 = words[3].parse().unwrap();
        assert!(
            bytes > 500_000,
            "most of the 20000 lines were dropped: {}",
            dropped[0]
        );
        assert!(
            dropped[0].ends_with("bytes of output (no space left on device)"),
            "{}",
            dropped[0]
        );
        assert!(
            log.ends_with("holdfast disk has space again\n"),
            "the note follows it"
        );
        for line in log.lines() {
            humantime::parse_rfc3339(&line[..24])
                .unwrap_or_else(|e| panic!("every line starts with a timestamp ({e}): {line:?}"));
        }
        drop(capture);
        drop(tmpfs);
    }
}
