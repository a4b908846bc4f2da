//! The record reader (`record show`, `record merge`): any bytes parse or fail, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = recorder::record::parse(data) {
        for e in &entries {
            // Human output of every parsed path must be free of control characters.
            let shown = recorder::image::path::display(&e.path);
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
    }
});
