//! See fuzz/README.md and `pivotd::fuzzing::sip_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::sip_message(data);
});
