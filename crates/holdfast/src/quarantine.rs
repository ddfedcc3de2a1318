//! The quarantine queue: `<state_dir>/quarantine.jsonl`, an append-only JSON-lines file.
//!
//! Each line is an [`Entry`]: a `quarantined` record (an exit mapped to
//! `action = "quarantine"`, with the last lines of the service's log) or a `released`
//! mark. A record is pending until a later `released` line names its service. Appending
//! (never rewriting) keeps the history for review and makes each write one `write` +
//! `fsync`, so a crash of holdfast cannot lose or corrupt an earlier record.
//!
//! The file holds the last lines of services' logs, so it is made mode 0600; it is
//! opened with `O_NOFOLLOW`, so a symlink planted at its path is refused (ELOOP), never
//! followed to append to (or read) another file as root.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::control::protocol::QuarantineRecord;
use crate::model::ServiceName;

pub const FILE_NAME: &str = "quarantine.jsonl";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// One line of the queue file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    Quarantined {
        /// RFC 3339, UTC.
        time: String,
        service: ServiceName,
        code: Option<i32>,
        signal: Option<String>,
        /// The cause as shown to people (`exited 201 after 312ms (before it was running)`).
        reason: String,
        /// The last lines of the service's log, oldest first.
        log: Vec<String>,
    },
    Released {
        time: String,
        service: ServiceName,
    },
}

/// The current time as written in entries.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Appends `entry` as one line and syncs it to disk before returning.
pub fn append(path: &Path, entry: &Entry) -> io::Result<()> {
    let mut line = serde_json::to_string(entry).expect("quarantine entries always serialize");
    line.push('\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // std adds O_CLOEXEC itself.
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// Every record in the file, oldest first, each marked released or not. A missing file
/// is an empty queue; unreadable lines are skipped (with a warning), so one damaged line
/// does not hide the others.
pub fn records(path: &Path) -> io::Result<Vec<QuarantineRecord>> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut records: Vec<QuarantineRecord> = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(&line) {
            Ok(Entry::Quarantined {
                time,
                service,
                code,
                signal,
                reason,
                log,
            }) => records.push(QuarantineRecord {
                time,
                service,
                code,
                signal,
                reason,
                log,
                released: None,
            }),
            Ok(Entry::Released { time, service }) => {
                for record in records.iter_mut().filter(|r| r.service == service) {
                    record.released.get_or_insert_with(|| time.clone());
                }
            }
            Err(e) => tracing::warn!(
                "{}:{}: skipping unreadable line: {e}",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(records)
}

/// Whether `service` has a record not yet released.
pub fn is_pending(path: &Path, service: &ServiceName) -> io::Result<bool> {
    Ok(records(path)?
        .iter()
        .any(|r| &r.service == service && r.released.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).expect("valid")
    }

    fn quarantined(service: &str, code: i32) -> Entry {
        Entry::Quarantined {
            time: now(),
            service: name(service),
            code: Some(code),
            signal: None,
            reason: format!("exited {code}"),
            log: vec!["crashing".to_owned()],
        }
    }

    #[test]
    fn the_queue_is_private_and_a_symlink_at_its_path_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hf-quarantine-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = path(&dir);
        let _ = std::fs::remove_file(&path);
        append(&path, &quarantined("api", 201)).expect("append");
        let mode = std::fs::metadata(&path).expect("made").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        std::fs::remove_file(&path).expect("remove");
        let target = dir.join("precious");
        std::fs::write(&target, "precious\n").expect("write");
        std::os::unix::fs::symlink(&target, &path).expect("plant the link");
        let refused = append(&path, &quarantined("api", 201)).expect_err("not followed");
        assert_eq!(refused.raw_os_error(), Some(nix::libc::ELOOP));
        assert!(records(&path).is_err(), "not read through the link either");
        assert_eq!(
            std::fs::read_to_string(&target).expect("read"),
            "precious\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_is_pending_until_its_service_is_released() {
        let dir = std::env::temp_dir().join(format!("hf-quarantine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = path(&dir);
        let _ = std::fs::remove_file(&path);
        assert!(
            records(&path)
                .expect("missing file reads as empty")
                .is_empty()
        );

        append(&path, &quarantined("api", 201)).expect("append");
        append(&path, &quarantined("worker", 3)).expect("append");
        assert!(is_pending(&path, &name("api")).expect("read"));

        append(
            &path,
            &Entry::Released {
                time: now(),
                service: name("api"),
            },
        )
        .expect("append");
        let all = records(&path).expect("read");
        assert_eq!(all.len(), 2, "releasing keeps the record");
        assert!(all[0].released.is_some() && all[1].released.is_none());
        assert!(!is_pending(&path, &name("api")).expect("read"));

        // A later quarantine of the same service is pending again.
        append(&path, &quarantined("api", 201)).expect("append");
        assert!(is_pending(&path, &name("api")).expect("read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
