//! Command sequences of fake peers against a real hub: see
//! `minka_server::fuzzing::server_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = minka_server::fuzzing::server_messages(data);
});
