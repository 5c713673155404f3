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
}
