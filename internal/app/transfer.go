package app

import (
	"context"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

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
