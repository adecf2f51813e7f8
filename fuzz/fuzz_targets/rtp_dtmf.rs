//! See fuzz/README.md and `pivotd::fuzzing::rtp_dtmf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pivotd::fuzzing::rtp_dtmf(data);
});
