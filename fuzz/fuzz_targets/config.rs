//! Config text → validated `Plan` (the filesystem-free path of `holdfast check`), and
//! the diagnostics of a rejected file rendered as the CLI shows them (their spans index
//! the source text, so a wrong span would panic here).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = holdfast::config::parse(src, "fuzz.toml", Path::new("/etc/holdfast")) {
        let _ = error.render_plain();
        let _ = error.render_terminal(true);
    }
});
