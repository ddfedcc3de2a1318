//! Loading `holdfast.toml`: TOML → [`raw`] schema → [`validate`] → [`Plan`].
//!
//! Every problem in a file is reported at once, each with its location, the offending
//! snippet underlined, what is wrong and how to fix it ([`ConfigError`]). A `Plan` comes
//! out only when there are no problems at all.

mod diagnostic;
mod raw;
mod validate;
pub mod value;

use std::path::Path;

pub(crate) use diagnostic::closest;
pub use diagnostic::{ConfigError, Problem};
pub use validate::Templates;
pub use validate::host::{FileKind, HostFacts, Ownership, SystemHost};
pub use validate::instances::{Segment, segments as instance_segments};

use crate::model::Plan;

/// Reads and validates the config at `path`, including what would fail at spawn on this
/// machine (missing programs and directories, CPUs, `nofile`) and, when holdfast runs as
/// root, that no other user could rewrite the file or replace a program. Relative paths in
/// `[holdfast]` resolve against the directory of the file.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    load_with_templates(path).map(|(plan, _)| plan)
}

/// [`load`], also returning each instanced service as written ([`Templates`]): what
/// `holdfast gen` turns into a template unit or `numprocs`.
pub fn load_with_templates(path: &Path) -> Result<(Plan, Templates), ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    // Refused before it is even parsed: nothing of a file another user could have
    // written is acted on.
    if let Some(problem) = validate::trust::config_file(path, &SystemHost) {
        return Err(ConfigError::invalid(
            &path.display().to_string(),
            &src,
            vec![problem],
        ));
    }
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    validated(
        &src,
        &path.display().to_string(),
        base_dir,
        Some(&SystemHost),
    )
}

/// Validates config text. `origin` names the source in diagnostics (usually the path);
/// relative paths in `[holdfast]` resolve against `base_dir`.
/// Looks at nothing on the machine but users and groups: see [`parse_on_host`].
pub fn parse(src: &str, origin: &str, base_dir: &Path) -> Result<Plan, ConfigError> {
    validated(src, origin, base_dir, None).map(|(plan, _)| plan)
}

/// Like [`parse`], and also checks what would fail at spawn on `host`.
pub fn parse_on_host(
    src: &str,
    origin: &str,
    base_dir: &Path,
    host: &dyn HostFacts,
) -> Result<Plan, ConfigError> {
    validated(src, origin, base_dir, Some(host)).map(|(plan, _)| plan)
}

fn validated(
    src: &str,
    origin: &str,
    base_dir: &Path,
    host: Option<&dyn HostFacts>,
) -> Result<(Plan, Templates), ConfigError> {
    let (raw, mut problems) = raw::parse_document(src);
    let plan = validate::validate_keeping_templates(raw, base_dir, host, &mut problems);
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(ConfigError::invalid(origin, src, problems))
    }
}
