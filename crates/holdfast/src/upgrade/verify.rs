//! The checks a new build passes before anything changes: it exists, is a regular file
//! the service's user may execute, and matches the `<build>.sha256` file beside it. (The
//! optional `verify` command runs as a process of the service; the runtime spawns it.)
//!
//! Blocking file reads: callers run these off the supervisor task.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::{Checksum, Credentials};

/// Who runs the build: the service's user and groups (or holdfast's own, for a service
/// without `user`), which decide which execute bit counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Runner {
    /// The identity a service's processes get: `credentials` when it has some, else
    /// holdfast's own (the service runs as whoever holdfast runs as).
    pub fn of(credentials: Option<&Credentials>) -> Self {
        let own_uid = nix::unistd::geteuid().as_raw();
        match credentials {
            Some(c) => Runner {
                uid: c.user.as_ref().map_or(own_uid, |u| u.uid),
                gid: c.gid,
                groups: c.groups.clone(),
            },
            None => Runner {
                uid: own_uid,
                gid: nix::unistd::getegid().as_raw(),
                groups: nix::unistd::getgroups()
                    .map(|gs| gs.into_iter().map(nix::unistd::Gid::as_raw).collect())
                    .unwrap_or_default(),
            },
        }
    }

    /// Whether a file of this owner, group and mode is executable by this runner, as
    /// the kernel decides it: root needs any execute bit, anyone else the bit of the
    /// first class (owner, group, other) that they belong to.
    pub fn may_execute(&self, uid: u32, gid: u32, mode: u32) -> bool {
        if self.uid == 0 {
            return mode & 0o111 != 0;
        }
        let bit = if self.uid == uid {
            0o100
        } else if self.gid == gid || self.groups.contains(&gid) {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    }
}

/// Why a build is refused: the file it concerns, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub build: PathBuf,
    pub reason: String,
}

/// The build a program path names now: every symlink resolved. A link to a missing file
/// is refused, naming the file it points to.
pub fn resolve(program: &Path) -> Result<PathBuf, Refusal> {
    std::fs::canonicalize(program).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => match dangling(program) {
            Some(target) => Refusal {
                build: target,
                reason: "the link points to a missing file".to_owned(),
            },
            None => Refusal {
                build: program.to_owned(),
                reason: "the file does not exist".to_owned(),
            },
        },
        _ => Refusal {
            build: program.to_owned(),
            reason: format!("cannot resolve it: {e}"),
        },
    })
}

/// Where `path` leads when a symlink on the way points to something missing: its
/// symlinks followed one component at a time up to the first missing one, the rest of
/// the path appended (`current/server` with `current -> builds/gone`:
/// `builds/gone/server`). `None` when no symlink led to the missing part.
fn dangling(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut queue: std::collections::VecDeque<PathBuf> = path
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    // `at` never holds a symlink, so `..` is its parent.
    let mut at = PathBuf::new();
    let mut followed = 0;
    while let Some(part) = queue.pop_front() {
        match part.components().next() {
            Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                at.pop();
                continue;
            }
            _ => {}
        }
        let next = at.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                followed += 1;
                // The kernel's own limit on links followed in one lookup (ELOOP past it).
                if followed > 40 {
                    return None;
                }
                let text = std::fs::read_link(&next).ok()?;
                for c in text.components().rev() {
                    queue.push_front(PathBuf::from(c.as_os_str()));
                }
            }
            Ok(_) => at = next,
            Err(_) if followed > 0 => {
                let mut missing = next;
                missing.extend(queue);
                return Some(missing);
            }
            Err(_) => return None,
        }
    }
    None
}

/// The file checks of `build` (already resolved): a regular file `runner` may execute,
/// and its checksum file, if any (or required). `Err` says why it is refused.
pub fn check_file(build: &Path, checksum: Checksum, runner: &Runner) -> Result<(), String> {
    let meta = std::fs::metadata(build).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "the file does not exist".to_owned(),
        _ => format!("cannot read it: {e}"),
    })?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    // Root would roll out whatever another user wrote there (as `config::load` refuses
    // such a program too).
    if meta.mode() & 0o002 != 0 && nix::unistd::geteuid().is_root() {
        return Err(format!(
            "writable by other users (mode {:04o}): chmod o-w {}",
            meta.mode() & 0o7777,
            build.display()
        ));
    }
    if !runner.may_execute(meta.uid(), meta.gid(), meta.mode()) {
        return Err(format!(
            "not executable by uid {} (mode {:04o}, owner {}:{})",
            runner.uid,
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    check_sum(build, checksum)
}

/// `<build>.sha256`: the file whose digest a build must match.
pub fn sum_path(build: &Path) -> PathBuf {
    let mut name = build.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

fn check_sum(build: &Path, checksum: Checksum) -> Result<(), String> {
    let path = sum_path(build);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match checksum {
                Checksum::IfPresent => Ok(()),
                Checksum::Required => Err(format!(
                    "no checksum file {} (checksum = \"required\")",
                    path.display()
                )),
            };
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let expected = parse_sum(&text).map_err(|why| format!("{}: {why}", path.display()))?;
    let actual = digest(build).map_err(|e| format!("cannot read the build: {e}"))?;
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "checksum mismatch: {} says {expected}, the file's sha256 is {actual}",
            path.display()
        ))
    }
}

/// The digest a `.sha256` file states, in lowercase hex: its first word, 64 hex digits,
/// optionally followed by whitespace and a file name (what `sha256sum` prints).
pub fn parse_sum(text: &str) -> Result<String, String> {
    let Some(word) = text.split_whitespace().next() else {
        return Err("empty checksum file".to_owned());
    };
    if word.len() != 64 || !word.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected a sha256 digest (64 hex digits) at its start, found {:?}",
            truncate(word)
        ));
    }
    Ok(word.to_ascii_lowercase())
}

fn truncate(word: &str) -> String {
    word.chars().take(72).collect()
}

/// The sha256 of a file's contents, in lowercase hex.
pub fn digest(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The `verify` command for `build`: `{bin}` replaced by its path in every argument.
pub fn command(template: &[String], build: &Path) -> Vec<String> {
    let bin = build.display().to_string();
    template
        .iter()
        .map(|arg| arg.replace("{bin}", &bin))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_sum_file_is_a_digest_optionally_followed_by_a_file_name() {
        assert_eq!(parse_sum(EMPTY), Ok(EMPTY.to_owned()));
        assert_eq!(parse_sum(&format!("{EMPTY}\n")), Ok(EMPTY.to_owned()));
        assert_eq!(
            parse_sum(&format!("{}  server\n", EMPTY.to_ascii_uppercase())),
            Ok(EMPTY.to_owned())
        );
        assert_eq!(parse_sum(&format!("{EMPTY} *server")), Ok(EMPTY.to_owned()));
    }

    #[test]
    fn a_sum_file_without_a_digest_says_what_it_found() {
        assert_eq!(parse_sum("  \n"), Err("empty checksum file".to_owned()));
        let short = parse_sum("abc123  server").expect_err("too short");
        assert!(
            short.contains("64 hex digits") && short.contains("abc123"),
            "{short}"
        );
        let not_hex = format!("{}g", &EMPTY[..63]);
        assert!(parse_sum(&not_hex).is_err());
    }

    #[test]
    fn the_execute_bit_is_the_one_of_the_runners_class() {
        let user = Runner {
            uid: 1000,
            gid: 100,
            groups: vec![10],
        };
        assert!(user.may_execute(1000, 0, 0o700));
        assert!(!user.may_execute(1000, 100, 0o070), "owner class decides");
        assert!(user.may_execute(0, 10, 0o010));
        assert!(!user.may_execute(0, 0, 0o110));
        assert!(user.may_execute(0, 0, 0o001));
        let root = Runner {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        };
        assert!(root.may_execute(1000, 1000, 0o001));
        assert!(!root.may_execute(0, 0, 0o644));
    }

    #[test]
    fn verify_commands_get_the_builds_path() {
        let template = ["{bin}".to_owned(), "--version={bin}".to_owned()];
        assert_eq!(
            command(&template, Path::new("/opt/b/server")),
            ["/opt/b/server", "--version=/opt/b/server"]
        );
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("holdfast-verify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn links_resolve_to_the_build_and_a_dangling_one_names_its_target() {
        let dir = dir("links");
        std::fs::create_dir(dir.join("a")).expect("mkdir");
        std::fs::write(dir.join("a/server"), "").expect("write");
        std::os::unix::fs::symlink("a", dir.join("current")).expect("link");
        assert_eq!(
            resolve(&dir.join("current/server")),
            Ok(dir.join("a/server"))
        );
        std::os::unix::fs::symlink("gone/server", dir.join("next")).expect("link");
        let missing = |build: PathBuf| {
            Err(Refusal {
                build,
                reason: "the link points to a missing file".to_owned(),
            })
        };
        assert_eq!(resolve(&dir.join("next")), missing(dir.join("gone/server")));
        std::os::unix::fs::symlink("../links/gone", dir.join("a/up")).expect("link");
        std::os::unix::fs::symlink("a/up", dir.join("twice")).expect("link");
        assert_eq!(
            resolve(&dir.join("twice/server")),
            missing(dir.join("links/gone/server"))
        );
        assert_eq!(
            resolve(&dir.join("nothing")),
            Err(Refusal {
                build: dir.join("nothing"),
                reason: "the file does not exist".to_owned(),
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_checks_refuse_what_cannot_run_and_sums_that_differ() {
        let dir = dir("files");
        let build = dir.join("server");
        std::fs::write(&build, "").expect("write");
        let me = Runner::of(None);
        std::fs::set_permissions(&build, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let refused = check_file(&build, Checksum::IfPresent, &me).expect_err("not executable");
        assert!(refused.starts_with("not executable"), "{refused}");
        std::fs::set_permissions(&build, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(check_file(&build, Checksum::IfPresent, &me), Ok(()));
        let missing = check_file(&build, Checksum::Required, &me).expect_err("required");
        assert!(missing.starts_with("no checksum file"), "{missing}");
        std::fs::write(sum_path(&build), format!("{EMPTY}  server\n")).expect("write");
        assert_eq!(check_file(&build, Checksum::Required, &me), Ok(()));
        std::fs::write(&build, "changed").expect("write");
        let mismatch = check_file(&build, Checksum::IfPresent, &me).expect_err("mismatch");
        assert!(mismatch.starts_with("checksum mismatch"), "{mismatch}");
        assert_eq!(
            check_file(&dir, Checksum::IfPresent, &me),
            Err("not a regular file".to_owned())
        );
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&build, std::fs::Permissions::from_mode(0o757))
                .expect("chmod");
            let open = check_file(&build, Checksum::IfPresent, &me).expect_err("world-writable");
            assert!(
                open.starts_with("writable by other users (mode 0757)"),
                "{open}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
