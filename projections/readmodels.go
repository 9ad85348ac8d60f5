package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/eventstore"
)

// The read models' SQL lives here, beside the statements that write them: a reader asks for
// what it needs over the active versions and never names a table.

// infoSQL reads, in one statement (one snapshot), for each account of $1 (with its stream id
// in $2), the account's stream head, and each read model with the stream version its
// projector has applied for the account. Inventory and history come back as parallel arrays
// (binary, no JSON to build or parse), history in the account's order. %[1]s/%[2]s are the
// balance table and group, %[3]s/%[4]s the inventory's, %[5]s the history's group and %[6]s
// its read (historyReads). An account without a stream gets head 0.
const infoSQL = `
SELECT q.account_id, COALESCE(st.version, 0),
       COALESCE(hb.version, 0), COALESCE(b.coins, 0),
       COALESCE(hi.version, 0), inv.items, inv.quantities,
       COALESCE(hh.version, 0), hist.sent, hist.counterparts, hist.amounts
FROM unnest($1::uuid[], $2::text[]) AS q(account_id, stream_id)
LEFT JOIN streams st ON st.stream_id = q.stream_id
LEFT JOIN projection_heads hb ON hb.consumer_group = '%[2]s' AND hb.account_id = q.account_id
LEFT JOIN %[1]s b ON b.account_id = q.account_id
LEFT JOIN projection_heads hi ON hi.consumer_group = '%[4]s' AND hi.account_id = q.account_id
LEFT JOIN projection_heads hh ON hh.consumer_group = '%[5]s' AND hh.account_id = q.account_id
CROSS JOIN LATERAL (
    SELECT array_agg(i.item ORDER BY i.item) AS items, array_agg(i.quantity ORDER BY i.item) AS quantities
    FROM %[3]s i WHERE i.account_id = q.account_id) inv
CROSS JOIN LATERAL (%[6]s) hist`

// historyReads is, by history version, the subquery of infoSQL that returns the account
// q.account_id's coin history as (sent, counterparts, amounts), oldest first.
var historyReads = map[int]string{
	// A transfer's row counts for an account once that account's half is applied (hh), so a
	// half-projected transfer never shows on one side early. It costs a heap fetch per
	// transfer: version 2 replaces it.
	1: `SELECT array_agg(h.from_id = q.account_id ORDER BY h.position, h.transfer_id) AS sent,
           array_agg(CASE WHEN h.from_id = q.account_id THEN h.to_username ELSE h.from_username END
                     ORDER BY h.position, h.transfer_id) AS counterparts,
           array_agg(h.amount ORDER BY h.position, h.transfer_id) AS amounts
    FROM history_v1 h
    WHERE (h.from_id = q.account_id AND h.from_version <= COALESCE(hh.version, 0))
       OR (h.to_id = q.account_id AND h.to_version <= COALESCE(hh.version, 0))`,
	// The account's pages, one index range, concatenated in order (array_cat_agg, migration
	// 009); every entry is of a version already applied. Unnesting the entries and ordering
	// them again cost 1.5× the fresh read's p99 at 60 entries; this reads flat (ADR 16).
	2: `SELECT array_cat_agg(h.sent ORDER BY h.page) AS sent, array_cat_agg(h.counterparts ORDER BY h.page) AS counterparts,
           array_cat_agg(h.amounts ORDER BY h.page) AS amounts
    FROM history_v2 h WHERE h.account_id = q.account_id`,
}

// InfoSQL returns the statement that reads accounts' read models over the active versions.
// Its arguments are the accounts ($1, uuid[]) and their stream ids ($2, text[]); each row is
// the account, its stream head (0: no stream), the balance's applied version and coins, the
// inventory's applied version, items and quantities, and the history's applied version and
// parallel arrays sent, counterparts and amounts (NULL when empty).
func (a Active) InfoSQL() (string, error) {
	b, i, h, err := a.Served()
	if err != nil {
		return "", err
	}
	read, ok := historyReads[h.Version]
	if !ok {
		return "", fmt.Errorf("projections: no read of %s", h.Group())
	}
	return fmt.Sprintf(infoSQL, b.Table(), b.Group(), i.Table(), i.Group(), h.Group(), read), nil
}

// accountsSQL pages through the employees whose names start with $1 (a LIKE pattern), in byte
// order after $2, at most $3, through users_username_bytes; $4 is how account streams' ids
// start. %s is the active balance table.
const accountsSQL = `
SELECT u.username, u.account_id, COALESCE(b.coins, 0), COALESCE(s.updated_at, u.created_at)
FROM users u
LEFT JOIN streams s ON s.stream_id = $4 || u.account_id::text
LEFT JOIN %s b ON b.account_id = u.account_id
WHERE u.username COLLATE "C" LIKE $1 AND u.username COLLATE "C" > $2
ORDER BY u.username COLLATE "C"
LIMIT $3`

// AccountsSQL returns the statement that lists employees with their balance in the active
// balance version: its arguments are a LIKE pattern, the name to start after, the most rows
// and the account streams' id prefix; each row is name, account, coins and last activity.
func (a Active) AccountsSQL() (string, error) {
	p, err := a.Serving("balance")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(accountsSQL, pgx.Identifier{p.Table()}.Sanitize()), nil
}

// ReadHistory calls fn with every entry of every account's coin history in p's read model, read
// through q, as far as each account's half of a transfer is applied.
func ReadHistory(ctx context.Context, q eventstore.Querier, p Projection, fn func(account uuid.UUID, e HistoryEntry)) error {
	var err error
	switch p.Version {
	case 1:
		var (
			transfer, fromID, toID uuid.UUID
			fromName, toName       string
			fromVersion, toVersion *int64
			amount                 int64
			at                     time.Time
		)
		rows, _ := q.Query(ctx, `SELECT transfer_id, from_id, from_username, from_version, to_id, to_username, to_version, amount, at
			FROM history_v1`)
		_, err = pgx.ForEachRow(rows, []any{&transfer, &fromID, &fromName, &fromVersion, &toID, &toName, &toVersion, &amount, &at}, func() error {
			if fromVersion != nil {
				fn(fromID, HistoryEntry{Version: *fromVersion, Sent: true, Counterpart: toName, Amount: amount, Transfer: transfer, At: at})
			}
			if toVersion != nil {
				fn(toID, HistoryEntry{Version: *toVersion, Counterpart: fromName, Amount: amount, Transfer: transfer, At: at})
			}
			return nil
		})
	case 2:
		var (
			account uuid.UUID
			e       HistoryEntry
		)
		rows, _ := q.Query(ctx, `SELECT h.account_id, u.* FROM history_v2 h
			CROSS JOIN LATERAL unnest(h.versions, h.sent, h.counterparts, h.amounts, h.transfer_ids, h.ats) AS u`)
		_, err = pgx.ForEachRow(rows, []any{&account, &e.Version, &e.Sent, &e.Counterpart, &e.Amount, &e.Transfer, &e.At}, func() error {
			fn(account, e)
			return nil
		})
	default:
		return fmt.Errorf("projections: no read of %s", p.Group())
	}
	if err != nil {
		return fmt.Errorf("projections: read %s: %w", p.Group(), err)
	}
	return nil
}

// ReadBalances calls fn with every account's row of p's balance read model, read through q.
func ReadBalances(ctx context.Context, q eventstore.Querier, p Projection, fn func(account uuid.UUID, username string, coins int64)) error {
	return readRows(ctx, q, p, "username, coins", fn)
}

// ReadInventories calls fn with every holding in p's inventory read model, read through q.
func ReadInventories(ctx context.Context, q eventstore.Querier, p Projection, fn func(account uuid.UUID, item string, quantity int64)) error {
	return readRows(ctx, q, p, "item, quantity", fn)
}

// readRows calls fn with the account and the two columns cols (a text, a bigint) of every row
// of p's table.
func readRows(ctx context.Context, q eventstore.Querier, p Projection, cols string, fn func(uuid.UUID, string, int64)) error {
	var (
		account uuid.UUID
		text    string
		n       int64
	)
	rows, _ := q.Query(ctx, `SELECT account_id, `+cols+` FROM `+pgx.Identifier{p.table}.Sanitize())
	if _, err := pgx.ForEachRow(rows, []any{&account, &text, &n}, func() error {
		fn(account, text, n)
		return nil
	}); err != nil {
		return fmt.Errorf("projections: read %s: %w", p.Group(), err)
	}
	return nil
}
