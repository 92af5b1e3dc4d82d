//! Arbitrary change batches judged by the permission function: see
//! `crdt_core::fuzzing::permission_check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = crdt_core::fuzzing::permission_check(data);
});
