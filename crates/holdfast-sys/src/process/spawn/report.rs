//! The child's failure report: `(stage, detail, errno)` written to a close-on-exec pipe
//! before `_exit(127)`; EOF without a record means `execve` succeeded.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::model::Capability;

use super::*;

/// The child's failure codes on the error pipe (`ChildStage as u32`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub(super) enum ChildStage {
    ResetSignals = 1,
    Setsid = 2,
    Dup = 3,
    ClearCloexec = 4,
    CloseInheritedFds = 5,
    Chdir = 6,
    Exec = 7,
    JoinCgroup = 8,
    Setrlimit = 9,
    CpuAffinity = 10,
    OomScoreAdjust = 11,
    DropBoundingSet = 12,
    KeepCaps = 13,
    Setgroups = 14,
    Setgid = 15,
    Setuid = 16,
    Capset = 17,
    RaiseAmbient = 18,
    NoNewPrivs = 19,
}

/// `(stage, detail, errno)` as three native-endian 32-bit words; 12 bytes is far below
/// `PIPE_BUF`, so the write is atomic and the parent sees all of it or nothing.
pub(super) const REPORT_LEN: usize = 12;

pub(super) struct ChildReport {
    pub(super) stage: u32,
    pub(super) detail: i32,
    pub(super) errno: i32,
}

impl ChildReport {
    pub(super) fn into_error(self, plan: &ChildPlan, program: PathBuf) -> SpawnError {
        let stage = match self.stage {
            s if s == ChildStage::ResetSignals as u32 => SpawnStage::ResetSignals,
            s if s == ChildStage::Setsid as u32 => SpawnStage::Setsid,
            s if s == ChildStage::Dup as u32 => SpawnStage::Dup {
                target: self.detail,
            },
            s if s == ChildStage::ClearCloexec as u32 => {
                SpawnStage::ClearCloexec { fd: self.detail }
            }
            s if s == ChildStage::CloseInheritedFds as u32 => SpawnStage::CloseInheritedFds,
            s if s == ChildStage::Chdir as u32 => SpawnStage::Chdir {
                dir: plan
                    .dir
                    .as_ref()
                    .map(|d| PathBuf::from(OsStr::from_bytes(d.as_bytes())))
                    .unwrap_or_default(),
            },
            s if s == ChildStage::Exec as u32 => SpawnStage::Exec { program },
            s => match setup_step(s, self.detail) {
                Some(step) => SpawnStage::Setup(step),
                None => SpawnStage::Unknown { code: s },
            },
        };
        err(stage, Errno::from_raw(self.errno))
    }
}

/// The setup step a child's stage code and detail word stand for.
pub(super) fn setup_step(stage: u32, detail: i32) -> Option<SetupStep> {
    let capability = || Capability::from_number(u8::try_from(detail).unwrap_or(u8::MAX));
    let id = detail as u32;
    Some(match stage {
        s if s == ChildStage::JoinCgroup as u32 => SetupStep::JoinCgroup,
        s if s == ChildStage::Setrlimit as u32 => SetupStep::Setrlimit { resource: id },
        s if s == ChildStage::CpuAffinity as u32 => SetupStep::CpuAffinity,
        s if s == ChildStage::OomScoreAdjust as u32 => SetupStep::OomScoreAdjust,
        s if s == ChildStage::DropBoundingSet as u32 => SetupStep::DropBoundingSet {
            capability: capability(),
        },
        s if s == ChildStage::KeepCaps as u32 => SetupStep::KeepCaps,
        s if s == ChildStage::Setgroups as u32 => SetupStep::Setgroups,
        s if s == ChildStage::Setgid as u32 => SetupStep::Setgid { gid: id },
        s if s == ChildStage::Setuid as u32 => SetupStep::Setuid { uid: id },
        s if s == ChildStage::Capset as u32 => SetupStep::Capset,
        s if s == ChildStage::RaiseAmbient as u32 => SetupStep::RaiseAmbient {
            capability: capability(),
        },
        s if s == ChildStage::NoNewPrivs as u32 => SetupStep::NoNewPrivs,
        _ => return None,
    })
}

/// Reads the child's report until EOF. `None`: the pipe closed empty, so exec succeeded.
pub(super) fn read_report(pipe: &OwnedFd) -> Result<Option<ChildReport>, Errno> {
    let mut buf = [0u8; REPORT_LEN];
    let mut filled = 0;
    loop {
        match nix::unistd::read(pipe, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled == REPORT_LEN {
                    break;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
    if filled < REPORT_LEN {
        // Empty: exec succeeded. A torn report cannot happen (atomic write); if it did,
        // the child still died before exec, so say so rather than claim success.
        return if filled == 0 {
            Ok(None)
        } else {
            Err(Errno::EIO)
        };
    }
    let word = |i: usize| {
        let bytes: [u8; 4] = buf[i * 4..i * 4 + 4]
            .try_into()
            .expect("a 4-byte window of a 12-byte buffer");
        bytes
    };
    Ok(Some(ChildReport {
        stage: u32::from_ne_bytes(word(0)),
        detail: i32::from_ne_bytes(word(1)),
        errno: i32::from_ne_bytes(word(2)),
    }))
}
