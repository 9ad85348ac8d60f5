package app

import (
	"context"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// AccountEvents returns at most limit events of the account's stream after the stream version
// after, in version order, as stored (payload, metadata, hash).
func (a *App) AccountEvents(ctx context.Context, accountID uuid.UUID, after int64, limit int) ([]eventstore.RecordedEvent, error) {
	var page []eventstore.RecordedEvent
	err := a.read(ctx, func(ctx context.Context, on reader) (err error) {
		page, err = on.store.LoadPage(ctx, domain.StreamID(accountID), after, limit)
		return err
	})
	return page, err
}

// ReadAccountEvents calls fn with each of the account's events after the stream version after,
// at most limit of them (limit <= 0: all), in version order, as stored: for a reader that goes
// through a long stream once and keeps little of each event (eventstore.ReadStream: the event
// is the store's to reuse once fn returns). A read that fails on a standby goes on on the
// primary after the last event fn saw, so fn sees each event once.
func (a *App) ReadAccountEvents(ctx context.Context, accountID uuid.UUID, after int64, limit int, fn func(*eventstore.RecordedEvent)) error {
	seen := after
	return a.read(ctx, func(ctx context.Context, on reader) error {
		rest := limit
		if limit > 0 {
			if rest -= int(seen - after); rest <= 0 {
				return nil
			}
		}
		return on.store.ReadStream(ctx, domain.StreamID(accountID), seen, rest, func(e *eventstore.RecordedEvent) error {
			fn(e)
			seen = e.Version
			return nil
		})
	})
}

// AuditLog returns at most limit events of the global log after the checkpoint, in the order
// every reader of the log uses: (transaction, position), below the oldest running transaction,
// so that no event is ever skipped. A short page means the reader has caught up for now.
func (a *App) AuditLog(ctx context.Context, after eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error) {
	var page []eventstore.RecordedEvent
	err := a.read(ctx, func(ctx context.Context, on reader) (err error) {
		page, err = on.store.ReadLog(ctx, after, limit)
		return err
	})
	return page, err
}

// AuditLogBefore returns at most limit events of the global log before the checkpoint, newest
// first (the zero Checkpoint: from the end of the readable log), for people paging backwards.
func (a *App) AuditLogBefore(ctx context.Context, before eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error) {
	var page []eventstore.RecordedEvent
	err := a.read(ctx, func(ctx context.Context, on reader) (err error) {
		page, err = on.store.ReadLogBefore(ctx, before, limit)
		return err
	})
	return page, err
}
