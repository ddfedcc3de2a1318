//! The one place where the system's reasons for a failed start (a `SpawnError`, an
//! errno, a cgroup error) become the core's [`SpawnFailure`]: what kind of step failed
//! ([`SpawnErrorKind`]), the system's text, and who is to blame. The core never sees
//! the system types, and nothing else turns them into text for it.

use nix::errno::Errno;

use super::service::SpawnFailure;
use crate::cgroup::CgroupError;
use crate::model::{SpawnCause, SpawnErrorKind};
use crate::process::spawn::{self, SetupStep, SpawnError, SpawnStage};

/// A failed `spawn::spawn`, blamed on holdfast when it ran short of its own resources.
pub fn from_spawn(error: &SpawnError) -> SpawnFailure {
    blame(error.is_holdfast_resource_shortage(), cause(error))
}

/// What a failed `spawn::spawn` tells the core (for a probe or a hook, whose spawn
/// failures have no blame to decide).
pub fn cause(error: &SpawnError) -> SpawnCause {
    SpawnCause::new(kind(&error.stage, error.source), error.to_string())
}

/// A failed preparation step (capturing output, creating a pipe) with the errno it
/// failed with: holdfast's fault when the errno is a resource shortage.
pub fn from_errno(kind: SpawnErrorKind, errno: Errno, detail: String) -> SpawnFailure {
    blame(
        spawn::is_resource_shortage(errno),
        SpawnCause::new(kind, detail),
    )
}

/// A failed preparation step's I/O error, judged like [`from_errno`].
pub fn from_io(kind: SpawnErrorKind, error: &std::io::Error, detail: String) -> SpawnFailure {
    match error.raw_os_error() {
        Some(errno) => from_errno(kind, Errno::from_raw(errno), detail),
        None => of_service(kind, detail),
    }
}

/// A failure to set up the service's cgroup.
pub fn from_cgroup(error: &CgroupError) -> SpawnFailure {
    match error {
        CgroupError::Io { source, .. } => {
            from_io(SpawnErrorKind::Cgroup, source, error.to_string())
        }
        _ => of_service(SpawnErrorKind::Cgroup, error.to_string()),
    }
}

/// A failure that is the service's (its configuration's) whatever the system said.
pub fn of_service(kind: SpawnErrorKind, detail: String) -> SpawnFailure {
    SpawnFailure::Service(SpawnCause::new(kind, detail))
}

fn blame(holdfast_short: bool, cause: SpawnCause) -> SpawnFailure {
    if holdfast_short {
        SpawnFailure::HoldfastResources(cause)
    } else {
        SpawnFailure::Service(cause)
    }
}

/// The kind of a failed spawn stage: the step decides, and for the program and its
/// working directory also the errno (missing or forbidden).
fn kind(stage: &SpawnStage, errno: Errno) -> SpawnErrorKind {
    match stage {
        SpawnStage::ResolveProgram { .. } | SpawnStage::Exec { .. } | SpawnStage::Chdir { .. } => {
            match errno {
                Errno::ENOENT | Errno::ENOTDIR => SpawnErrorKind::NotFound,
                Errno::EACCES | Errno::EPERM => SpawnErrorKind::PermissionDenied,
                _ => SpawnErrorKind::Other,
            }
        }
        SpawnStage::Setup(step) => match step {
            SetupStep::JoinCgroup => SpawnErrorKind::Cgroup,
            SetupStep::Setrlimit { .. } | SetupStep::CpuAffinity | SetupStep::OomScoreAdjust => {
                SpawnErrorKind::Limits
            }
            SetupStep::DropBoundingSet { .. }
            | SetupStep::KeepCaps
            | SetupStep::Setgroups
            | SetupStep::Setgid { .. }
            | SetupStep::Setuid { .. }
            | SetupStep::Capset
            | SetupStep::RaiseAmbient { .. }
            | SetupStep::NoNewPrivs => SpawnErrorKind::Credentials,
        },
        SpawnStage::InvalidString { .. }
        | SpawnStage::OpenDevNull
        | SpawnStage::ErrorPipe
        | SpawnStage::Fork
        | SpawnStage::ReadErrorPipe
        | SpawnStage::ResetSignals
        | SpawnStage::Setsid
        | SpawnStage::Dup { .. }
        | SpawnStage::ClearCloexec { .. }
        | SpawnStage::CloseInheritedFds
        | SpawnStage::Unknown { .. } => SpawnErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(stage: SpawnStage, source: Errno) -> SpawnFailure {
        from_spawn(&SpawnError { stage, source })
    }

    #[test]
    fn a_spawn_error_keeps_its_text_and_is_classified_by_its_step() {
        let missing = failure(
            SpawnStage::Exec {
                program: "/bin/nope".into(),
            },
            Errno::ENOENT,
        );
        let SpawnFailure::Service(cause) = &missing else {
            panic!("a missing program is the service's failure: {missing:?}");
        };
        assert_eq!(cause.kind, SpawnErrorKind::NotFound);
        assert_eq!(
            cause.to_string(),
            "exec \"/bin/nope\": ENOENT: No such file or directory"
        );
        let kind_of = |stage, errno| match failure(stage, errno) {
            SpawnFailure::Service(cause) => cause.kind,
            other => panic!("the service's failure: {other:?}"),
        };
        let chdir = SpawnStage::Chdir { dir: "/x".into() };
        assert_eq!(
            kind_of(chdir, Errno::EACCES),
            SpawnErrorKind::PermissionDenied
        );
        let setuid = SpawnStage::Setup(SetupStep::Setuid { uid: 7 });
        assert_eq!(kind_of(setuid, Errno::EPERM), SpawnErrorKind::Credentials);
        let cgroup = SpawnStage::Setup(SetupStep::JoinCgroup);
        assert_eq!(kind_of(cgroup, Errno::EBUSY), SpawnErrorKind::Cgroup);
        let nofile = SpawnStage::Setup(SetupStep::Setrlimit { resource: 7 });
        assert_eq!(kind_of(nofile, Errno::EPERM), SpawnErrorKind::Limits);
    }

    #[test]
    fn only_holdfasts_own_shortage_is_blamed_on_holdfast() {
        let fork = failure(SpawnStage::Fork, Errno::EAGAIN);
        assert!(
            matches!(fork, SpawnFailure::HoldfastResources(_)),
            "{fork:?}"
        );
        // The child's own steps are the service's, whatever their errno.
        let exec = failure(
            SpawnStage::Exec {
                program: "/bin/big".into(),
            },
            Errno::ENOMEM,
        );
        assert!(matches!(exec, SpawnFailure::Service(_)), "{exec:?}");
        let pipe = from_errno(
            SpawnErrorKind::Other,
            Errno::EMFILE,
            "cannot create the readiness pipe".to_owned(),
        );
        assert!(
            matches!(pipe, SpawnFailure::HoldfastResources(_)),
            "{pipe:?}"
        );
    }
}
