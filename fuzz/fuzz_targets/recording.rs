//! Recordings (`replscope replay`'s input, JSON Lines) on any text: an error is a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = replscope::recording::parse(&text);
});
