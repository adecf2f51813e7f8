//! See fuzz/README.md and `pivotd::fuzzing::digest_credentials`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::digest_credentials(data);
});
