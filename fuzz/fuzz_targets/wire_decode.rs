//! Any bytes as a protocol frame, a sync message and change chunks: see
//! `minka_server::fuzzing::wire_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = minka_server::fuzzing::wire_decode(data);
});
