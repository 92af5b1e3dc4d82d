//! Replays the inputs kept in `fuzz/regressions/permission_check/` (crashes the fuzzer found and
//! a sample of its corpus) through the harness the `permission_check` fuzz target runs
//! (`crdt_core::fuzzing::permission_check`, which asserts that judging is deterministic and
//! independent of the order of the batch). See docs/FUZZING.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use crdt_core::permissions::Decision;

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
fn permission_check_inputs_replay_without_panic_and_judge_deterministically() {
    let mut failed = Vec::new();
    let (mut allowed, mut denied) = (0, 0);
    for (name, bytes) in inputs("permission_check") {
        match catch_unwind(AssertUnwindSafe(|| {
            crdt_core::fuzzing::permission_check(&bytes)
        })) {
            Ok(Some(Decision::Allowed)) => allowed += 1,
            Ok(Some(Decision::Denied(_))) => denied += 1,
            Ok(_) => {}
            Err(_) => failed.push(name),
        }
    }
    assert!(failed.is_empty(), "inputs that fail: {failed:?}");
    // The kept inputs reach the rules, both ways (not just the input reader).
    assert!(allowed > 0, "no kept input is allowed");
    assert!(denied > 0, "no kept input is denied");
}
