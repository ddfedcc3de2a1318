//! Health checking: the probes run here ([`probe`]); the decay state machine and the
//! per-run probe schedule are the core's ([`holdfast_core::health`]).

mod http;
pub mod probe;

pub use holdfast_core::health::*;
