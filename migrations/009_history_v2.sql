-- Coin history, version 2: each account's own entries, in its stream's order, as pages of
-- parallel arrays. An account's whole history reads in one index range of a few rows (one per
-- 16 entries), however long the log grows; version 1 (one row per transfer,
-- found through two indexes) costs a heap fetch per transfer on every read. Appending rewrites
-- only the last page, which stays under the size at which PostgreSQL moves values out of line.
-- Entry i of a page is (versions[i], sent[i], counterparts[i], amounts[i], transfer_ids[i],
-- ats[i]): the account's stream version of its half of the transfer, whether it sent, the
-- other party's name, the amount, the transfer and when it was recorded.
CREATE TABLE history_v2 (
    account_id   uuid          NOT NULL,
    page         integer       NOT NULL CHECK (page >= 0),
    versions     bigint[]      NOT NULL,
    sent         boolean[]     NOT NULL,
    counterparts text[]        NOT NULL,
    amounts      bigint[]      NOT NULL,
    transfer_ids uuid[]        NOT NULL,
    ats          timestamptz[] NOT NULL,
    PRIMARY KEY (account_id, page),
    CHECK (cardinality(versions) BETWEEN 1 AND 16
           AND cardinality(sent) = cardinality(versions) AND cardinality(counterparts) = cardinality(versions)
           AND cardinality(amounts) = cardinality(versions) AND cardinality(transfer_ids) = cardinality(versions)
           AND cardinality(ats) = cardinality(versions))
) WITH (fillfactor = 70);

-- Concatenates arrays in the order given: an account's pages read back as one array each
-- (array_cat_agg(amounts ORDER BY page)), without unnesting and sorting every entry.
CREATE AGGREGATE array_cat_agg(anycompatiblearray) (SFUNC = array_cat, STYPE = anycompatiblearray);

-- A database that holds no events yet serves version 2 from the start; one that does keeps
-- version 1 until an operator rebuilds (ledger projections rebuild history), without downtime.
UPDATE projection_versions SET active_version = 2, switched_at = now()
WHERE name = 'history' AND NOT EXISTS (SELECT 1 FROM events);

---- create above / drop below ----

UPDATE projection_versions SET active_version = 1, switched_at = now() WHERE name = 'history' AND active_version = 2;
DROP AGGREGATE array_cat_agg(anycompatiblearray);
DROP TABLE history_v2;
