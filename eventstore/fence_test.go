package eventstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/pgtest"
)

// TestLogHeadStopsAtTheFence: the head is the last readable event, never one behind a
// transaction that is still open.
func TestLogHeadStopsAtTheFence(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if head, err := s.LogHead(ctx); err != nil || head != (eventstore.Checkpoint{}) {
		t.Fatalf("empty log: head %s, %v", head, err)
	}
	first := appendOne(t, s, "x", eventstore.NoStream(), ev("E", 1))
	pgtest.ReadLogUntil(t, s, eventstore.Checkpoint{}, 10, 1)
	if head, err := s.LogHead(ctx); err != nil || head != first.Checkpoint {
		t.Fatalf("head %s, %v; want %s", head, err, first.Checkpoint)
	}

	inT1 := make(chan struct{})
	releaseT1 := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(releaseT1) }) }
	t.Cleanup(release) // an open transaction stalls every reader on the server: always end it
	t1Done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "t1", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("T1", 1)}}},
			eventstore.InTransaction(func(context.Context, pgx.Tx) error {
				close(inT1)
				<-releaseT1
				return nil
			}))
		t1Done <- err
	}()
	<-inT1
	later := appendOne(t, s, "t2", eventstore.NoStream(), ev("T2", 2))
	if head, err := s.LogHead(ctx); err != nil || later.Checkpoint.Before(head) || head == later.Checkpoint {
		t.Fatalf("head %s, %v, with an older transaction still open: it must stay before %s", head, err, later.Checkpoint)
	}
	release()
	if err := <-t1Done; err != nil {
		t.Fatal(err)
	}
	pgtest.ReadLogUntil(t, s, first.Checkpoint, 10, 2)
	if head, err := s.LogHead(ctx); err != nil || head != later.Checkpoint {
		t.Fatalf("head %s, %v; want %s", head, err, later.Checkpoint)
	}
}

// WaitSettled waits for every transaction below the given id to end, and no longer.
func TestWaitSettledWaitsForOlderTransactions(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var held uint64
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitSettled(ctx, held); err != nil {
		t.Fatalf("waiting for the transactions below the held one: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := s.WaitSettled(short, held+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSettled past a running transaction returned %v, want the deadline", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitSettled(ctx, held+1); err != nil {
		t.Fatalf("after the transaction ended: %v", err)
	}
}
