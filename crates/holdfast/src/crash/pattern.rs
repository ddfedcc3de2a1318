//! `holdfast core-pattern install|uninstall|status`: pointing the kernel's
//! `core_pattern` at `holdfast core-handler`, and back at what it was.
//!
//! The setting is global (one per host, not per holdfast): install remembers the value
//! it replaces in `<state_dir>/crashes/core_pattern.previous` (unless what it replaces
//! is already holdfast's own, so installing twice never loses the original), and
//! uninstall writes that value back.

use std::io;
use std::path::{Path, PathBuf};

use super::store;

/// The kernel's setting.
pub const PROC_PATH: &str = "/proc/sys/kernel/core_pattern";
/// The kernel takes at most this many bytes of pattern (`CORENAME_MAX_SIZE` less the
/// terminating NUL); a longer one would be cut, arguments lost.
const MAX_PATTERN: usize = 127;
/// What marks a pattern as holdfast's.
const HANDLER: &str = " core-handler ";

/// The pattern that pipes cores to `exe core-handler` for `state_dir`.
pub fn pattern_for(exe: &Path, state_dir: &Path, max_size: Option<u64>) -> Result<String, String> {
    let mut pattern = format!(
        "|{}{HANDLER}--state-dir {}",
        exe.display(),
        state_dir.display()
    );
    if let Some(max) = max_size {
        pattern.push_str(&format!(" --max-size {max}"));
    }
    pattern.push_str(" %P %i %s %t %e");
    let spaced = |p: &Path| p.to_string_lossy().contains(char::is_whitespace);
    if spaced(exe) || spaced(state_dir) {
        return Err(
            "the kernel splits a core_pattern at spaces: holdfast's path and the \
                    state directory must have none"
                .to_owned(),
        );
    }
    // The kernel runs the handler from `/` and expands every `%`.
    if !exe.is_absolute() || !state_dir.is_absolute() {
        return Err(format!(
            "the kernel runs the handler from /: holdfast's path ({}) and the state \
             directory ({}) must be absolute",
            exe.display(),
            state_dir.display()
        ));
    }
    let percent = |p: &Path| p.to_string_lossy().contains('%');
    if percent(exe) || percent(state_dir) {
        return Err(
            "the kernel expands `%` in a core_pattern: holdfast's path and the state \
             directory must have none"
                .to_owned(),
        );
    }
    if pattern.len() > MAX_PATTERN {
        return Err(format!(
            "the pattern would be {} bytes, the kernel keeps {MAX_PATTERN}: {pattern:?} \
             (use a shorter --state-dir or install holdfast at a shorter path)",
            pattern.len()
        ));
    }
    Ok(pattern)
}

pub fn is_holdfast(pattern: &str) -> bool {
    pattern.starts_with('|') && pattern.contains(HANDLER)
}

fn previous_path(state_dir: &Path) -> PathBuf {
    store::dir(state_dir).join("core_pattern.previous")
}

/// Sets `proc` (the kernel's setting, or a stand-in) to `pattern`, remembering the value
/// it replaces.
pub fn install(proc: &Path, state_dir: &Path, pattern: &str) -> io::Result<()> {
    let current = read(proc)?;
    if !is_holdfast(&current) {
        store::make_dir(&store::dir(state_dir))?;
        crate::private_file::replace(&previous_path(state_dir), current.as_bytes())?;
    }
    std::fs::write(proc, format!("{pattern}\n"))
}

/// Writes the remembered value back. Returns it.
pub fn uninstall(proc: &Path, state_dir: &Path) -> io::Result<String> {
    let saved = previous_path(state_dir);
    let previous = store::read_private(&saved).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no previous core_pattern remembered in {} ({e}): was it installed with \
                 this --state-dir?",
                saved.display()
            ),
        )
    })?;
    std::fs::write(proc, format!("{previous}\n"))?;
    std::fs::remove_file(&saved)?;
    Ok(previous)
}

/// The current setting and the remembered one, for people.
pub fn status(proc: &Path, state_dir: &Path) -> io::Result<String> {
    let current = read(proc)?;
    let whose = if is_holdfast(&current) {
        "holdfast's core handler"
    } else {
        "not holdfast's"
    };
    let mut out = format!("core_pattern: {current}\n  ({whose})\n");
    if let Ok(previous) = store::read_private(&previous_path(state_dir)) {
        out.push_str(&format!("  uninstall restores: {previous}\n"));
    }
    Ok(out)
}

fn read(proc: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(proc)?.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_remembers_the_original_even_when_run_twice_and_uninstall_restores_it() {
        let dir = std::env::temp_dir().join(format!("hf-pattern-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let proc = dir.join("core_pattern");
        std::fs::write(&proc, "core.%p\n").expect("stand-in");
        let pattern =
            pattern_for(Path::new("/usr/bin/holdfast"), &dir, Some(1 << 20)).expect("short enough");
        assert!(
            pattern.ends_with("--max-size 1048576 %P %i %s %t %e"),
            "{pattern}"
        );
        install(&proc, &dir, &pattern).expect("install");
        install(&proc, &dir, &pattern).expect("again");
        assert_eq!(read(&proc).expect("read"), pattern);
        assert!(
            status(&proc, &dir)
                .expect("status")
                .contains("restores: core.%p")
        );
        assert_eq!(uninstall(&proc, &dir).expect("uninstall"), "core.%p");
        assert_eq!(read(&proc).expect("read"), "core.%p");
        assert!(uninstall(&proc, &dir).is_err(), "nothing left to restore");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pattern_the_kernel_would_cut_is_refused() {
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        let error = pattern_for(Path::new("/usr/bin/holdfast"), &long, None).expect_err("long");
        assert!(error.contains("the kernel keeps 127"), "{error}");
    }
}
