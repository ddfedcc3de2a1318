use std::{path::Path, process::ExitCode};
pub fn run(_file: &Path) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
