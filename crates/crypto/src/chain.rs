//! The audit trail's hash chain: each record's hash covers the one before it, so altering,
//! removing, inserting or moving a record changes every hash after it.

use aws_lc_rs::digest as lc_digest;

/// A link of the chain: SHA-256 over a version tag, the previous record's hash and the
/// record's canonical encoding. The hash before the first record is all zeros.
pub type ChainHash = [u8; 32];

/// What comes before the first record.
pub const CHAIN_START: ChainHash = [0; 32];

const TAG: &[u8] = b"portcullis audit chain v1\n";

/// The hash of a record whose canonical encoding is `record`, after `previous`.
pub fn chain_link(previous: &ChainHash, record: &[u8]) -> ChainHash {
    let mut context = lc_digest::Context::new(&lc_digest::SHA256);
    context.update(TAG);
    context.update(previous);
    context.update(record);
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

const CHECKPOINT_TAG: &[u8] = b"portcullis audit checkpoint v1\n";

/// What an audit checkpoint's signature covers: its kind (`periodic`, or `base` where a pruned
/// trail now starts), the place and hash of the chain there, and when it was signed.
pub fn checkpoint_message(kind: &str, seq: i64, hash: &ChainHash, signed_at: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_TAG.len() + 8 + kind.len() + 8 + 32 + 8);
    out.extend_from_slice(CHECKPOINT_TAG);
    out.extend_from_slice(&(kind.len() as u64).to_be_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(&signed_at.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_link_depends_on_the_one_before_and_on_every_byte() {
        let first = chain_link(&CHAIN_START, b"a");
        assert_ne!(first, chain_link(&CHAIN_START, b"b"));
        assert_ne!(chain_link(&first, b"a"), chain_link(&CHAIN_START, b"a"));
        assert_eq!(first, chain_link(&CHAIN_START, b"a"), "deterministic");
    }

    #[test]
    fn a_checkpoint_message_covers_each_of_its_parts() {
        let base = checkpoint_message("periodic", 7, &CHAIN_START, 100);
        assert_ne!(base, checkpoint_message("base", 7, &CHAIN_START, 100));
        assert_ne!(base, checkpoint_message("periodic", 8, &CHAIN_START, 100));
        assert_ne!(base, checkpoint_message("periodic", 7, &[1; 32], 100));
        assert_ne!(base, checkpoint_message("periodic", 7, &CHAIN_START, 101));
    }
}
