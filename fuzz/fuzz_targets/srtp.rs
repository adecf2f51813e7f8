//! See fuzz/README.md and `pivotd::fuzzing::srtp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::srtp(data);
});
