package app_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/notify"
)

// tickingClock stamps each append one second after the one before.
type tickingClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *tickingClock) tick() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

func (c *tickingClock) last() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// TestAuditInfoAsOf: the account as of each command's log position, and as of each command's
// time, is exactly what Info answered right after that command.
func TestAuditInfoAsOf(t *testing.T) {
	db.Reset(t)
	clock := &tickingClock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	wake := notify.NewSignal()
	store := eventstore.New(db.Pool, eventstore.WithClock(clock.tick), eventstore.WithAfterCommit(func(eventstore.AppendResult) { wake.Notify() }))
	a := app.New(store, wake, app.Config{})
	ctx := context.Background()

	type step struct {
		position int64
		at       time.Time
		alice    app.Info
	}
	var alice, bob uuid.UUID
	var steps []step
	record := func(res app.Result) {
		t.Helper()
		in, err := a.Info(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, step{position: res.Checkpoint.Position, at: clock.last(), alice: in})
	}
	must := func(res app.Result, err error) app.Result {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	var res app.Result
	var err error
	if alice, res, err = a.OpenAccount(ctx, "alice", "hash"); err != nil {
		t.Fatal(err)
	}
	record(res)
	if bob, res, err = a.OpenAccount(ctx, "bob", "hash"); err != nil {
		t.Fatal(err)
	}
	record(res)
	record(must(a.Buy(ctx, alice, "cup")))
	record(must(a.Transfer(ctx, alice, "bob", 15)))
	record(must(a.Transfer(ctx, bob, "alice", 5)))
	record(must(a.Buy(ctx, bob, "pen"))) // alice unchanged
	record(must(a.Grant(ctx, "admin", "alice", 40, "bonus")))
	record(must(a.Buy(ctx, alice, "cup")))
	record(must(a.Buy(ctx, alice, "book")))
	record(must(a.Transfer(ctx, alice, "bob", 3)))

	check := func(what string, at app.AsOf, want app.Info) {
		t.Helper()
		got, err := a.InfoAsOf(ctx, alice, at)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s (%s):\n got %+v\nwant %+v", what, at, got, want)
		}
	}
	notYet := func(what string, at app.AsOf) {
		t.Helper()
		if got, err := a.InfoAsOf(ctx, alice, at); !errors.Is(err, app.ErrNotOpenedYet) {
			t.Fatalf("%s (%s): %+v, %v; want %v", what, at, got, err, app.ErrNotOpenedYet)
		}
	}
	notYet("before the first event", app.AtPosition(0))
	notYet("before the account opened", app.AtTime(steps[0].at.Add(-time.Microsecond)))
	notYet("long before", app.AtTime(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)))
	check("as it opened", app.AtPosition(steps[0].position), steps[0].alice)
	for i, s := range steps {
		check("at the command's position", app.AtPosition(s.position), s.alice)
		check("at the command's time", app.AtTime(s.at), s.alice)
		if i > 0 {
			check("a moment before the command", app.AtTime(s.at.Add(-time.Microsecond)), steps[i-1].alice)
		}
	}
	now, err := a.Info(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	check("far in the future", app.AtTime(clock.last().Add(24*time.Hour)), now)
	check("beyond the last position", app.AtPosition(1<<62), now)
	if len(now.Sent) != 2 || len(now.Received) != 1 || now.Coins != 1000-20-15+5+40-20-50-3 {
		t.Fatalf("the scenario went wrong: %+v", now)
	}
}

// TestAuditAccountEvents: an account's events page by page, and nothing for an unknown one.
func TestAuditAccountEvents(t *testing.T) {
	l := start(t, false, app.Config{})
	ctx := context.Background()
	id, _, err := l.app.OpenAccount(ctx, "alice", "hash")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := l.app.Buy(ctx, id, "pen"); err != nil {
			t.Fatal(err)
		}
	}
	var got []int64
	for after := int64(0); ; {
		page, err := l.app.AccountEvents(ctx, id, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if e.StreamID != domain.StreamID(id) {
				t.Fatalf("event of stream %s", e.StreamID)
			}
			got = append(got, e.Version)
		}
		after = page[len(page)-1].Version
	}
	if !reflect.DeepEqual(got, []int64{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("versions %v", got)
	}
	if evs, err := l.app.AccountEvents(ctx, uuid.New(), 0, 10); err != nil || len(evs) != 0 {
		t.Fatalf("unknown account: %d events, %v", len(evs), err)
	}
	if _, err := l.app.AccountEvents(ctx, id, 0, 0); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("limit 0: %v", err)
	}
}
