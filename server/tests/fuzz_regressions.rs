//! Replays the inputs kept in `fuzz/regressions/wire_decode/` and
//! `fuzz/regressions/server_messages/` (crashes the fuzzers found and a sample of their corpora)
//! through the harnesses the fuzz targets run (`minka_server::fuzzing`), which assert their
//! properties: decoding never panics and round-trips; the hub never panics or hangs, every frame
//! it sends decodes, and every stored document loads. See docs/FUZZING.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

#[test]
fn wire_decode_inputs_replay_without_panic_and_round_trip() {
    let mut failed = Vec::new();
    let mut decoded = 0;
    for (name, bytes) in inputs("wire_decode") {
        match catch_unwind(|| minka_server::fuzzing::wire_decode(&bytes)) {
            Ok(Some(_)) => decoded += 1,
            Ok(None) => {}
            Err(_) => failed.push(name),
        }
    }
    assert!(failed.is_empty(), "inputs that fail: {failed:?}");
    assert!(decoded > 0, "no kept input is a frame that decodes");
}

#[test]
fn server_messages_inputs_replay_without_panic_and_every_frame_decodes() {
    let mut failed = Vec::new();
    let mut syncs = 0;
    for (name, bytes) in inputs("server_messages") {
        // On a thread of its own, so an input that hangs (the fuzzer's `timeout-` artifacts)
        // fails the test instead of stalling it. The harness's clock is paused: time-based
        // waits take no real time, so 60 s is far more than any input needs.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| {
                minka_server::fuzzing::server_messages(&bytes)
            }));
            let _ = tx.send(r.ok());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Some(n)) => syncs += n,
            Ok(None) => failed.push(name),
            Err(_) => failed.push(format!("{name} (hung for 60 s)")),
        }
    }
    assert!(failed.is_empty(), "inputs that fail: {failed:?}");
    // The kept inputs get the server to sync documents, not only to refuse input.
    assert!(
        syncs > 0,
        "the server sent no sync message for any kept input"
    );
}
