//! TEMPORARY STUB (logs helper): lets `cli::logs` compile before the control helper's
//! client lands. The lead takes the real `client.rs`; only `call`'s signature matters here.

use std::path::Path;

use super::protocol::{Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach holdfast on \"{0}\": the control client is not implemented yet")]
    Unimplemented(String),
}

pub fn call(socket: &Path, _request: Request) -> Result<Reply, ClientError> {
    Err(ClientError::Unimplemented(socket.display().to_string()))
}
