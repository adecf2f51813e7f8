//! See fuzz/README.md and `pivotd::fuzzing::kazoo_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::kazoo_json(data);
});
