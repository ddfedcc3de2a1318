use crate::model::ServiceName;
use std::{path::Path, process::ExitCode};
pub fn run(
    _socket: &Path,
    _name: &ServiceName,
    _lines: usize,
    _follow: bool,
) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
