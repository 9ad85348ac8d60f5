package app

import (
	"context"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// decideOn loads the account (its snapshot and the events after it) and decides with fn.
func (a *App) decideOn(ctx context.Context, id uuid.UUID, fn func(acc *domain.Account) error) (*domain.Account, error) {
	acc, err := a.loadAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	return acc, fn(acc)
}

// appendDecided appends events decided on acc at acc's version, with the folded state as the
// new snapshot.
func (a *App) appendDecided(ctx context.Context, acc *domain.Account, actor string, opts []eventstore.AppendOption, events ...domain.Event) (eventstore.AppendResult, error) {
	after := acc.Clone()
	if err := after.ApplyAll(events); err != nil {
		return eventstore.AppendResult{}, err
	}
	r, err := a.store.Append(ctx, []eventstore.StreamAppend{{
		StreamID: domain.StreamID(acc.ID), Expected: eventstore.Exactly(acc.Version),
		Events: toEventData(metadata(ctx, actor), events...), Snapshot: &eventstore.Snapshot{State: after},
	}}, opts...)
	return r, err
}
