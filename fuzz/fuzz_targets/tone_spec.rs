//! See fuzz/README.md and `pivotd::fuzzing::tone_spec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::tone_spec(data);
});
