package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
)

// AccountSummary is one line of the list of accounts: who, the balance the active balance read
// model holds, and when the account's stream last changed.
type AccountSummary struct {
	Username     string
	AccountID    uuid.UUID
	Coins        int64
	LastActivity time.Time
}

// Accounts returns at most limit employees whose names start with prefix, in name (byte) order
// after the name after ("" for the first page).
func (a *App) Accounts(ctx context.Context, prefix, after string, limit int) ([]AccountSummary, error) {
	rs, err := a.readSet(ctx)
	if err != nil {
		return nil, err
	}
	q, err := rs.versions.AccountsSQL()
	if err != nil {
		return nil, err
	}
	pattern := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(prefix) + "%"
	rows, err := a.pool.Query(ctx, q, pattern, after, limit, domain.StreamPrefix)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AccountSummary, error) {
		var s AccountSummary
		err := r.Scan(&s.Username, &s.AccountID, &s.Coins, &s.LastActivity)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	return out, nil
}

// Usernames returns the names of the accounts ids that have one.
func (a *App) Usernames(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]string, error) {
	out := make(map[uuid.UUID]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := a.pool.Query(ctx, `SELECT account_id, username FROM users WHERE account_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("names of accounts: %w", err)
	}
	var id uuid.UUID
	var name string
	if _, err := pgx.ForEachRow(rows, []any{&id, &name}, func() error { out[id] = name; return nil }); err != nil {
		return nil, fmt.Errorf("names of accounts: %w", err)
	}
	return out, nil
}
