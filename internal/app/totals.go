package app

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// Totals are the bank's numbers folded from the global log up to Until: what was granted and
// spent, what every account holds, and what moved between accounts.
type Totals struct {
	Accounts, Events int64
	Granted, Spent   int64
	// Balances is Σ of every account's balance, each folded from its own events.
	Balances int64
	// Sent and Received are the two halves of every transfer.
	Sent, Received int64
	// Negative counts the accounts whose balance is below zero.
	Negative int64
	Until    eventstore.Checkpoint
	// CaughtUp is false when the fold stopped short of the readable log's end (a budget or a
	// deadline); the numbers are then those of a prefix of the log, and still consistent.
	CaughtUp bool
	At       time.Time
}

// Holds reports whether the bank invariant holds: Σ balances + Σ spent = Σ granted, transfers
// move coins without making or losing any, and no balance is negative.
func (t Totals) Holds() bool {
	return t.Balances+t.Spent == t.Granted && t.Sent == t.Received && t.Negative == 0
}

// totalsFold keeps the fold between calls, so each call reads only the events appended since.
type totalsFold struct {
	mu       sync.Mutex
	balances map[string]int64
	t        Totals
}

// totalsPage is how many events one read of the log returns while folding the totals.
const totalsPage = 10_000

// BankTotals folds the global log, from where the last call stopped, into the bank's totals,
// reading at most budget events (0: no bound) and stopping early when ctx ends; the answer then
// covers a prefix of the log (CaughtUp false). The log is read through the one fenced reader,
// so an event is never skipped and a transfer's two halves (one transaction) come together.
func (a *App) BankTotals(ctx context.Context, budget int64) (Totals, error) {
	f := &a.totals
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.balances == nil {
		f.balances = make(map[string]int64)
	}
	var read int64
	_, err := a.store.WalkLog(ctx, eventstore.LogRange{After: f.t.Until, Until: eventstore.EndOfLog, Max: budget}, totalsPage, func(page []eventstore.RecordedEvent) error {
		for _, e := range page {
			if err := f.add(e); err != nil {
				return err
			}
		}
		read += int64(len(page))
		return nil
	})
	switch {
	case err == nil:
		f.t.CaughtUp = budget <= 0 || read < budget
	case ctx.Err() != nil && read > 0:
		f.t.CaughtUp = false
	default:
		return Totals{}, fmt.Errorf("bank totals: %w", err)
	}
	f.t.At = time.Now()
	return f.t, nil
}

func (f *totalsFold) add(e eventstore.RecordedEvent) error {
	f.t.Until = e.Checkpoint()
	f.t.Events++
	if _, ok := domain.AccountOf(e.StreamID); !ok {
		return nil
	}
	ev, err := e.Decode()
	if err != nil {
		return fmt.Errorf("event %d: %w", e.Position, err)
	}
	before, known := f.balances[e.StreamID]
	if !known {
		f.t.Accounts++
	}
	change := int64(domain.BalanceChange(ev))
	after := before + change
	f.balances[e.StreamID] = after
	f.t.Balances += after - before
	switch {
	case before >= 0 && after < 0:
		f.t.Negative++
	case before < 0 && after >= 0:
		f.t.Negative--
	}
	switch ev := ev.(type) {
	case domain.CoinsGranted:
		f.t.Granted += int64(ev.Amount)
	case domain.ItemPurchased:
		f.t.Spent -= change // what the purchase took, by the one balance rule
	case domain.CoinsSent:
		f.t.Sent += int64(ev.Amount)
	case domain.CoinsReceived:
		f.t.Received += int64(ev.Amount)
	}
	return nil
}
