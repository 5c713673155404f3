-- Signed checkpoints of the audit chain (store/src/checkpoints.rs). A checkpoint says "the
-- chain had this hash at this place", signed with a dedicated audit key, so rewriting the whole
-- chain or cutting off its tail is detected too. A 'base' checkpoint is where a pruned trail
-- now starts.
CREATE TABLE audit_signing_keys (
    kid TEXT PRIMARY KEY,
    -- PKCS#8, sealed by the master key (bound to 'portcullis/audit-signing-key/<kid>'): a key
    -- written here by anyone without the master key does not open, so cannot vouch.
    private_key_sealed BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    hash BLOB NOT NULL,
    signed_at BIGINT NOT NULL,
    kid TEXT NOT NULL,
    signature BLOB NOT NULL
);
