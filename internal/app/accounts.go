package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// Identity is an employee's login record; it is not ledger data.
type Identity struct {
	Username     string
	AccountID    uuid.UUID
	PasswordHash string
}

// LookupIdentity returns the identity of username, or domain.ErrUnknownAccount.
func (a *App) LookupIdentity(ctx context.Context, username string) (Identity, error) {
	var id Identity
	err := a.pool.QueryRow(ctx, `SELECT username, account_id, password_hash FROM users WHERE username = $1`, username).
		Scan(&id.Username, &id.AccountID, &id.PasswordHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return Identity{}, fmt.Errorf("%w: %q", domain.ErrUnknownAccount, username)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("look up %q: %w", username, err)
	}
	a.users.put(id.Username, id.AccountID)
	return id, nil
}

// AccountID returns the account id of username, or domain.ErrUnknownAccount.
func (a *App) AccountID(ctx context.Context, username string) (uuid.UUID, error) {
	if id, ok := a.users.get(username); ok {
		return id, nil
	}
	var id uuid.UUID
	err := a.pool.QueryRow(ctx, `SELECT account_id FROM users WHERE username = $1`, username).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, fmt.Errorf("%w: %q", domain.ErrUnknownAccount, username)
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("look up %q: %w", username, err)
	}
	a.users.put(username, id)
	return id, nil
}

// OpenAccount creates the employee's identity and opens the account with the welcome grant, in
// one transaction. A username taken meanwhile is domain.ErrAccountExists.
func (a *App) OpenAccount(ctx context.Context, username, passwordHash string) (uuid.UUID, Result, error) {
	return a.openAccount(ctx, username, passwordHash, nil)
}

// openAccount is OpenAccount, running also (when not nil) in its transaction after the identity
// is written.
func (a *App) openAccount(ctx context.Context, username, passwordHash string, also func(context.Context, pgx.Tx) error) (uuid.UUID, Result, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.Nil, Result{}, err
	}
	events, err := domain.OpenAccount(id, username)
	if err != nil {
		return uuid.Nil, Result{}, err
	}
	acc := &domain.Account{}
	if err := acc.ApplyAll(events); err != nil {
		return uuid.Nil, Result{}, err
	}
	a.stats.commands.Add(1)
	res, err := a.store.Append(ctx, []eventstore.StreamAppend{{
		StreamID: domain.StreamID(id), Expected: eventstore.NoStream(),
		Events:   toEventData(metadata(ctx, username), events...),
		Snapshot: &eventstore.Snapshot{State: acc},
	}}, eventstore.InTransaction(func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO users (username, account_id, password_hash) VALUES ($1, $2, $3)`,
			username, id, passwordHash)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "users_pkey" {
			return fmt.Errorf("%w: %q", domain.ErrAccountExists, username)
		}
		if err != nil || also == nil {
			return err
		}
		return also(ctx, tx)
	}))
	if err != nil {
		return uuid.Nil, Result{}, err
	}
	a.users.put(username, id)
	return id, resultOf(res, id), nil
}
