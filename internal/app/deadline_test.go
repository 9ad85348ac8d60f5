package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/internal/app"
)

// lockTable holds an exclusive lock on table from a connection of its own, as a stalled
// database would hold every statement that reads it, until the returned func (or, at the
// latest, after limit, so that a test without the bounds under test still ends).
func lockTable(t *testing.T, table string, limit time.Duration) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{table}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	timer := time.AfterFunc(limit, func() { _ = tx.Rollback(ctx) })
	unlock = func() {
		select {
		case <-done:
		default:
			close(done)
			timer.Stop()
			_ = tx.Rollback(ctx)
			_ = conn.Close(ctx)
		}
	}
	t.Cleanup(unlock)
	return unlock
}

// A caller waiting for the price list while another caller's refresh hangs leaves at its own
// deadline, not when the other's ends.
func TestCatalogWaitEndsAtTheCallersDeadline(t *testing.T) {
	l := start(t, false, app.Config{})
	lockTable(t, "catalog", 5*time.Second)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = l.app.Catalog(ctx) // holds the cache while its read hangs
	}()
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := l.app.Catalog(ctx)
	if took := time.Since(began); !errors.Is(err, context.DeadlineExceeded) || took > 700*time.Millisecond {
		t.Errorf("catalog behind a hanging refresh: %v after %v; want the deadline's error at 200ms", err, took)
	}
}

// A grouped read ends at its callers' deadline: the caller that handles the group returns in
// time, and the connection goes back then, rather than being held while the database stalls.
func TestGroupedReadEndsAtItsCallersDeadline(t *testing.T) {
	l := start(t, false, app.Config{ReadSlots: 1})
	base := db.Pool.Stat().AcquiredConns()
	lockTable(t, "balance_v1", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if _, err := l.app.Info(ctx, uuid.New()); !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 700*time.Millisecond {
		t.Fatalf("info while its read model is locked: %v after %v; want the deadline's error at 200ms", err, time.Since(began))
	}
	deadline := time.Now().Add(time.Second)
	for db.Pool.Stat().AcquiredConns() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still held a second after the read's only caller left (%d before)", db.Pool.Stat().AcquiredConns(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
