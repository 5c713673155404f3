-- Grants made by an identity assertion (SEP-990, the ID-JAG): a new kind. Keep in step with
-- ../sqlite.
ALTER TABLE grants DROP CONSTRAINT grants_kind_check;
ALTER TABLE grants ADD CONSTRAINT grants_kind_check
    CHECK (kind IN ('authorization_code', 'client_credentials', 'identity_assertion'));
