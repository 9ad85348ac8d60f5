-- Which version of each projection serves reads. A rebuild fills the next version's tables
-- beside the live one, then switches this row; every process follows it.
CREATE TABLE projection_versions (
    name           text        PRIMARY KEY,
    active_version integer     NOT NULL CHECK (active_version > 0),
    switched_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO projection_versions (name, active_version) VALUES ('balance', 1), ('inventory', 1), ('history', 1);

-- Balance, version 2: the coins and each account's totals received, sent and spent.
CREATE TABLE balance_v2 (
    account_id uuid   PRIMARY KEY,
    username   text   NOT NULL,
    coins      bigint NOT NULL CHECK (coins >= 0),
    received   bigint NOT NULL CHECK (received >= 0),
    sent       bigint NOT NULL CHECK (sent >= 0),
    spent      bigint NOT NULL CHECK (spent >= 0)
) WITH (fillfactor = 80);

-- Rows the projectors update in place keep room on their page, so that updates stay HOT
-- (no index entry per update).
ALTER TABLE projection_heads SET (fillfactor = 80);
ALTER TABLE balance_v1 SET (fillfactor = 80);
ALTER TABLE inventory_v1 SET (fillfactor = 80);

---- create above / drop below ----

ALTER TABLE inventory_v1 RESET (fillfactor);
ALTER TABLE balance_v1 RESET (fillfactor);
ALTER TABLE projection_heads RESET (fillfactor);
DROP TABLE balance_v2, projection_versions;
