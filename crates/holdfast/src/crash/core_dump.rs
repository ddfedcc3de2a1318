//! `holdfast core-handler`: the kernel's `core_pattern` pipe handler.
//!
//! The kernel starts it (as root, outside any service, with the core on stdin) for every
//! process that dumps core. It:
//! 1. reads the executable's path from `/proc/<pid>/exe` first (the dumping process is
//!    still there while its core is read);
//! 2. copies the core to a private temporary file, at most the cap (and at most half
//!    the free space of the state directory's file system: it never fills the disk),
//!    then reads the rest away, counting it, so the report can say it was truncated;
//! 3. runs `gdb -batch -ex 'thread apply all bt'` on the binary and that file, killed
//!    after [`GDB_TIMEOUT`];
//! 4. stores the core gzip-compressed beside a JSON record (a [`CoreRecord`]) and
//!    removes the uncompressed copy; old cores are pruned by count and size;
//!
//! Then the command (`cli::crashes::core_handler`) tells the daemon of `state_dir`
//! (found in its lock file) with a `core_dumped` request, so the crash report of that
//! pid gains the backtrace. When the daemon is not reachable, `crashes show` joins the
//! record by pid later.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::store;
use crate::control::protocol::CoreRecord;

/// The default cap on the bytes of one core kept (before compression).
pub const DEFAULT_MAX_SIZE: u64 = 1024 * 1024 * 1024;
/// Cores kept, at most, and their compressed bytes (the newest is always kept).
const KEEP_CORES: usize = 5;
const KEEP_CORE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// gdb gets this long for a backtrace: a handler stuck on it would hold the core.
const GDB_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of backtrace kept in the record.
const MAX_BACKTRACE: usize = 2000;

/// What the kernel passes (`%P %i %s %t %e`) and the installed settings.
#[derive(Debug, Clone)]
pub struct Dump {
    pub state_dir: PathBuf,
    pub max_size: u64,
    pub pid: i32,
    pub tid: i32,
    pub signal: i32,
    pub time: u64,
    pub comm: String,
}

/// Handles one dump from `core` (the kernel's pipe). Returns the record stored, or
/// `None` when the process did not opt in to core dumps.
pub fn handle(dump: &Dump, core: &mut impl Read) -> io::Result<Option<CoreRecord>> {
    // Before the core is read: the process (and its /proc entry) goes away after.
    let exe = fs::read_link(format!("/proc/{}/exe", dump.pid)).ok();
    // The kernel ignores RLIMIT_CORE for a pipe: the handler honours it, so only
    // services with `limits.core` (and processes that asked) leave cores.
    let limit = core_limit(dump.pid);
    if limit == Some(0) {
        io::copy(core, &mut io::sink())?;
        return Ok(None);
    }
    let dir = store::cores_dir(&dump.state_dir);
    store::make_dir(&dir)?;
    let stem = format!("{}-{}", dump.pid, dump.time);
    let part = dir.join(format!("{stem}.core.part"));
    let cap = dump
        .max_size
        .min(free_quarter(&dir))
        .min(limit.unwrap_or(u64::MAX));
    let (size, kept) = copy_capped(core, &part, cap)?;
    let (backtrace, backtrace_error) = match &exe {
        Some(exe) => backtrace(exe, &part),
        None => (
            Vec::new(),
            Some("the executable's path was not readable".to_owned()),
        ),
    };
    let gz = dir.join(format!("{stem}.core.gz"));
    let stored = compress(&part, &gz);
    let _ = fs::remove_file(&part);
    if stored.is_err() {
        // A partial copy is no core: it would only take space.
        let _ = fs::remove_file(&gz);
    }
    let record = CoreRecord {
        record: format!("{stem}.json"),
        pid: dump.pid,
        tid: dump.tid,
        time: dump.time,
        signal: dump.signal,
        comm: dump.comm.clone(),
        exe: exe.map(|e| e.display().to_string()),
        path: stored.as_ref().ok().map(|_| gz.display().to_string()),
        size,
        stored: stored.as_ref().map_or(0, |n| *n),
        truncated: size > kept,
        backtrace,
        backtrace_error,
    };
    if let Err(e) = &stored {
        eprintln!("holdfast core-handler: cannot store {}: {e}", gz.display());
    }
    let json = serde_json::to_vec_pretty(&record).expect("records always serialize");
    crate::private_file::replace(&dir.join(&record.record), &json)?;
    store::prune(&dir, KEEP_CORES, KEEP_CORE_BYTES)?;
    Ok(Some(record))
}

/// The soft `RLIMIT_CORE` of `pid` (`None`: unlimited, or not readable).
fn core_limit(pid: i32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))?;
    let soft = line
        .trim_start_matches("Max core file size")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// A quarter of the space free for an unprivileged user on `dir`'s file system
/// (everything if it cannot be told): the raw core and its compressed copy exist side
/// by side for a moment (gdb reads the raw one), so one core takes at most half the
/// free space, and a second handler at the same time still finds room.
fn free_quarter(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map_or(u64::MAX, |s| {
        s.blocks_available().saturating_mul(s.fragment_size()) / 4
    })
}

/// Copies at most `cap` bytes of `core` to a new private file at `path`, then reads
/// the rest away. Returns (bytes read in all, bytes kept).
fn copy_capped(core: &mut impl Read, path: &Path, cap: u64) -> io::Result<(u64, u64)> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut out = BufWriter::new(file);
    let kept = io::copy(&mut core.by_ref().take(cap), &mut out)?;
    out.flush()?;
    let rest = io::copy(core, &mut io::sink())?;
    Ok((kept + rest, kept))
}

/// gdb's `thread apply all bt` for `exe` and its core, or why there is none.
fn backtrace(exe: &Path, core: &Path) -> (Vec<String>, Option<String>) {
    let output = Command::new("timeout")
        .arg("--signal=KILL")
        .arg(GDB_TIMEOUT.as_secs().to_string())
        .args(["gdb", "-batch", "-nx", "-ex", "set pagination off"])
        .args(["-ex", "thread apply all bt"])
        .arg(exe)
        .arg(core)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => return (Vec::new(), Some(format!("cannot run gdb: {e}"))),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(MAX_BACKTRACE)
        .map(str::to_owned)
        .collect();
    match output.status.code() {
        Some(0) if !lines.is_empty() => (lines, None),
        Some(127) => (Vec::new(), Some("gdb is not installed".to_owned())),
        Some(124 | 137) | None => (lines, Some(format!("gdb timed out after {GDB_TIMEOUT:?}"))),
        Some(code) => {
            let error = String::from_utf8_lossy(&output.stderr);
            let last = error.lines().last().unwrap_or("no output");
            (lines, Some(format!("gdb exited {code}: {last}")))
        }
    }
}

/// Writes `from` gzip-compressed to `to`. Returns the compressed size.
fn compress(from: &Path, to: &Path) -> io::Result<u64> {
    let mut input = File::open(from)?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    let mut gz = GzEncoder::new(BufWriter::new(file), Compression::fast());
    io::copy(&mut input, &mut gz)?;
    let mut out = gz.finish()?;
    out.flush()?;
    out.get_ref().sync_data()?;
    Ok(out.get_ref().metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_over_the_cap_is_truncated_and_stored_compressed_without_its_temporary_copy() {
        let dir = std::env::temp_dir().join(format!("hf-core-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let dump = Dump {
            state_dir: dir.clone(),
            max_size: 4096,
            // No such process: no executable, so no backtrace.
            pid: i32::MAX,
            tid: i32::MAX,
            signal: 11,
            time: 1_700_000_000,
            comm: "demo-app".to_owned(),
        };
        let mut core = io::repeat(7).take(1 << 20);
        let record = handle(&dump, &mut core).expect("handled").expect("stored");
        assert_eq!(record.size, 1 << 20);
        assert!(record.truncated);
        assert!(record.backtrace_error.is_some());
        let gz = PathBuf::from(record.path.expect("stored"));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(File::open(&gz).expect("open"))
            .read_to_end(&mut plain)
            .expect("gunzip");
        assert_eq!(plain.len(), 4096, "only the cap is kept");
        let names: Vec<String> = fs::read_dir(store::cores_dir(&dir))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".part")), "{names:?}");
        let _ = fs::remove_dir_all(&dir);
    }
}
