package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/eventstore"
)

// headWrites returns how many head rows have been inserted and updated so far, as PostgreSQL
// counts them (updates that rolled back included). s must have a pool of one connection: it
// is the only one whose counts are pending, and it sends them before it answers the flush.
func headWrites(t *testing.T, s *eventstore.Store) (inserts, updates int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Pool().Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables
		WHERE relid = 'streams'::regclass`).Scan(&inserts, &updates); err != nil {
		t.Fatal(err)
	}
	return inserts, updates
}

// appendAsOneGroup runs the appends concurrently and makes sure they are all written, in one
// group transaction.
func appendAsOneGroup(t *testing.T, s *eventstore.Store, appends ...[]eventstore.StreamAppend) {
	t.Helper()
	named := make(map[string][]eventstore.StreamAppend, len(appends))
	for i, a := range appends {
		named[fmt.Sprintf("append %d", i+1)] = a
	}
	got, before := appendTogether(t, s, named)
	if groups := s.Stats().Groups - before.Groups; groups != 1 {
		t.Fatalf("the appends took %d group transactions, want 1", groups)
	}
	for name, o := range got {
		if o.err != nil {
			t.Fatalf("%s: %v", name, o.err)
		}
	}
}

// An append writes exactly one row version of each stream head it moves: an insert for a new
// stream, an update for an existing one, however many of the group's appends touch it. Taking
// the stream locks writes none, and neither does a refused append.
func TestAppendWritesOneHeadRowVersionPerStream(t *testing.T) {
	s, w := newWatchedStore(t, 1, eventstore.WithGroupCommit(1, 64))
	ctx := context.Background()
	one := func(stream string, exp eventstore.ExpectedVersion) []eventstore.StreamAppend {
		return []eventstore.StreamAppend{{StreamID: stream, Expected: exp, Events: []eventstore.EventData{ev("E", 1)}}}
	}
	cases := []struct {
		name             string
		run              func(t *testing.T)
		inserts, updates int64
	}{
		{name: "new stream", inserts: 1, run: func(t *testing.T) { appendOne(t, s, "a", eventstore.NoStream(), ev("E", 1), ev("E", 2)) }},
		{name: "existing stream", updates: 1, run: func(t *testing.T) { appendOne(t, s, "a", eventstore.Exactly(2), ev("E", 3)) }},
		{name: "existing stream with a snapshot", updates: 1, run: func(t *testing.T) {
			if _, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "a", Expected: eventstore.Exactly(3),
				Events: []eventstore.EventData{ev("E", 4)}, Snapshot: &eventstore.Snapshot{State: amount{Amount: 4}}}}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "existing and new stream", inserts: 1, updates: 1, run: func(t *testing.T) {
			if _, err := s.Append(ctx, []eventstore.StreamAppend{
				{StreamID: "a", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Sent", 5)}},
				{StreamID: "b", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Received", 5)}},
			}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "in-transaction hook", updates: 1, run: func(t *testing.T) {
			if _, err := s.Append(ctx, one("a", eventstore.Any()),
				eventstore.InTransaction(func(context.Context, pgx.Tx) error { return nil })); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "refused append", run: func(t *testing.T) {
			_, err := s.Append(ctx, one("a", eventstore.Exactly(1)))
			var ce *eventstore.ConcurrencyError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConcurrencyError", err)
			}
		}},
		{name: "group moving two streams three times", updates: 2, run: func(t *testing.T) {
			appendAsOneGroup(t, s, one("a", eventstore.Any()), one("b", eventstore.Any()), one("a", eventstore.Any()))
		}},
		{name: "group creating a stream and moving it on", inserts: 1, run: func(t *testing.T) {
			appendAsOneGroup(t, s, one("c", eventstore.Any()), one("c", eventstore.Any()), one("c", eventstore.Any()))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ins0, upd0 := headWrites(t, s)
			c.run(t)
			ins1, upd1 := headWrites(t, s)
			if ins, upd := ins1-ins0, upd1-upd0; ins != c.inserts || upd != c.updates {
				t.Fatalf("head rows: %d inserted and %d updated, want %d and %d", ins, upd, c.inserts, c.updates)
			}
		})
	}
	for stream, want := range map[string]int64{"a": 8, "b": 2, "c": 3} {
		if h, err := head(ctx, s, stream); err != nil || h != want {
			t.Errorf("%s: head %d (%v), want %d", stream, h, err, want)
		}
		evs, err := s.Load(ctx, stream, 0)
		if err != nil {
			t.Fatal(err)
		}
		if br := verifyChain(evs); br != nil || int64(len(evs)) != want {
			t.Errorf("%s: %d events, chain break %+v", stream, len(evs), br)
		}
	}
	var snapshotVersion int64
	if err := db.Pool.QueryRow(ctx, `SELECT snapshot_version FROM streams WHERE stream_id = 'a'`).Scan(&snapshotVersion); err != nil || snapshotVersion != 4 {
		t.Errorf("snapshot version %d (%v), want 4: a later append without a snapshot must keep it", snapshotVersion, err)
	}
	w.checkClean(t)
}

// Appends racing to create the same streams, each in a transaction of its own or grouped:
// of those expecting no stream exactly one wins and every other one gets a *ConcurrencyError;
// those accepting any version all land, one after the other, in both orders of a two-stream
// append. None fails on a unique key, deadlocks or is retried. The heads are read without row
// locks, which is only right under READ COMMITTED, so the race is also run on sessions whose
// transactions default to REPEATABLE READ.
func TestConcurrentAppendsCreateEachStreamOnce(t *testing.T) {
	t.Run("default isolation", func(t *testing.T) {
		createConcurrently(t, newStore(t, eventstore.WithGroupCommit(4, 2)))
	})
	t.Run("sessions defaulting to repeatable read", func(t *testing.T) {
		db.Reset(t)
		cfg, err := pgxpool.ParseConfig(db.URL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 8
		cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = "repeatable read"
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		createConcurrently(t, eventstore.New(pool, eventstore.WithGroupCommit(4, 2)))
	})
}

func createConcurrently(t *testing.T, s *eventstore.Store) {
	ctx := context.Background()
	const streams, writers = 16, 8
	alone := eventstore.InTransaction(func(context.Context, pgx.Tx) error { return nil })
	start := make(chan struct{})
	var wg sync.WaitGroup
	created := make([][]error, streams) // per stream, the outcome of each NoStream append
	moved := make(chan error, streams*writers)
	for i := range streams {
		created[i] = make([]error, writers)
		fresh := fmt.Sprint("fresh-", i)
		x, y := fmt.Sprint("x-", i), fmt.Sprint("y-", i)
		for j := range writers {
			var opts []eventstore.AppendOption
			if j%2 == 0 {
				opts = append(opts, alone)
			}
			wg.Go(func() {
				<-start
				_, created[i][j] = s.Append(ctx, []eventstore.StreamAppend{{StreamID: fresh, Expected: eventstore.NoStream(),
					Events: []eventstore.EventData{ev("Opened", int64(j))}}}, opts...)
			})
			wg.Go(func() {
				<-start
				from, to := x, y
				if j%4 < 2 {
					from, to = y, x
				}
				_, err := s.Append(ctx, []eventstore.StreamAppend{
					{StreamID: from, Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Sent", int64(j))}},
					{StreamID: to, Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Received", int64(j))}},
				}, opts...)
				moved <- err
			})
		}
	}
	close(start)
	wg.Wait()
	close(moved)
	for err := range moved {
		if err != nil {
			t.Errorf("append with any version: %v", err)
		}
	}
	for i, errs := range created {
		won := 0
		for _, err := range errs {
			var ce *eventstore.ConcurrencyError
			switch {
			case err == nil:
				won++
			case errors.As(err, &ce):
				if ce.Actual != 1 {
					t.Errorf("conflict names %+v, want actual 1", ce)
				}
			default:
				t.Errorf("fresh-%d: %v", i, err)
			}
		}
		if won != 1 {
			t.Errorf("fresh-%d: %d appends expecting no stream won, want 1", i, won)
		}
	}
	if r := s.Stats().TxRetries; r != 0 {
		t.Errorf("%d transactions retried after a deadlock or serialization failure", r)
	}
	for i := range streams {
		for stream, want := range map[string]int{fmt.Sprint("fresh-", i): 1, fmt.Sprint("x-", i): writers, fmt.Sprint("y-", i): writers} {
			evs, err := s.Load(ctx, stream, 0)
			if err != nil {
				t.Fatal(err)
			}
			if br := verifyChain(evs); br != nil || len(evs) != want {
				t.Errorf("%s: %d events, want %d; chain break %+v", stream, len(evs), want, br)
			}
			if h, _ := head(ctx, s, stream); h != int64(want) {
				t.Errorf("%s: head %d, want %d", stream, h, want)
			}
		}
	}
}
