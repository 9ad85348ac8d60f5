-- Idempotency keys of commands (sendCoin, buy, grant). A keyed command that succeeds writes its
-- row in the transaction that appends its events, so the key and the effect commit together or
-- not at all; a command the domain refuses writes its row in a short transaction of its own.
-- A later request with the same caller and key replays the stored outcome instead of running
-- again. Rows expire at expires_at: an expired row is ignored (and replaced by a new use of the
-- key) at once, and deleted by a periodic cleanup in the serving processes.
CREATE TABLE idempotency_keys (
    -- The authenticated username that sent the request: keys of different callers never meet.
    caller              text        NOT NULL,
    key                 text        NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255),
    -- SHA-256 over the command and its canonical arguments; another request under the same key
    -- is refused.
    request_hash        bytea       NOT NULL CHECK (octet_length(request_hash) = 32),
    command             text        NOT NULL,
    outcome             text        NOT NULL CHECK (outcome IN ('done', 'refused')),
    -- done: the stream version each account was left at (account id -> version) and the place
    -- of the command's last event in the global log.
    versions            jsonb,
    checkpoint_tx       xid8,
    checkpoint_position bigint,
    -- refused: the domain refusal's kind and the message the caller was given.
    refusal_kind        text,
    refusal_message     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    PRIMARY KEY (caller, key),
    CONSTRAINT idempotency_keys_outcome CHECK (
        (outcome = 'done' AND versions IS NOT NULL AND checkpoint_tx IS NOT NULL AND checkpoint_position IS NOT NULL)
        OR (outcome = 'refused' AND refusal_kind IS NOT NULL AND refusal_message IS NOT NULL))
);

-- The cleanup deletes by expiry.
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

---- create above / drop below ----

DROP TABLE idempotency_keys;
