package audit_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/projections"
)

var db *pgtest.Database

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "audit", &db)) }

// ledger is the in-process CQRS loop over the package's database: store, app, projectors.
type ledger struct {
	store  *eventstore.Store
	app    *app.App
	runner *projections.Runner
	stop   func()
}

// newLedger empties the database and starts a ledger, with its projectors running or not.
func newLedger(tb testing.TB, runProjectors bool) *ledger {
	tb.Helper()
	db.Reset(tb)
	wake := notify.NewSignal()
	store := eventstore.New(db.Pool, eventstore.WithAfterCommit(func(eventstore.AppendResult) { wake.Notify() }))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l := &ledger{store: store, app: app.New(store, wake, app.Config{}), stop: func() {},
		runner: projections.NewRunner(db.Pool, wake, log, projections.Config{}, projections.All()...)}
	if runProjectors {
		l.startProjectors(tb)
	}
	tb.Cleanup(func() { l.stop() })
	return l
}

func (l *ledger) startProjectors(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.runner.Run(ctx)
	}()
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				tb.Error("projectors did not stop within 30s")
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for !l.runner.Running() {
		if time.Now().After(deadline) {
			tb.Fatal("projectors did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitProjected waits until every projection has applied every account stream's head.
func waitProjected(tb testing.TB) {
	tb.Helper()
	var groups []string
	for _, p := range projections.All() {
		groups = append(groups, p.Group())
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var behind int
		err := db.Pool.QueryRow(context.Background(), `
			SELECT count(*) FROM streams s CROSS JOIN unnest($1::text[]) g
			LEFT JOIN projection_heads h ON h.consumer_group = g AND h.account_id = substr(s.stream_id, 9)::uuid
			WHERE s.stream_id LIKE 'account-%' AND COALESCE(h.version, 0) <> s.version`, groups).Scan(&behind)
		if err != nil {
			tb.Fatal(err)
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("projections still behind on %d (account, projection) pairs", behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReadable waits until every event appended so far is readable in the log: below the
// oldest transaction running anywhere on the server, which tests of other packages share.
func waitReadable(tb testing.TB, l *ledger) {
	tb.Helper()
	ctx := context.Background()
	var last eventstore.Checkpoint
	err := db.Pool.QueryRow(ctx, `SELECT transaction_id, global_position FROM events
		ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&last.TransactionID, &last.Position)
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		head, err := l.store.LogHead(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if head == last {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the log is readable up to %s only, not %s: a transaction stays open on the server", head, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// accounts are the employees of the scenario, by name.
type accounts map[string]uuid.UUID

// scenario opens alice, bob and carol and runs a few of every command between them.
func scenario(tb testing.TB, l *ledger) accounts {
	tb.Helper()
	ctx := context.Background()
	ids := accounts{}
	for _, name := range []string{"alice", "bob", "carol"} {
		id, _, err := l.app.OpenAccount(ctx, name, "hash")
		if err != nil {
			tb.Fatal(err)
		}
		ids[name] = id
	}
	must := func(_ app.Result, err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(l.app.Buy(ctx, ids["alice"], "cup"))
	must(l.app.Transfer(ctx, ids["alice"], "bob", 15))
	must(l.app.Transfer(ctx, ids["bob"], "carol", 7))
	must(l.app.Grant(ctx, "admin", "carol", 50, "hackathon"))
	must(l.app.Buy(ctx, ids["carol"], "pen"))
	must(l.app.Buy(ctx, ids["carol"], "pen"))
	must(l.app.Transfer(ctx, ids["carol"], "alice", 30))
	must(l.app.Buy(ctx, ids["bob"], "hoody"))
	return ids
}

// verify runs the verifier; small pages and two workers make it cross page boundaries and run
// its parallel part even on a short log.
func verify(tb testing.TB, l *ledger) *audit.Report {
	tb.Helper()
	rep, err := audit.Verify(context.Background(), l.store, audit.VerifyOptions{PageSize: 3, Workers: 2})
	if err != nil {
		tb.Fatal(err)
	}
	return rep
}

// tamper runs an edit the append-only trigger would refuse, with triggers off for this one
// session, as a superuser restoring a dump could.
func tamper(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if _, err := conn.Exec(ctx, "SET session_replication_role = DEFAULT"); err != nil {
			tb.Error(err)
		}
	}()
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		tb.Fatal(err)
	}
	if tag.RowsAffected() != 1 {
		tb.Fatalf("%s changed %d rows, want 1", sql, tag.RowsAffected())
	}
}

// exec runs a statement that must change exactly one row.
func exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	tag, err := db.Pool.Exec(context.Background(), sql, args...)
	if err != nil {
		tb.Fatal(err)
	}
	if tag.RowsAffected() != 1 {
		tb.Fatalf("%s changed %d rows, want 1", sql, tag.RowsAffected())
	}
}
