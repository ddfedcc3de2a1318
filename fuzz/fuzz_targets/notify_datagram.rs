//! An sd_notify datagram: the shell drops what is not UTF-8 (as here), the core parses
//! the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = holdfast_core::notify::parse(text);
    }
});
