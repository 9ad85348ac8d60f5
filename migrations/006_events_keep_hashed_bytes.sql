-- Events keep the exact bytes their hash covers (ADR 7). Rows written before this migration
-- keep hash rule 1 (payload and metadata in jsonb, hashed in a canonical re-encoding); appends
-- from now on write rule 2: payload and metadata as bytes, hashed as they are stored, and the
-- jsonb columns stay NULL. Nothing is rewritten: a column with a constant default, a dropped
-- NOT NULL and a NOT VALID check are catalog changes, and the table's lock is held only for
-- them (lock_timeout: rather fail and run again than queue every append behind a long reader).
SET LOCAL lock_timeout = '10s';

ALTER TABLE events
    -- The rule the row's hash was computed under. The default marks the rows already there,
    -- and the rows of a binary older than this migration that still appends during an upgrade.
    ADD COLUMN hash_version smallint NOT NULL DEFAULT 1,
    ADD COLUMN payload_bytes bytea,
    ADD COLUMN metadata_bytes bytea,
    ALTER COLUMN payload DROP NOT NULL,
    ALTER COLUMN metadata DROP NOT NULL,
    -- Each rule's documents in its own columns, the other pair empty. NOT VALID: checked for
    -- every new row, without a scan of the old ones (which all hold rule 1).
    ADD CONSTRAINT events_hash_version_documents CHECK (CASE hash_version
        WHEN 1 THEN payload IS NOT NULL AND metadata IS NOT NULL AND payload_bytes IS NULL AND metadata_bytes IS NULL
        WHEN 2 THEN payload IS NULL AND metadata IS NULL AND payload_bytes IS NOT NULL AND metadata_bytes IS NOT NULL
        ELSE false END) NOT VALID;

---- create above / drop below ----

-- Refused (SET NOT NULL fails, and nothing is dropped) once an event of rule 2 exists.
ALTER TABLE events
    DROP CONSTRAINT events_hash_version_documents,
    ALTER COLUMN metadata SET NOT NULL,
    ALTER COLUMN payload SET NOT NULL,
    DROP COLUMN metadata_bytes,
    DROP COLUMN payload_bytes,
    DROP COLUMN hash_version;
