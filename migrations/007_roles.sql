-- Roles beside identity: which employees may do what beyond their own account. Operators give
-- and take them (`ledger users …`); signing up never does. Like identity, roles are not ledger
-- data.
CREATE TABLE user_roles (
    username   text        NOT NULL REFERENCES users (username),
    role       text        NOT NULL CHECK (role IN ('admin', 'auditor')),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, role)
);

-- Every creation, grant and revocation, in the order they happened: who did it (the operator's
-- name, the operating-system user that ran the command, the database role it connected as),
-- when, and what. Written in the same statement as the change it records.
CREATE TABLE role_changes (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    action   text        NOT NULL CHECK (action IN ('create', 'grant', 'revoke')),
    username text        NOT NULL,
    role     text        NOT NULL CHECK (role IN ('admin', 'auditor')),
    actor    text        NOT NULL CHECK (actor <> ''),
    os_user  text        NOT NULL DEFAULT '',
    db_user  text        NOT NULL DEFAULT session_user
);
CREATE INDEX role_changes_username ON role_changes (username, id);

-- The record is append-only, guarded by the event log's own guard, which now names the table
-- it refuses a change to. Replication-role sessions (restores) bypass triggers, as they should.
CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER role_changes_append_only
    BEFORE UPDATE OR DELETE ON role_changes
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER role_changes_no_truncate
    BEFORE TRUNCATE ON role_changes
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

---- create above / drop below ----

DROP TABLE role_changes, user_roles;
CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
