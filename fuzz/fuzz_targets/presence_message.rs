//! See fuzz/README.md and `pivotd::fuzzing::presence_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::presence_message(data);
});
