package app

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/projections"
)

// Info is an account as /api/info shows it.
type Info struct {
	Coins     int64
	Inventory []Holding
	Received  []Transfer
	Sent      []Transfer
	// Version is the account's stream version the answer reflects.
	Version int64
}

// Holding is a count of one item owned.
type Holding struct {
	Item     string
	Quantity int64
}

// Transfer is one coin transfer seen from one side: Counterpart is the other party.
type Transfer struct {
	Counterpart string
	Amount      int64
}

// readSetTTL is how long the active projection versions are trusted before being read again.
// A rebuild keeps the old version's rows for longer than this after switching.
const readSetTTL = 500 * time.Millisecond

// readSet is what reads of the read models take from the active projection versions.
type readSet struct {
	versions projections.Active
	info     string // the read models' statement over them
	read     time.Time
}

// readSet returns the active projection versions, read again once readSetTTL has passed.
func (a *App) readSet(ctx context.Context) (*readSet, error) {
	if rs := a.reads.Load(); rs != nil && time.Since(rs.read) < readSetTTL {
		return rs, nil
	}
	versions, err := projections.ActiveVersions(ctx, a.pool)
	if err != nil {
		return nil, err
	}
	q, err := versions.InfoSQL()
	if err != nil {
		return nil, err
	}
	rs := &readSet{versions: versions, info: q, read: time.Now()}
	a.reads.Store(rs)
	return rs, nil
}

// readModels is one account's row of the read models' statement (projections.Active.InfoSQL).
type readModels struct {
	head              int64
	balV, invV, histV int64
	coins             int64
	items             []string
	quantities        []int64
	sent              []bool
	counterparts      []string
	amounts           []int64
	// on is the reader the row was read on (0: the primary). Completing the row from the
	// account's events must read a database at least as new: the same one, or the primary.
	on int
}

func (r *readModels) current() bool {
	return r.balV >= r.head && r.invV >= r.head && r.histV >= r.head
}

// readModels reads the account's row; reads that are waiting at the same time share one
// statement (see readGroup).
func (a *App) readModels(ctx context.Context, id uuid.UUID) (*readModels, error) {
	return a.readGroups.read(ctx, id)
}

// readRows runs the read models' statement for the accounts ids (distinct) and returns their rows by account, read
// where the router sends a read asked for now (a group of reads asks once).
func (a *App) readRows(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*readModels, error) {
	rs, err := a.readSet(ctx)
	if err != nil {
		return nil, err
	}
	q := rs.info
	streams := make([]string, len(ids))
	for i, id := range ids {
		streams[i] = domain.StreamID(id)
	}
	target, err := a.route(ctx)
	if err != nil {
		return nil, err
	}
	var out map[uuid.UUID]*readModels
	err = a.onReader(ctx, target, func(ctx context.Context, on reader) error {
		if on.pool == a.pool {
			target = 0 // the primary, after a standby failed
		}
		rows, err := on.pool.Query(ctx, q, ids, streams)
		if err != nil {
			return fmt.Errorf("read info: %w", err)
		}
		out = make(map[uuid.UUID]*readModels, len(ids))
		var id uuid.UUID
		r := &readModels{}
		_, err = pgx.ForEachRow(rows, []any{&id, &r.head, &r.balV, &r.coins, &r.invV, &r.items, &r.quantities,
			&r.histV, &r.sent, &r.counterparts, &r.amounts}, func() error {
			row := *r
			row.on = target
			out[id] = &row
			return nil
		})
		if err != nil {
			return fmt.Errorf("read info: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if out[id] == nil {
			return nil, fmt.Errorf("read info: no row for %s", id)
		}
	}
	return out, nil
}

// Info returns the account's balance, inventory and coin history. It never answers with
// anything older than the account's stream head at the time of the call: every command that
// returned before the call is visible.
func (a *App) Info(ctx context.Context, accountID uuid.UUID) (Info, error) {
	wake := a.wake.C()
	r, err := a.readModels(ctx, accountID)
	if err != nil {
		return Info{}, err
	}
	if r.head == 0 {
		return Info{}, fmt.Errorf("%w: %s", domain.ErrUnknownAccount, accountID)
	}
	if r.current() {
		a.stats.readFresh.Add(1)
		return r.info()
	}
	// Behind: wait for the projectors' wake-ups (not a sleep loop), up to ReadWait.
	deadline := time.NewTimer(a.cfg.ReadWait)
	defer deadline.Stop()
	head := r.head
	for {
		select {
		case <-ctx.Done():
			return Info{}, ctx.Err()
		case <-deadline.C:
			a.stats.readFolded.Add(1)
			return a.foldNewest(ctx, accountID, r)
		case <-wake:
		}
		wake = a.wake.C()
		next, err := a.readModels(ctx, accountID)
		if err != nil {
			return Info{}, err
		}
		if next.head < head {
			if next.on == r.on && next.on == 0 {
				return Info{}, errors.New("stream head moved backwards")
			}
			// Another database than the first read's: it has every command acknowledged
			// before this call, but not necessarily the newer ones the first read saw.
			continue
		}
		r = next
		if r.current() {
			a.stats.readAfterWait.Add(1)
			return r.info()
		}
	}
}

func (r *readModels) info() (Info, error) {
	in := Info{Coins: r.coins, Version: r.head, Inventory: make([]Holding, len(r.items)), Received: []Transfer{}, Sent: []Transfer{}}
	if len(r.quantities) != len(r.items) {
		return Info{}, fmt.Errorf("inventory of %d items has %d quantities", len(r.items), len(r.quantities))
	}
	for i, item := range r.items {
		in.Inventory[i] = Holding{Item: item, Quantity: r.quantities[i]}
	}
	if len(r.counterparts) != len(r.sent) || len(r.amounts) != len(r.sent) {
		return Info{}, fmt.Errorf("history of %d transfers has %d counterparts and %d amounts", len(r.sent), len(r.counterparts), len(r.amounts))
	}
	for i, sent := range r.sent {
		t := Transfer{Counterpart: r.counterparts[i], Amount: r.amounts[i]}
		if sent {
			in.Sent = append(in.Sent, t)
		} else {
			in.Received = append(in.Received, t)
		}
	}
	return in, nil
}

// foldNewest completes lagging read models from the account's own events: each read model
// gets the events after the version it has applied. The event store is the truth; the read
// models are a cache.
func (a *App) foldNewest(ctx context.Context, id uuid.UUID, r *readModels) (Info, error) {
	in, err := r.info()
	if err != nil {
		return Info{}, err
	}
	from := min(r.balV, r.invV, r.histV)
	var events []eventstore.RecordedEvent
	err = a.onReader(ctx, r.on, func(ctx context.Context, on reader) error {
		events, err = on.store.Load(ctx, domain.StreamID(id), from)
		return err
	})
	if err != nil {
		return Info{}, err
	}
	items := make(map[string]int64, len(in.Inventory))
	for _, h := range in.Inventory {
		items[h.Item] = h.Quantity
	}
	for _, e := range events {
		ev, err := e.Decode()
		if err != nil {
			return Info{}, err
		}
		if e.Version > r.balV {
			in.Coins += int64(domain.BalanceChange(ev))
		}
		if p, ok := ev.(domain.ItemPurchased); ok && e.Version > r.invV {
			items[p.Item] += p.Quantity
		}
		if e.Version > r.histV {
			switch ev := ev.(type) {
			case domain.CoinsSent:
				in.Sent = append(in.Sent, Transfer{Counterpart: ev.To.Username, Amount: int64(ev.Amount)})
			case domain.CoinsReceived:
				in.Received = append(in.Received, Transfer{Counterpart: ev.From.Username, Amount: int64(ev.Amount)})
			}
		}
		in.Version = max(in.Version, e.Version)
	}
	in.Inventory = in.Inventory[:0]
	for item, q := range items {
		in.Inventory = append(in.Inventory, Holding{Item: item, Quantity: q})
	}
	sort.Slice(in.Inventory, func(i, j int) bool { return in.Inventory[i].Item < in.Inventory[j].Item })
	return in, nil
}
