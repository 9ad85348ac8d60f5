package app

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// ErrNotOpenedYet: the account did not exist yet at the point asked for. An empty answer (0
// coins) would look like a real account that had spent everything.
var ErrNotOpenedYet = errors.New("no such account at that time")

// AsOf is a point in the ledger's past: a time, or a position in the global log.
type AsOf struct {
	time       time.Time
	position   int64
	byPosition bool
}

// AtTime is the point just after every event recorded at or before t.
func AtTime(t time.Time) AsOf { return AsOf{time: t} }

// AtPosition is the point just after the event at global position pos (and every event before
// it in the account's stream).
func AtPosition(pos int64) AsOf { return AsOf{position: pos, byPosition: true} }

// String renders the point for messages.
func (a AsOf) String() string {
	if a.byPosition {
		return "position " + strconv.FormatInt(a.position, 10)
	}
	return a.time.UTC().Format(time.RFC3339Nano)
}

// InfoAsOf returns the account's balance, inventory and coin history as they were at the point
// at: its own stream folded up to there, read with one statement. An account stream is
// self-contained (a transfer's events name both parties), so no other stream is needed. Before
// the account was opened, the answer is ErrNotOpenedYet. By time, the answer is the longest
// prefix of the stream recorded at or before the time.
func (a *App) InfoAsOf(ctx context.Context, accountID uuid.UUID, at AsOf) (Info, error) {
	stream := domain.StreamID(accountID)
	var events []eventstore.RecordedEvent
	err := a.read(ctx, func(ctx context.Context, on reader) (err error) {
		if at.byPosition {
			events, err = on.store.LoadThroughPosition(ctx, stream, at.position)
		} else {
			events, err = on.store.LoadRecordedBy(ctx, stream, at.time)
		}
		return err
	})
	if err != nil {
		return Info{}, err
	}
	acc := &domain.Account{}
	in := Info{Inventory: []Holding{}, Received: []Transfer{}, Sent: []Transfer{}}
	for _, e := range events {
		if e.Version != acc.Version+1 {
			break // by time: a version recorded earlier than the one before it ends the prefix
		}
		ev, err := e.Decode()
		if err != nil {
			return Info{}, fmt.Errorf("account %s version %d: %w", accountID, e.Version, err)
		}
		if err := acc.Apply(ev); err != nil {
			return Info{}, fmt.Errorf("account %s: %w", accountID, err)
		}
		switch ev := ev.(type) {
		case domain.CoinsSent:
			in.Sent = append(in.Sent, Transfer{Counterpart: ev.To.Username, Amount: int64(ev.Amount)})
		case domain.CoinsReceived:
			in.Received = append(in.Received, Transfer{Counterpart: ev.From.Username, Amount: int64(ev.Amount)})
		}
	}
	if !acc.Opened() {
		return Info{}, ErrNotOpenedYet
	}
	in.Coins, in.Version = int64(acc.Balance), acc.Version
	for item, q := range acc.Items {
		in.Inventory = append(in.Inventory, Holding{Item: item, Quantity: q})
	}
	sort.Slice(in.Inventory, func(i, j int) bool { return in.Inventory[i].Item < in.Inventory[j].Item })
	return in, nil
}
