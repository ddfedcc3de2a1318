//! The last lines of a service's output (any bytes, read lossily as the log capture
//! does) → the panic, fatal error or stack dump a crash report shows.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    if let Some(found) = holdfast::crash::extract::extract(&lines) {
        // The stack is taken from the lines given, never made up.
        assert!(found.stack.iter().all(|l| lines.contains(&l.as_str())));
    }
});
