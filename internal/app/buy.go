package app

import (
	"context"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
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
