//! Crash reports on disk: `<state_dir>/crashes/<id>.json` (the report) and `<id>.txt`
//! (the same for people), with core records of `holdfast core-handler` in
//! `crashes/cores/`.
//!
//! The daemon is the only writer of reports. Files are [`private_file`]s: 0600 (they
//! hold the services' output), never read or written through a symlink, and replaced whole (a
//! report is rewritten when its core dump arrives, while `crashes show` may read it). Retention is by count and by total size,
//! oldest first; the newest report is always kept.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::control::protocol::{CoreRecord, CrashReport, CrashSummary};
use crate::model::ServiceName;
use crate::private_file;

/// Reports kept, at most.
pub const KEEP_REPORTS: usize = 100;
/// Bytes of reports kept, at most (the newest is kept whatever its size).
pub const KEEP_BYTES: u64 = 32 * 1024 * 1024;
/// A core record belongs to the report of its pid only when their times are this close:
/// a pid reused later is another process.
const SAME_CRASH: Duration = Duration::from_secs(600);

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("crashes")
}

pub fn cores_dir(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("cores")
}

/// Makes `dir` (and its parents) mode 0700 if missing. `dir` and, for the cores'
/// directory, `crashes/` above it must be real directories, not symlinks: files are
/// written and pruned there, by root. (The state directory itself is the operator's to
/// place, a link or not.)
pub fn make_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let crashes = dir.parent().filter(|_| dir.ends_with("crashes/cores"));
    for path in [Some(dir), crashes].into_iter().flatten() {
        if fs::symlink_metadata(path)?.file_type().is_symlink() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a symlink: refused", path.display()),
            ));
        }
    }
    Ok(())
}

/// Reads `path`, refusing a symlink.
pub fn read_private(path: &Path) -> io::Result<String> {
    String::from_utf8(private_file::read(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `report` (text, then JSON) and prunes the oldest reports beyond the bounds.
/// The JSON goes last because it is what lists a report: whoever sees it finds the
/// text beside it.
pub fn write(state_dir: &Path, report: &CrashReport) -> io::Result<()> {
    let dir = dir(state_dir);
    make_dir(&dir)?;
    let text = super::render(report);
    private_file::replace(&dir.join(format!("{}.txt", report.id)), text.as_bytes())?;
    let json = serde_json::to_vec_pretty(report).expect("reports always serialize");
    private_file::replace(&dir.join(format!("{}.json", report.id)), &json)?;
    prune(&dir, KEEP_REPORTS, KEEP_BYTES)
}

/// Every readable report, newest first. A missing directory holds none; an unreadable
/// report is skipped with a warning.
pub fn reports(state_dir: &Path) -> io::Result<Vec<CrashReport>> {
    let mut reports: Vec<CrashReport> = json_files(&dir(state_dir))?
        .into_iter()
        .filter_map(|path| match parse::<CrashReport>(&path) {
            Ok(report) => Some(report),
            Err(e) => {
                tracing::warn!("skipping crash report {}: {e}", path.display());
                None
            }
        })
        .collect();
    // RFC 3339 UTC with fixed millis sorts as text.
    reports.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    Ok(reports)
}

/// The list of reports (of `service` only when given), newest first.
pub fn list(state_dir: &Path, service: Option<&ServiceName>) -> io::Result<Vec<CrashSummary>> {
    let cores = cores(state_dir);
    Ok(reports(state_dir)?
        .into_iter()
        .filter(|r| service.is_none_or(|s| &r.service == s))
        .map(|r| {
            let core = r.core.is_some() || core_of(&cores, &r).is_some();
            summary(&r, core)
        })
        .collect())
}

pub fn summary(report: &CrashReport, core: bool) -> CrashSummary {
    CrashSummary {
        id: report.id.clone(),
        service: report.service.clone(),
        time: report.time.clone(),
        pid: report.pid,
        summary: report.summary.clone(),
        core,
    }
}

/// The report whose id is `id`, or the only one it is a prefix of, with the core dump
/// of its pid joined (the handler may have stored it while the daemon was away).
pub fn show(state_dir: &Path, id: &str) -> Result<CrashReport, String> {
    let all = reports(state_dir).map_err(|e| format!("cannot read the crash reports: {e}"))?;
    let mut found: Vec<CrashReport> = match all.iter().position(|r| r.id == id) {
        Some(i) => vec![all[i].clone()],
        None => all.into_iter().filter(|r| r.id.starts_with(id)).collect(),
    };
    let mut report = match found.len() {
        0 => return Err(format!("no crash report {id:?} (see `holdfast crashes`)")),
        1 => found.remove(0),
        n => {
            return Err(format!(
                "{n} crash reports start with {id:?}: give more of the id"
            ));
        }
    };
    if report.core.is_none() {
        if let Some(core) = core_of(&cores(state_dir), &report) {
            join(&mut report, core);
        }
    }
    Ok(report)
}

/// Joins the core record `name` to the report of its pid and rewrites that report.
/// Returns the report, or `None` when no report of that pid exists (yet: the exit may
/// not be reaped; `show` joins it later).
pub fn attach_core(state_dir: &Path, name: &str) -> io::Result<Option<CrashReport>> {
    let core: CoreRecord = parse(&record_path(state_dir, name)?)?;
    let report = reports(state_dir)?
        .into_iter()
        .find(|r| r.pid == core.pid && close_in_time(r, &core));
    let Some(mut report) = report else {
        return Ok(None);
    };
    join(&mut report, core);
    write(state_dir, &report)?;
    Ok(Some(report))
}

/// The path of core record `name`: a plain file name in the cores directory, nothing
/// that could lead out of it.
pub fn record_path(state_dir: &Path, name: &str) -> io::Result<PathBuf> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".json")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plain {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a core record name"),
        ));
    }
    Ok(cores_dir(state_dir).join(name))
}

/// Every core record, newest first.
pub fn cores(state_dir: &Path) -> Vec<CoreRecord> {
    let mut cores: Vec<CoreRecord> = json_files(&cores_dir(state_dir))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|path| parse(&path).ok())
        .collect();
    cores.sort_by_key(|c: &CoreRecord| std::cmp::Reverse(c.time));
    cores
}

/// Joins the core record of `report`'s pid, if the handler stored one already (it may
/// finish before the daemon writes the report).
pub fn join_stored_core(state_dir: &Path, report: &mut CrashReport) {
    if let Some(core) = core_of(&cores(state_dir), report) {
        join(report, core);
    }
}

/// `core` becomes part of `report`; a death by signal with nothing in the output to
/// explain it is summed up with the function gdb found the crashing thread in.
fn join(report: &mut CrashReport, core: CoreRecord) {
    if report.kind == "signal"
        && !report.summary.contains(" in ")
        && let Some(function) = super::extract::crashing_function(&core.backtrace, core.tid)
    {
        report.summary = format!("{} in {function}", report.summary);
    }
    report.core = Some(core);
}

fn core_of(cores: &[CoreRecord], report: &CrashReport) -> Option<CoreRecord> {
    cores
        .iter()
        .find(|c| c.pid == report.pid && close_in_time(report, c))
        .cloned()
}

fn close_in_time(report: &CrashReport, core: &CoreRecord) -> bool {
    let Ok(at) = humantime::parse_rfc3339(&report.time) else {
        return false;
    };
    let dumped = SystemTime::UNIX_EPOCH + Duration::from_secs(core.time);
    let apart = at
        .duration_since(dumped)
        .or_else(|_| dumped.duration_since(at))
        .unwrap_or_default();
    apart <= SAME_CRASH
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    serde_json::from_str(&read_private(path)?).map_err(io::Error::other)
}

/// The `.json` files of `dir`, none if it is missing.
fn json_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect())
}

/// Removes the oldest files of `dir` (by modification time, grouped by stem: a report's
/// `.json` with its `.txt`, a core's record with its dump) until at most `count` stems
/// and `bytes` bytes remain; the newest stem always stays.
pub fn prune(dir: &Path, count: usize, bytes: u64) -> io::Result<()> {
    let mut stems: std::collections::BTreeMap<String, (SystemTime, u64, Vec<PathBuf>)> =
        std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir)?.filter_map(Result::ok) {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        // A write that died mid-way (a crash, a power cut) left its temp file.
        if private_file::is_dead_temp(&name, &meta, private_file::ABANDONED) {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        // Only reports' and cores' files: anything else in the directory is not ours.
        let Some(stem) = stem_of(&name) else { continue };
        let stem = stem.to_owned();
        let slot = stems
            .entry(stem)
            .or_insert((SystemTime::UNIX_EPOCH, 0, Vec::new()));
        slot.0 = slot
            .0
            .max(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        slot.1 += meta.len();
        slot.2.push(entry.path());
    }
    let mut stems: Vec<_> = stems.into_values().collect();
    stems.sort_by_key(|(modified, _, _)| std::cmp::Reverse(*modified));
    let mut total = 0u64;
    for (i, (_, size, paths)) in stems.into_iter().enumerate() {
        total += size;
        if i > 0 && (i >= count || total > bytes) {
            // The JSON first: once it is gone nobody lists the rest.
            let (json, rest): (Vec<_>, Vec<_>) = paths
                .into_iter()
                .partition(|p| p.extension().is_some_and(|x| x == "json"));
            for path in json.into_iter().chain(rest) {
                match fs::remove_file(&path) {
                    // Another writer (a second core handler) pruned it first.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
        }
    }
    Ok(())
}

/// A file's name without the suffix of its kind: what a report's or a core's files
/// share. `None` for a file that is neither's.
fn stem_of(name: &str) -> Option<&str> {
    [".core.gz", ".core.part", ".json", ".txt"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExitStatus;
    use crate::unix::Pid;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hf-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn report_at(pid: i32, millis: u64) -> CrashReport {
        let death = crate::crash::Death {
            service: ServiceName::new("api").expect("valid"),
            pid: Pid::from_raw(pid),
            status: ExitStatus::Exited(3),
            cause: "crash".to_owned(),
            restarts: 0,
            binary: None,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + millis);
        crate::crash::report(death, at, vec!["line".to_owned()])
    }

    #[test]
    fn a_symlink_planted_for_the_crash_or_core_directory_is_refused() {
        let state = temp("planted");
        let elsewhere = temp("elsewhere");
        fs::create_dir_all(&state).expect("state");
        fs::create_dir_all(elsewhere.join("cores")).expect("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, dir(&state)).expect("link");
        assert!(make_dir(&dir(&state)).is_err());
        assert!(make_dir(&cores_dir(&state)).is_err());
        let _ = fs::remove_dir_all(&state);
        let _ = fs::remove_dir_all(&elsewhere);
    }

    #[test]
    fn a_reader_that_finds_a_report_finds_its_text_beside_it_while_reports_come_and_go() {
        let state = temp("text-first");
        make_dir(&dir(&state)).expect("dir");
        let reader = {
            let dir = dir(&state);
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < 50 {
                    for json in json_files(&dir).expect("listed") {
                        // In this order: a pruned report loses its JSON first.
                        let text = json.with_extension("txt").exists();
                        assert!(text || !json.exists(), "{}", json.display());
                        seen += 1;
                    }
                }
            })
        };
        // Past the count, so that pruning runs beside the reader too.
        for i in 0..KEEP_REPORTS as u64 + 20 {
            write(&state, &report_at(100 + i as i32, i)).expect("written");
        }
        reader.join().expect("the text was always there");
        let _ = fs::remove_dir_all(&state);
    }

    #[test]
    fn the_oldest_reports_go_beyond_the_count_and_the_newest_always_stays() {
        let dir = temp("prune");
        make_dir(&dir).expect("dir");
        for i in 0..5 {
            let stem = format!("r{i}");
            private_file::replace(&dir.join(format!("{stem}.json")), &[b'x'; 100]).expect("json");
            private_file::replace(&dir.join(format!("{stem}.txt")), &[b'x'; 100]).expect("txt");
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i);
            for ext in ["json", "txt"] {
                let file = fs::File::options()
                    .write(true)
                    .open(dir.join(format!("{stem}.{ext}")))
                    .expect("open");
                file.set_modified(at).expect("mtime");
            }
        }
        let left = |dir: &Path| {
            let mut names: Vec<String> = fs::read_dir(dir)
                .expect("dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        prune(&dir, 3, u64::MAX).expect("by count");
        assert_eq!(
            left(&dir),
            [
                "r2.json", "r2.txt", "r3.json", "r3.txt", "r4.json", "r4.txt"
            ]
        );
        prune(&dir, 10, 300).expect("by size");
        assert_eq!(left(&dir), ["r4.json", "r4.txt"], "the newest stays");
        prune(&dir, 10, 1).expect("even over the size");
        assert_eq!(left(&dir).len(), 2);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_prune_removes_the_temp_of_a_write_that_died_long_ago_not_one_under_way() {
        let dir = temp("dead-temps");
        make_dir(&dir).expect("dir");
        for name in [".r1.json.7.0.tmp", ".r2.json.7.1.tmp"] {
            fs::write(dir.join(name), b"half").expect("temp");
        }
        let long_ago = SystemTime::now() - private_file::ABANDONED * 2;
        let dead = fs::File::options()
            .write(true)
            .open(dir.join(".r1.json.7.0.tmp"));
        dead.expect("open").set_modified(long_ago).expect("mtime");
        prune(&dir, 10, u64::MAX).expect("pruned");
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [".r2.json.7.1.tmp"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn show_joins_a_core_stored_while_the_daemon_was_away_and_a_planted_link_is_refused() {
        let state = temp("join");
        let report = report_at(77, 0);
        write(&state, &report).expect("written");
        let core = CoreRecord {
            record: "77-1700000001.json".to_owned(),
            pid: 77,
            tid: 77,
            time: 1_700_000_001,
            signal: 11,
            comm: "api".to_owned(),
            exe: None,
            path: None,
            size: 10,
            stored: 0,
            truncated: false,
            backtrace: vec!["#0 main ()".to_owned()],
            backtrace_error: None,
        };
        make_dir(&cores_dir(&state)).expect("cores");
        let json = serde_json::to_vec(&core).expect("json");
        private_file::replace(&cores_dir(&state).join(&core.record), &json).expect("record");
        let prefix = &report.id[..report.id.len() - 3];
        let shown = show(&state, prefix).expect("found by a unique prefix");
        assert_eq!(shown.core.as_ref().map(|c| c.pid), Some(77));
        assert!(list(&state, None).expect("list")[0].core);
        assert!(record_path(&state, "../x.json").is_err());

        // A later report of the same pid long after is another process: not joined.
        let later = report_at(77, 3_600_000);
        write(&state, &later).expect("written");
        assert_eq!(show(&state, &later.id).expect("found").core, None);

        let link = dir(&state).join("planted.json");
        std::os::unix::fs::symlink("/etc/hostname", &link).expect("plant");
        assert!(read_private(&link).is_err(), "not followed");
        let _ = fs::remove_dir_all(&state);
    }
}
