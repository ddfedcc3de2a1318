use std::process::ExitCode;
pub fn run() -> miette::Result<ExitCode> {
    unimplemented!("skeleton")
}
