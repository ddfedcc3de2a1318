//! The services a command line names: exact service names, checked against the
//! daemon's status so that an unknown name fails before anything is applied.

use std::path::Path;

use crate::control::client::{self, ClientError};
use crate::control::protocol::{ControlError, ErrorKind, Reply, Request};
use crate::model::ServiceName;

/// The services named by `args`, in order, each once. Every name must be a service of
/// the daemon at `socket`; the first that is not is the error (`no service named "x"`).
pub fn expand(socket: &Path, args: &[String]) -> Result<Vec<ServiceName>, ClientError> {
    let known = match client::call(socket, Request::Status)? {
        Reply::Status(status) => status.services,
        other => {
            return Err(ClientError::Protocol(format!(
                "holdfast answered `status` with an unexpected reply: {other:?}"
            )));
        }
    };
    let mut names: Vec<ServiceName> = Vec::new();
    for arg in args {
        let Some(service) = known.iter().find(|s| s.name.as_str() == arg) else {
            return Err(ClientError::Daemon(ControlError {
                kind: ErrorKind::UnknownService,
                message: format!("no service named {arg:?}"),
            }));
        };
        if !names.contains(&service.name) {
            names.push(service.name.clone());
        }
    }
    Ok(names)
}
