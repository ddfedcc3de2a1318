use std::{path::Path, process::ExitCode};
pub fn run(_socket: &Path, _json: bool) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
