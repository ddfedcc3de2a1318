//! The one JSON request line a control connection sends, as the server parses it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = holdfast::control::server::parse_request(data);
});
