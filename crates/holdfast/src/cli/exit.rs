//! Exit codes of the `holdfast` command, documented in one place.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | failure: the request failed or the daemon reported an error |
//! | 2 | usage error (clap) |
//! | 3 | invalid config (`check`, `up`, `reload`) |
//! | 4 | the daemon is not reachable on its control socket |

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
pub const INVALID_CONFIG: u8 = 3;
pub const UNREACHABLE: u8 = 4;
