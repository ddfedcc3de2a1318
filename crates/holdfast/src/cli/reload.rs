use std::{path::Path, process::ExitCode};
pub fn run(_socket: &Path, _dry_run: bool) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
