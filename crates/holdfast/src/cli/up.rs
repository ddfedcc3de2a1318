use std::{path::Path, process::ExitCode};
pub fn run(_config: &Path) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
