-- Identity, the catalog, and the projections' read models.

-- Identity is not ledger data: it lives beside the log, created in the same transaction as the
-- account's first events.
CREATE TABLE users (
    username      text        PRIMARY KEY,
    account_id    uuid        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Prices are read when a purchase is decided; the price paid is recorded in the event.
CREATE TABLE catalog (
    item  text   PRIMARY KEY,
    price bigint NOT NULL CHECK (price > 0)
);

INSERT INTO catalog (item, price) VALUES
    ('t-shirt', 80), ('cup', 20), ('book', 50), ('pen', 10), ('powerbank', 200),
    ('hoody', 300), ('umbrella', 200), ('socks', 10), ('wallet', 50), ('pink-hoody', 500);

-- One row per projection version (consumer group): its place in the global log. It moves in the
-- same transaction as the read-model writes it covers.
CREATE TABLE projection_checkpoints (
    consumer_group text        PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0',
    position       bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- What operators see of each projection version: live or failed, and why.
CREATE TABLE projection_status (
    consumer_group  text        PRIMARY KEY,
    state           text        NOT NULL CHECK (state IN ('live', 'failed', 'rebuilding', 'retired')),
    failures        integer     NOT NULL DEFAULT 0,
    failed_position bigint,
    failed_event_id uuid,
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Per projection version and account: the stream version applied. Read-your-writes compares it
-- with the stream head; the projector refuses to apply an event that is not the next one.
CREATE TABLE projection_heads (
    consumer_group text   NOT NULL,
    account_id     uuid   NOT NULL,
    version        bigint NOT NULL,
    PRIMARY KEY (consumer_group, account_id)
);

CREATE TABLE balance_v1 (
    account_id uuid   PRIMARY KEY,
    username   text   NOT NULL,
    coins      bigint NOT NULL CHECK (coins >= 0)
);

CREATE TABLE inventory_v1 (
    account_id uuid   NOT NULL,
    item       text   NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (account_id, item)
);

-- One row per transfer. Each party's stream version is filled when that party's half is
-- applied, so a reader can tell which rows its account's applied version already covers.
CREATE TABLE history_v1 (
    transfer_id   uuid        PRIMARY KEY,
    from_id       uuid        NOT NULL,
    from_username text        NOT NULL,
    from_version  bigint,
    to_id         uuid        NOT NULL,
    to_username   text        NOT NULL,
    to_version    bigint,
    amount        bigint      NOT NULL CHECK (amount > 0),
    at            timestamptz NOT NULL,
    position      bigint      NOT NULL
);
CREATE INDEX history_v1_from ON history_v1 (from_id, position);
CREATE INDEX history_v1_to ON history_v1 (to_id, position);

---- create above / drop below ----

DROP TABLE history_v1, inventory_v1, balance_v1, projection_heads, projection_status,
    projection_checkpoints, catalog, users;
