package app

import (
	"context"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// decideOn loads the account and decides with fn. A state from the cache is only a guess: a
// refusal decided on it is decided again on the stored state, since another process may have
// moved the account. An acceptance needs no such check: its append expects the exact version.
func (a *App) decideOn(ctx context.Context, id uuid.UUID, fn func(acc *domain.Account) error) (*domain.Account, error) {
	acc, cached, err := a.loadAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := fn(acc); err == nil || !cached {
		return acc, err
	}
	a.states.drop(id)
	if acc, _, err = a.loadAccount(ctx, id); err != nil {
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
	a.remember(after, r, err)
	return r, err
}

// remember caches the state an append left the account in, or forgets the account when the
// append failed (a conflict means the cached state, if any, was stale).
func (a *App) remember(after *domain.Account, r eventstore.AppendResult, err error) {
	if err != nil || r.Version(domain.StreamID(after.ID)) != after.Version {
		a.states.drop(after.ID)
		return
	}
	a.states.put(after)
}
