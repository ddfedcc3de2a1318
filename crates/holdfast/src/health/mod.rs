//! Health checking: the probes run here ([`probe`]); the decay state machine and the
//! per-run probe schedule are the core's ([`holdfast_core::health`]).

mod http;
pub mod probe;

/// The probe's HTTP response parser, exposed for the fuzz target (`fuzz/`).
pub use http::judge as judge_http_answer;

pub use holdfast_core::health::*;
