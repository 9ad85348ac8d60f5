package app_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
)

// cutStandby is a ReadRouter that sends every read to its one "standby": a second pool of a
// single connection to the primary's own database, which a test can cut in the middle of a
// read as a standby that stops or restarts would.
type cutStandby struct {
	pool   *pgxpool.Pool
	failed atomic.Int32
}

func (s *cutStandby) Standbys() []*pgxpool.Pool              { return []*pgxpool.Pool{s.pool} }
func (s *cutStandby) Route(ctx context.Context) (int, error) { return 1, ctx.Err() }
func (s *cutStandby) Failed(int, error)                      { s.failed.Add(1) }

// An account's events read on a standby that fails mid-read carry on from the primary after
// the last event delivered: each event once, in version order, and no error.
func TestAccountEventsCarryOnFromThePrimaryWhenTheStandbyFails(t *testing.T) {
	ctx := context.Background()
	db.Reset(t)
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	standby := &cutStandby{pool: pool}
	l := newLedgerTB(t, false, false, app.Config{Reads: standby})

	id, _, err := l.app.OpenAccount(ctx, "long", "hash")
	if err != nil {
		t.Fatal(err)
	}
	head := int64(2) // opened and granted the welcome coins
	// Enough events that the read is still streaming when its connection is cut: more than
	// the socket buffers hold.
	const total, per = 20_000, 1_000
	for head < total {
		evs := make([]domain.Event, per)
		for i := range evs {
			evs[i] = domain.CoinsGranted{Amount: 1, Reason: strings.Repeat("r", 150)}
		}
		data := make([]eventstore.EventData, len(evs))
		for i, e := range evs {
			data[i] = eventstore.EventData{Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Payload: e}
		}
		if _, err := l.store.Append(ctx, []eventstore.StreamAppend{{StreamID: domain.StreamID(id),
			Expected: eventstore.Exactly(head), Events: data}}); err != nil {
			t.Fatal(err)
		}
		head += per
	}

	var pid uint32
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var got []int64
	err = l.app.ReadAccountEvents(ctx, id, 0, 0, func(e *eventstore.RecordedEvent) {
		got = append(got, e.Version)
		if len(got) == 100 {
			if _, err := db.Pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatalf("read with the standby cut: %v", err)
	}
	if standby.failed.Load() != 1 {
		t.Fatalf("the standby failed %d times, want once: the cut came after the read had ended", standby.failed.Load())
	}
	if int64(len(got)) != head {
		t.Fatalf("read %d events, want %d", len(got), head)
	}
	for i, v := range got {
		if v != int64(i+1) {
			t.Fatalf("event %d of the read is version %d, want %d", i, v, i+1)
		}
	}
}
