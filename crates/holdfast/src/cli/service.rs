use crate::model::ServiceName;
use std::{path::Path, process::ExitCode};
pub fn start(_socket: &Path, _name: ServiceName) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
pub fn stop(_socket: &Path, _name: ServiceName) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
pub fn restart(_socket: &Path, _name: ServiceName) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
pub fn shutdown(_socket: &Path) -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
