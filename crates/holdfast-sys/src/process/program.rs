//! Finding the program of a command, the one lookup that `spawn` and `holdfast check`
//! share, so that what `check` accepts is what spawn runs.
//!
//! The rules are `execvp`'s: a program written with a `/` is a path, used as written
//! (relative to the child's working directory); a bare name is searched in the `PATH`
//! of the child's environment, skipping empty entries (they would mean the current
//! directory), directories and files without an execute bit; the first executable
//! file wins. A relative entry is relative to the child's working directory, where
//! `execvp` would run it (spawn looks up before `clone`, in holdfast's directory). Without a `PATH` the search uses [`defaults::PATH`], the `PATH` every
//! service gets unless its config says otherwise.

use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::model::defaults;

/// What a path names, following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    Directory,
    /// A regular file (or anything else that is not a directory); `executable` when any
    /// execute bit is set, the test `execve` and the lookup apply.
    File {
        executable: bool,
    },
}

impl FileKind {
    /// What `path` names on this machine.
    pub fn of(path: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Err(_) => Self::Missing,
            Ok(meta) if meta.is_dir() => Self::Directory,
            Ok(meta) => Self::File {
                executable: meta.permissions().mode() & 0o111 != 0,
            },
        }
    }
}

/// Where a command's program is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Written with a `/`: a path, used as written. `execve` is its judge.
    AsWritten(PathBuf),
    /// A bare name, found in the search path.
    InPath(PathBuf),
}

/// Why a bare name is not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// No file of that name in any directory of the search path.
    Nowhere,
    /// Only files without an execute bit (this is the first of them).
    NotExecutable(PathBuf),
}

impl NotFound {
    /// The error `execvp` reports for it.
    pub fn errno(&self) -> Errno {
        match self {
            Self::Nowhere => Errno::ENOENT,
            Self::NotExecutable(_) => Errno::EACCES,
        }
    }
}

/// Looks `program` up in `search` (a `PATH` value) for a child that runs in `cwd`
/// (holdfast's own directory when `None`), asking `file` what each candidate is.
pub fn lookup(
    program: &str,
    search: &str,
    cwd: Option<&Path>,
    file: impl Fn(&Path) -> FileKind,
) -> Result<Found, NotFound> {
    if program.contains('/') {
        return Ok(Found::AsWritten(PathBuf::from(program)));
    }
    if program.is_empty() {
        return Err(NotFound::Nowhere);
    }
    let mut not_executable = None;
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let candidate = match cwd {
            Some(cwd) if Path::new(dir).is_relative() => cwd.join(dir).join(program),
            _ => Path::new(dir).join(program),
        };
        match file(&candidate) {
            FileKind::File { executable: true } => return Ok(Found::InPath(candidate)),
            FileKind::File { executable: false } => {
                not_executable.get_or_insert(candidate);
            }
            FileKind::Directory | FileKind::Missing => {}
        }
    }
    Err(not_executable.map_or(NotFound::Nowhere, NotFound::NotExecutable))
}

/// The search path of a child whose environment is `env`.
pub fn search_path(env: &[(String, String)]) -> &str {
    env.iter()
        .find(|(key, _)| key == "PATH")
        .map_or(defaults::PATH, |(_, value)| value.as_str())
}

/// The path spawn executes for `program` in a child with environment `env` that runs in
/// `cwd`, looked up on this machine.
pub fn resolve(
    program: &str,
    env: &[(String, String)],
    cwd: Option<&Path>,
) -> Result<PathBuf, Errno> {
    match lookup(program, search_path(env), cwd, FileKind::of) {
        Ok(Found::AsWritten(path) | Found::InPath(path)) => Ok(path),
        Err(not_found) => Err(not_found.errno()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A machine with exactly these files and directories.
    fn machine(path: &Path) -> FileKind {
        let files = BTreeMap::from([
            ("/usr/bin/sleep", FileKind::File { executable: true }),
            ("/usr/local/bin/tool", FileKind::File { executable: false }),
            ("/bin/tool", FileKind::File { executable: true }),
            ("/opt/bin/sleep", FileKind::Directory),
        ]);
        let path = path.to_str().expect("test paths are utf-8");
        files.get(path).copied().unwrap_or(FileKind::Missing)
    }

    #[test]
    fn a_bare_name_is_the_first_executable_file_in_the_search_path() {
        assert_eq!(
            lookup("sleep", "/nowhere:/usr/bin:/bin", None, machine),
            Ok(Found::InPath("/usr/bin/sleep".into()))
        );
        assert_eq!(
            lookup("tool", "/usr/local/bin:/bin", None, machine),
            Ok(Found::InPath("/bin/tool".into())),
            "a file without an execute bit is skipped"
        );
        assert_eq!(
            lookup("sleep", "/opt/bin:/usr/bin", None, machine),
            Ok(Found::InPath("/usr/bin/sleep".into())),
            "a directory named like the program is skipped"
        );
    }

    #[test]
    fn a_relative_search_entry_is_relative_to_the_working_directory() {
        let files = |path: &Path| match path.to_str() {
            Some("/srv/app/bin/tool") => FileKind::File { executable: true },
            _ => FileKind::Missing,
        };
        assert_eq!(
            lookup("tool", "bin:/usr/bin", Some(Path::new("/srv/app")), files),
            Ok(Found::InPath("/srv/app/bin/tool".into()))
        );
        assert_eq!(
            lookup("tool", "/srv/app/nope:bin", None, files),
            Err(NotFound::Nowhere),
            "without a working directory, relative to holdfast's own"
        );
    }

    #[test]
    fn a_name_found_nowhere_or_only_without_execute_bits_is_not_found() {
        assert_eq!(
            lookup("tool", "/usr/local/bin", None, machine),
            Err(NotFound::NotExecutable("/usr/local/bin/tool".into()))
        );
        assert_eq!(
            lookup("sleep", "/opt/bin", None, machine),
            Err(NotFound::Nowhere),
            "a directory is no program"
        );
        assert_eq!(
            lookup("sleep", ":/nowhere:", None, machine),
            Err(NotFound::Nowhere),
            "empty entries do not mean the current directory"
        );
        assert_eq!(
            lookup("", "/usr/bin", None, machine),
            Err(NotFound::Nowhere)
        );
        assert_eq!(NotFound::Nowhere.errno(), Errno::ENOENT);
        assert_eq!(NotFound::NotExecutable("/x".into()).errno(), Errno::EACCES);
    }

    #[test]
    fn a_program_with_a_slash_is_used_as_written() {
        assert_eq!(
            lookup("./x/y", "/usr/bin", None, machine),
            Ok(Found::AsWritten("./x/y".into()))
        );
        assert_eq!(
            lookup("/opt/gone", "/usr/bin", None, machine),
            Ok(Found::AsWritten("/opt/gone".into()))
        );
    }

    #[test]
    fn the_search_path_is_the_childs_path_else_the_default() {
        let env = [("PATH".to_owned(), "/opt/bin".to_owned())];
        assert_eq!(search_path(&env), "/opt/bin");
        assert_eq!(search_path(&[]), defaults::PATH);
    }

    #[test]
    fn program_without_slash_is_found_in_the_path_of_the_child_env() {
        let env = [("PATH".to_owned(), "/nonexistent:/bin".to_owned())];
        assert_eq!(resolve("sh", &env, None), Ok(PathBuf::from("/bin/sh")));
        assert_eq!(
            resolve("./x/y", &env, None),
            Ok(PathBuf::from("./x/y")),
            "a path with a slash is used as written"
        );
        assert_eq!(resolve("no-such-prog-xyz", &env, None), Err(Errno::ENOENT));
    }

    #[test]
    fn the_real_machine_has_directories_and_executable_files() {
        assert_eq!(FileKind::of(Path::new("/")), FileKind::Directory);
        assert_eq!(
            FileKind::of(Path::new("/bin/sh")),
            FileKind::File { executable: true }
        );
        assert_eq!(
            FileKind::of(Path::new("/no/such/file/here")),
            FileKind::Missing
        );
    }
}
