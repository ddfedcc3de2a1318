//! What root must not trust: a config file, or a directory on its path, that another
//! user could rewrite, and a service's program that any user could replace. Running as
//! root, holdfast would otherwise run whatever such a user writes there as root (the
//! rules of sudo and sshd's StrictModes). A directory with the sticky bit (`/tmp`) is
//! fine on the path: nobody can replace what another user put in it.

use std::path::Path;

use super::host::HostFacts;
use crate::config::diagnostic::Problem;

/// Owner and permission bits of a file, as `stat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub directory: bool,
}

/// Why root must not read its config from a file with `meta`, and the command that fixes
/// it; `None` when only root can change it.
fn untrusted(path: &Path, meta: Ownership) -> Option<(String, String)> {
    let shown = path.display();
    if meta.uid != 0 {
        return Some((
            format!("owned by uid {}, not root", meta.uid),
            format!("chown root {shown}"),
        ));
    }
    let sticky = meta.directory && meta.mode & 0o1000 != 0;
    let who = match (meta.mode & 0o020 != 0, meta.mode & 0o002 != 0) {
        _ if sticky => return None,
        (true, true) => "group and other users",
        (true, false) => "its group",
        (false, true) => "other users",
        (false, false) => return None,
    };
    Some((
        format!("writable by {who} (mode {:04o})", meta.mode),
        format!("chmod go-w {shown}"),
    ))
}

/// The config file at `path` (its real path) and every directory above it, when
/// holdfast runs as root: the first one another user could rewrite.
pub(crate) fn config_file(path: &Path, host: &dyn HostFacts) -> Option<Problem> {
    if !host.runs_as_root() {
        return None;
    }
    let real = host.canonical(path)?;
    let (why, fix) = real
        .ancestors()
        .find_map(|p| {
            host.ownership(p)
                .and_then(|meta| untrusted(p, meta))
                .map(|w| (p, w))
        })
        .map(|(p, (why, fix))| match p == real {
            true => (format!("it is {why}"), fix),
            false => (format!("its directory {} is {why}", p.display()), fix),
        })?;
    Some(
        Problem::unplaced(
            format!("refusing config {}: {why}", path.display()),
            "another user could rewrite it",
        )
        .with_help(format!(
            "holdfast runs as root and would run what that user writes: {fix}"
        )),
    )
}

/// Why the program at `path` (and its real path, the build an upgrade rolls) must not
/// run as root: another user could replace it. `None` when it is fine, or holdfast does
/// not run as root.
pub(super) fn program(path: &Path, host: &dyn HostFacts) -> Option<String> {
    if !host.runs_as_root() {
        return None;
    }
    let real = host.canonical(path);
    [Some(path), real.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|p| {
            let meta = host.ownership(p)?;
            (meta.mode & 0o002 != 0).then(|| {
                format!(
                    "{} is writable by other users (mode {:04o}): chmod o-w {0}",
                    p.display(),
                    meta.mode
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::config::FileKind;

    /// A machine where holdfast runs as root, with files of the given owners and modes.
    struct Root(BTreeMap<&'static str, Ownership>);

    impl HostFacts for Root {
        fn file(&self, _: &Path) -> FileKind {
            FileKind::File { executable: true }
        }
        fn cpus(&self) -> Option<usize> {
            None
        }
        fn nr_open(&self) -> Option<u64> {
            None
        }
        fn own_path(&self) -> Option<String> {
            None
        }
        fn is_symlink(&self, _: &Path) -> bool {
            false
        }
        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            Some(path.to_owned())
        }
        fn runs_as_root(&self) -> bool {
            true
        }
        fn ownership(&self, path: &Path) -> Option<Ownership> {
            self.0.get(path.to_str()?).copied()
        }
    }

    fn dir(uid: u32, mode: u32) -> Ownership {
        Ownership {
            uid,
            mode,
            directory: true,
        }
    }

    #[test]
    fn a_config_under_a_directory_another_user_can_write_is_refused_naming_it() {
        let host = Root(BTreeMap::from([
            ("/", dir(0, 0o755)),
            ("/tmp", dir(0, 0o1777)),
            ("/tmp/app", dir(0, 0o775)),
            ("/tmp/app/holdfast.toml", file(0, 0o644)),
            ("/tmp/ok.toml", file(0, 0o600)),
        ]));
        let problem = config_file(Path::new("/tmp/app/holdfast.toml"), &host).expect("refused");
        assert_eq!(
            problem.message(),
            "refusing config /tmp/app/holdfast.toml: its directory /tmp/app is writable by its group (mode 0775)"
        );
        assert!(
            problem
                .help()
                .is_some_and(|h| h.ends_with("chmod go-w /tmp/app")),
            "{problem:?}"
        );
        assert_eq!(
            config_file(Path::new("/tmp/ok.toml"), &host),
            None,
            "sticky /tmp"
        );
    }

    #[test]
    fn a_program_other_users_can_write_is_refused_but_a_group_writable_one_is_not() {
        let host = Root(BTreeMap::from([
            ("/opt/open", file(0, 0o777)),
            ("/opt/team", file(1000, 0o775)),
        ]));
        assert_eq!(
            program(Path::new("/opt/open"), &host).as_deref(),
            Some("/opt/open is writable by other users (mode 0777): chmod o-w /opt/open")
        );
        assert_eq!(program(Path::new("/opt/team"), &host), None);
    }

    fn file(uid: u32, mode: u32) -> Ownership {
        Ownership {
            uid,
            mode,
            directory: false,
        }
    }

    #[test]
    fn root_trusts_only_what_root_alone_can_change_and_sticky_directories() {
        let p = Path::new("/etc/holdfast.toml");
        assert_eq!(untrusted(p, file(0, 0o644)), None);
        assert_eq!(
            untrusted(p, file(1000, 0o644)),
            Some((
                "owned by uid 1000, not root".to_owned(),
                "chown root /etc/holdfast.toml".to_owned()
            ))
        );
        assert_eq!(
            untrusted(p, file(0, 0o664)).map(|w| w.0),
            Some("writable by its group (mode 0664)".to_owned())
        );
        assert_eq!(
            untrusted(p, file(0, 0o666)).map(|w| w.1),
            Some("chmod go-w /etc/holdfast.toml".to_owned())
        );
        let tmp = Ownership {
            uid: 0,
            mode: 0o1777,
            directory: true,
        };
        assert_eq!(untrusted(Path::new("/tmp"), tmp), None, "sticky directory");
        assert!(
            untrusted(p, file(0, 0o1666)).is_some(),
            "the sticky bit of a file does not protect it"
        );
    }
}
