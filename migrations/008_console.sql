-- The console's sessions, and the index its account search pages through.
--
-- A session is known by the SHA-256 of its cookie's value, never the value itself: a copy of
-- the table signs no one in. It ends at expires_at (the token lifetime from sign-in), or when
-- its employee signs out, whichever comes first; the CSRF token is the one every form of the
-- session must carry.
CREATE TABLE console_sessions (
    id_hash    bytea       PRIMARY KEY,
    username   text        NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    csrf_token text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

-- Search by name prefix, in name order, whatever the database's collation: a byte-ordered index
-- serves both the prefix (LIKE 'ab%') and the keyset paging (username > the last one shown).
CREATE INDEX users_username_bytes ON users (username COLLATE "C");

---- create above / drop below ----

DROP INDEX users_username_bytes;
DROP TABLE console_sessions;
