-- The audit trail becomes a hash chain: each record has its place (seq, one order every node
-- agrees on, given out under the lock of audit_chain_head) and the hash of its canonical form
-- after the previous record's hash (store/src/chain.rs). Records written before this
-- migration are chained, in id order, when the store is migrated (Store::migrate).
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN hash BYTEA;
CREATE UNIQUE INDEX audit_events_seq ON audit_events (seq);
CREATE TABLE audit_chain_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    -- Empty before the first record (the chain starts from 32 zero bytes).
    hash BYTEA NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, ''::bytea);
