package app

import (
	"context"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
)

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
