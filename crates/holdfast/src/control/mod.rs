//! The control API: protocol types, the Unix-socket server in the daemon, the client in
//! the CLI.

pub mod client;
mod conn;
pub mod feed;
mod follow;
mod logs;
pub(crate) use conn::dispatch;
pub use holdfast_proto as protocol;
pub(crate) use logs::tail as log_tail;
pub mod server;
pub mod targets;
pub mod wait;
