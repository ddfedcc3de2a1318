//! `holdfast quarantine list|release NAME`: the review queue of quarantined exits.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::QuarantineAction;
use super::service::report;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{QuarantineRecord, Reply, Request};

pub fn run(socket: &Path, action: QuarantineAction) -> miette::Result<ExitCode> {
    match action {
        QuarantineAction::List { json } => list(socket, json),
        QuarantineAction::Release { name } => {
            match client::call(socket, Request::QuarantineRelease { name }) {
                Ok(Reply::Accepted { message }) => {
                    println!("{message}");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(other) => Ok(report(unexpected(&other))),
                Err(e) => Ok(report(e)),
            }
        }
    }
}

fn list(socket: &Path, json: bool) -> miette::Result<ExitCode> {
    let records = match client::call(socket, Request::QuarantineList) {
        Ok(Reply::Quarantine { records }) => records,
        Ok(other) => return Ok(report(unexpected(&other))),
        Err(e) => return Ok(report(e)),
    };
    if json {
        let text = serde_json::to_string_pretty(&records).expect("protocol types always serialize");
        println!("{text}");
    } else {
        print!("{}", render(&records));
    }
    Ok(ExitCode::SUCCESS)
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!(
        "holdfast answered with an unexpected reply: {reply:?}"
    ))
}

/// One paragraph per record: header line, then its log lines indented.
pub fn render(records: &[QuarantineRecord]) -> String {
    if records.is_empty() {
        return "quarantine queue is empty\n".to_owned();
    }
    let mut out = String::new();
    for record in records {
        let status = match &record.released {
            None => "PENDING".to_owned(),
            Some(at) => format!("released {at}"),
        };
        let _ = writeln!(
            out,
            "{}  {}  {}  {}",
            record.time, record.service, status, record.reason
        );
        for line in &record.log {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceName;

    #[test]
    fn records_render_with_their_state_and_log_lines() {
        let record = QuarantineRecord {
            time: "2025-01-01T00:00:00.000Z".to_owned(),
            service: ServiceName::new("api").unwrap(),
            code: Some(201),
            signal: None,
            reason: "exited 201".to_owned(),
            log: vec!["crashing with exit code 201".to_owned()],
            released: None,
        };
        assert_eq!(
            render(&[record]),
            "2025-01-01T00:00:00.000Z  api  PENDING  exited 201\n    crashing with exit code 201\n"
        );
        assert_eq!(render(&[]), "quarantine queue is empty\n");
    }
}
