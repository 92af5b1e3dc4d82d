//! Limits on what a peer's sync message may ask of the server before automerge sees it.
//!
//! automerge trusts the parameters of a peer's Bloom filter: a filter with zero bits per entry
//! makes its probe arithmetic divide by zero (a panic in the document's task), and one declaring
//! billions of probes makes every lookup allocate and loop that many times. Honest peers (the JS
//! and Rust automerge) send one filter with 10 bits per entry and 7 probes; these limits leave
//! room for other tunings and refuse the rest, naming what is wrong. Heads are bounded too: each
//! peer's claimed heads are kept in its sync state and asked for.

use automerge::sync;

/// Most heads one message may claim (a document's heads are its concurrent branches: a handful).
pub const MAX_HEADS: usize = 1024;
/// Most `have` entries in one message (automerge sends one).
pub const MAX_HAVES: usize = 64;
/// Most Bloom filter probes per hash (automerge uses 7).
pub const MAX_PROBES: u32 = 64;
/// Most Bloom filter bits per entry (automerge uses 10).
pub const MAX_BITS_PER_ENTRY: u32 = 64;

/// The message if its `have` entries are within limits, else why not.
pub fn checked(msg: sync::Message) -> Result<sync::Message, String> {
    if msg.heads.len() > MAX_HEADS {
        return Err(format!(
            "{} heads; at most {MAX_HEADS} are accepted",
            msg.heads.len()
        ));
    }
    let last_sync: usize = msg.have.iter().map(|h| h.last_sync.len()).sum();
    if last_sync > MAX_HEADS {
        return Err(format!(
            "{last_sync} `have` heads; at most {MAX_HEADS} are accepted"
        ));
    }
    if msg.have.len() > MAX_HAVES {
        return Err(format!(
            "{} `have` entries; at most {MAX_HAVES} are accepted",
            msg.have.len()
        ));
    }
    for have in &msg.have {
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            continue; // an empty filter: nothing is probed
        }
        let mut rest = &bytes[..];
        let (Some(_entries), Some(bits_per_entry), Some(probes)) = (
            leb128_u32(&mut rest),
            leb128_u32(&mut rest),
            leb128_u32(&mut rest),
        ) else {
            return Err("unreadable Bloom filter".into());
        };
        if bits_per_entry == 0 || bits_per_entry > MAX_BITS_PER_ENTRY {
            return Err(format!(
                "Bloom filter with {bits_per_entry} bits per entry; 1 to {MAX_BITS_PER_ENTRY} are accepted"
            ));
        }
        if probes > MAX_PROBES {
            return Err(format!(
                "Bloom filter with {probes} probes; at most {MAX_PROBES} are accepted"
            ));
        }
    }
    Ok(msg)
}

/// Reads one unsigned LEB128 value that fits in 32 bits.
pub(crate) fn leb128_u32(input: &mut &[u8]) -> Option<u32> {
    let mut value: u64 = 0;
    for (i, byte) in input.iter().enumerate().take(5) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return u32::try_from(value).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ChangeHash;

    /// A sync message with one `have` whose filter is given as raw bytes.
    fn with_bloom(bloom: &[u8]) -> Vec<u8> {
        let mut out = vec![0x42, 0, 0, 1, 0, bloom.len() as u8];
        out.extend_from_slice(bloom);
        out.push(0); // no changes
        out
    }

    #[test]
    fn refuses_filters_that_would_panic_or_spin() {
        // 1 entry, 0 bits per entry: the probe modulo would be zero.
        let m = sync::Message::decode(&with_bloom(&[1, 0, 7])).unwrap();
        assert!(checked(m).unwrap_err().contains("0 bits per entry"));
        // 1 entry, 8 bits, u32::MAX probes.
        let m = sync::Message::decode(&with_bloom(&[1, 8, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xaa]))
            .unwrap();
        assert!(checked(m).unwrap_err().contains("4294967295 probes"));
    }

    #[test]
    fn accepts_what_automerge_sends() {
        let hashes: Vec<ChangeHash> = (0..50u8).map(|i| ChangeHash([i; 32])).collect();
        let mut m = sync::Message::decode(&with_bloom(&[])).unwrap();
        m.have[0].bloom = sync::BloomFilter::from_hashes(hashes.iter());
        let m = sync::Message::decode(&m.encode()).unwrap();
        assert!(checked(m).is_ok());
    }
}
