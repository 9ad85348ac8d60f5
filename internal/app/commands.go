package app

import (
	"context"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// Buy debits the account with the item's catalog price and records the purchase. Under an
// idempotency key (WithIdempotencyKey) it runs at most once per key.
func (a *App) Buy(ctx context.Context, accountID uuid.UUID, item string) (Result, error) {
	return a.idempotent(ctx, commandRequest{Command: "buy", Item: item}, func(k *keyed) (Result, error) {
		return a.buy(ctx, accountID, item, k)
	})
}

func (a *App) buy(ctx context.Context, accountID uuid.UUID, item string, k *keyed) (Result, error) {
	catalog, err := a.Catalog(ctx)
	if err != nil {
		return Result{}, err
	}
	if _, err := catalog.Price(item); err != nil {
		return Result{}, err // refused before loading anything
	}
	var res Result
	err = a.retry(ctx, []uuid.UUID{accountID}, func() error {
		var events []domain.Event
		acc, err := a.decideOn(ctx, accountID, func(acc *domain.Account) (err error) {
			events, err = acc.Buy(item, catalog)
			return err
		})
		if err != nil {
			return err
		}
		r, err := a.appendDecided(ctx, acc, acc.Username, k.record(accountID), events...)
		res = resultOf(r, accountID)
		return err
	})
	return res, err
}

// Grant adds coins to the account of toUser, by an admin, for a reason. Under an idempotency
// key it runs at most once per key.
func (a *App) Grant(ctx context.Context, admin, toUser string, amount domain.Coins, reason string) (Result, error) {
	req := commandRequest{Command: "grant", ToUser: toUser, Amount: int64(amount), Reason: reason}
	return a.idempotent(ctx, req, func(k *keyed) (Result, error) {
		return a.grant(ctx, admin, toUser, amount, reason, k)
	})
}

func (a *App) grant(ctx context.Context, admin, toUser string, amount domain.Coins, reason string, k *keyed) (Result, error) {
	id, err := a.AccountID(ctx, toUser)
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = a.retry(ctx, []uuid.UUID{id}, func() error {
		var events []domain.Event
		acc, err := a.decideOn(ctx, id, func(acc *domain.Account) (err error) {
			events, err = acc.Grant(amount, reason, admin)
			return err
		})
		if err != nil {
			return err
		}
		r, err := a.appendDecided(ctx, acc, admin, k.record(id), events...)
		res = resultOf(r, id)
		return err
	})
	return res, err
}

// Transfer moves amount from the sender's account to toUser's in one atomic two-stream append.
// The sender's version is exact (its balance check depends on it); the recipient's is "any", so
// a popular recipient never makes senders retry. Under an idempotency key it runs at most once
// per key.
func (a *App) Transfer(ctx context.Context, fromID uuid.UUID, toUser string, amount domain.Coins) (Result, error) {
	req := commandRequest{Command: "sendCoin", ToUser: toUser, Amount: int64(amount)}
	return a.idempotent(ctx, req, func(k *keyed) (Result, error) {
		return a.transfer(ctx, fromID, toUser, amount, k)
	})
}

func (a *App) transfer(ctx context.Context, fromID uuid.UUID, toUser string, amount domain.Coins, k *keyed) (Result, error) {
	toID, err := a.AccountID(ctx, toUser)
	if err != nil {
		return Result{}, err
	}
	if toID == fromID {
		return Result{}, domain.ErrSelfTransfer
	}
	transferID, err := uuid.NewV7()
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = a.retry(ctx, []uuid.UUID{fromID, toID}, func() error {
		var sent domain.CoinsSent
		var received domain.CoinsReceived
		acc, err := a.decideOn(ctx, fromID, func(acc *domain.Account) (err error) {
			sent, received, err = acc.Send(domain.AccountRef{ID: toID, Username: toUser}, amount, transferID)
			return err
		})
		if err != nil {
			return err
		}
		after := acc.Clone()
		if err := after.Apply(sent); err != nil {
			return err
		}
		md := metadata(ctx, acc.Username)
		md.CorrelationID = transferID.String()
		r, err := a.store.Append(ctx, []eventstore.StreamAppend{
			{StreamID: domain.StreamID(fromID), Expected: eventstore.Exactly(acc.Version),
				Events: toEventData(md, sent), Snapshot: &eventstore.Snapshot{State: after}},
			{StreamID: domain.StreamID(toID), Expected: eventstore.Any(), Events: toEventData(md, received)},
		}, k.record(fromID, toID)...)
		res = resultOf(r, fromID, toID)
		// The recipient's stream moved under a state this command did not fold.
		a.states.drop(toID)
		a.remember(after, r, err)
		return err
	})
	return res, err
}

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
