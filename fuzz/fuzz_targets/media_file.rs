//! See fuzz/README.md and `pivotd::fuzzing::media_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::media_file(data);
});
