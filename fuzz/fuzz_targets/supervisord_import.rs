//! supervisord.conf text → holdfast config text and report (`holdfast import
//! supervisord`): never a panic, and what it writes is always TOML that parses.
#![no_main]

use holdfast::interop::supervisord::{Context, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imported) = import(src, "fuzz.conf", &Context::default()) {
        if let Err(err) = imported.toml.parse::<toml::Table>() {
            panic!("import wrote invalid TOML ({err}):\n{}", imported.toml);
        }
        for finding in &imported.report {
            let _ = finding.to_string();
        }
    }
});
