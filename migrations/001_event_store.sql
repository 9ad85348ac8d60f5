-- The event store: an append-only log of events plus one head row per stream.
--
-- events.transaction_id is the writing transaction's xid8. Asynchronous readers order the log by
-- (transaction_id, global_position) and only read rows below pg_snapshot_xmin(pg_current_snapshot()),
-- so an event whose transaction commits late is never skipped.

CREATE TABLE streams (
    stream_id        text        PRIMARY KEY,
    -- Number of events in the stream; the next event gets version + 1.
    version          bigint      NOT NULL CHECK (version >= 0),
    -- Hash of the stream's last event: the link the next event chains to.
    last_hash        bytea,
    -- Folded aggregate state as of snapshot_version, written in the append transaction.
    snapshot         jsonb,
    snapshot_version bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    -- SHA-256 over the previous event's hash (same stream) and this event's canonical encoding.
    hash            bytea       NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- The order every asynchronous reader walks the log in.
CREATE INDEX events_log_order ON events (transaction_id, global_position);

-- The log is append-only. Replication-role sessions (restores) bypass triggers, as they should.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

---- create above / drop below ----

DROP TABLE events;
DROP TABLE streams;
DROP FUNCTION events_refuse_change();
