package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/eventstore"
)

// wire watches a pool's connections: what goes out on them and the state they are given back
// to the pool in.
type wire struct {
	// writes counts writes to the sockets: each is a request the client then waits for, so
	// writes are round trips (pgx buffers a whole batch into one write).
	writes atomic.Int64
	// requests counts the queries and batches pgx sends.
	requests atomic.Int64

	mu       sync.Mutex
	releases int
	dirty    []string // releases of a connection closed or inside a transaction
}

func (w *wire) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	w.requests.Add(1)
	return ctx
}

func (w *wire) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (w *wire) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	w.requests.Add(1)
	return ctx
}

func (w *wire) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (w *wire) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TraceRelease runs before the pool looks at the connection, which silently drops one left in
// a transaction: the store must not rely on that.
func (w *wire) TraceRelease(_ *pgxpool.Pool, d pgxpool.TraceReleaseData) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releases++
	if d.Conn.IsClosed() {
		w.dirty = append(w.dirty, "closed")
	} else if st := d.Conn.PgConn().TxStatus(); st != 'I' {
		w.dirty = append(w.dirty, fmt.Sprintf("transaction status %q", st))
	}
}

// count returns the round trips and pgx requests fn caused.
func (w *wire) count(fn func()) (roundTrips, requests int64) {
	w0, r0 := w.writes.Load(), w.requests.Load()
	fn()
	return w.writes.Load() - w0, w.requests.Load() - r0
}

// checkClean fails t unless every connection went back to the pool open and idle.
func (w *wire) checkClean(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.releases == 0 {
		t.Fatal("no connection was released")
	}
	if len(w.dirty) > 0 {
		t.Fatalf("%d of %d connections went back to the pool unclean: %v", len(w.dirty), w.releases, w.dirty)
	}
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// newWatchedStore returns a store over a pool of its own on the test database, watched by the
// returned wire.
func newWatchedStore(t *testing.T, maxConns int32, opts ...eventstore.Option) (*eventstore.Store, *wire) {
	t.Helper()
	db.Reset(t)
	w := &wire{}
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "30000"
	cfg.ConnConfig.Tracer = w
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &w.writes}, nil
	}
	// A liveness ping on acquire would be a round trip of its own.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return eventstore.New(pool, opts...), w
}

// An append costs two round trips: BEGIN rides with the stream locks, COMMIT with the writes.
// In-transaction hooks need the transaction open after the writes, which costs one more.
func TestAppendRoundTrips(t *testing.T) {
	s, w := newWatchedStore(t, 1)
	ctx := context.Background()
	appendOne(t, s, "full", eventstore.NoStream(), ev("E", 1))
	cases := []struct {
		name string
		want int64
		run  func() error
	}{
		{"append", 2, func() error {
			_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "acc", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("E", 1)}}})
			return err
		}},
		{"two-stream append", 2, func() error {
			_, err := s.Append(ctx, []eventstore.StreamAppend{
				{StreamID: "from", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Sent", 1)}},
				{StreamID: "to", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Received", 1)}},
			})
			return err
		}},
		{"append with an in-transaction hook", 3, func() error {
			_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "acc", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("E", 1)}}},
				eventstore.InTransaction(func(context.Context, pgx.Tx) error { return nil }))
			return err
		}},
		{"refused append", 2, func() error {
			_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "full", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("E", 1)}}})
			var ce *eventstore.ConcurrencyError
			if !errors.As(err, &ce) {
				return fmt.Errorf("err = %v, want a *ConcurrencyError", err)
			}
			return nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The first run prepares the statements on the connection, a round trip of its own.
			if err := c.run(); err != nil {
				t.Fatal(err)
			}
			var err error
			trips, requests := w.count(func() { err = c.run() })
			if err != nil {
				t.Fatal(err)
			}
			if trips != c.want || requests != c.want {
				t.Fatalf("%d round trips (%d pgx requests), want %d", trips, requests, c.want)
			}
		})
	}
	w.checkClean(t)
}

// An append of a group that breaks a constraint fails the group's transaction; the group is
// then written again append by append, so that only the bad one fails. Every transaction
// that failed gave its connection back rolled back, not for the pool to throw away.
func TestGroupWithADuplicateEventIsWrittenAgainAppendByAppend(t *testing.T) {
	var mu sync.Mutex
	var writes []eventstore.Write
	s, w := newWatchedStore(t, 4, eventstore.WithGroupCommit(1, 64), eventstore.WithWriteObserver(func(wr eventstore.Write) {
		mu.Lock()
		writes = append(writes, wr)
		mu.Unlock()
	}))
	ctx := context.Background()
	dupID := uuid.New()
	if _, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "taken", Expected: eventstore.NoStream(),
		Events: []eventstore.EventData{{ID: dupID, Type: "Opened", SchemaVersion: 1, Payload: amount{Amount: 1}}}}}); err != nil {
		t.Fatal(err)
	}
	appends := map[string][]eventstore.StreamAppend{
		"first":  {{StreamID: "first", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 2)}}},
		"dup":    {{StreamID: "dup", Expected: eventstore.NoStream(), Events: []eventstore.EventData{{ID: dupID, Type: "Opened", SchemaVersion: 1, Payload: amount{Amount: 3}}}}},
		"second": {{StreamID: "second", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 4), ev("Moved", 5)}}},
	}
	mu.Lock()
	writes = nil
	mu.Unlock()
	got, before := appendTogether(t, s, appends)

	if err := got["dup"].err; !errors.Is(err, eventstore.ErrDuplicateEvent) {
		t.Errorf("dup: %v, want ErrDuplicateEvent", err)
	}
	if got["first"].err != nil || got["first"].res.Version("first") != 1 {
		t.Errorf("first: %+v, %v", got["first"].res, got["first"].err)
	}
	if got["second"].err != nil || got["second"].res.Version("second") != 2 {
		t.Errorf("second: %+v, %v", got["second"].res, got["second"].err)
	}
	after := s.Stats()
	if after.Groups-before.Groups != 1 || after.GroupedAppends-before.GroupedAppends != 3 ||
		after.TxRetries != before.TxRetries || after.Conflicts != before.Conflicts {
		t.Errorf("stats before %+v, after %+v: want one group of 3, no retry, no conflict", before, after)
	}
	// One transaction for the group, then one per append.
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 4 || writes[0].Appends != 3 || !errors.Is(writes[0].Err, eventstore.ErrDuplicateEvent) {
		t.Fatalf("transactions: %+v, want the group of 3 failing, then 3 alone", writes)
	}
	failed := 0
	for _, wr := range writes[1:] {
		if wr.Appends != 1 {
			t.Errorf("a rewrite carried %d appends", wr.Appends)
		}
		if wr.Err != nil {
			if !errors.Is(wr.Err, eventstore.ErrDuplicateEvent) {
				t.Errorf("a rewrite failed: %v", wr.Err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d rewrites failed, want 1", failed)
	}
	if n := count(t, `SELECT count(*) FROM events WHERE stream_id = 'dup'`) + count(t, `SELECT count(*) FROM streams WHERE stream_id = 'dup'`); n != 0 {
		t.Errorf("the duplicate left %d rows", n)
	}
	if n := count(t, `SELECT count(*) FROM events`); n != 4 {
		t.Errorf("%d events in the log, want 4", n)
	}
	w.checkClean(t)
}

// An append whose transaction fails after its streams are locked writes nothing, whichever
// statement fails: no event, no new stream, no head moved; the connection goes back to the
// pool rolled back, and the stream takes the next append at the version it had.
func TestFailedAppendTransactionLeavesNothingWritten(t *testing.T) {
	type snap struct {
		Note string `json:"note"`
	}
	// The first event of the stream, whose id a later event can repeat.
	first := ev("E", 1)
	first.ID = uuid.New()
	cases := []struct {
		name  string
		check func(error) bool
		// refuse, when set, is a check the head rows must pass while the case runs.
		refuse string
		opts   func(cancel context.CancelFunc) []eventstore.AppendOption
		kept   eventstore.StreamAppend
	}{
		{
			name:  "events refused",
			check: func(err error) bool { return errors.Is(err, eventstore.ErrDuplicateEvent) },
			kept: eventstore.StreamAppend{StreamID: "kept", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{
				ev("E", 2), {ID: first.ID, Type: "E", SchemaVersion: 1, Payload: amount{Amount: 3}}}},
		},
		{
			// The events are inserted; the head update after them fails.
			name:   "head update refused",
			check:  func(err error) bool { return pgCode(err) == "23514" },
			refuse: `snapshot->>'note' IS DISTINCT FROM 'refused'`,
			kept: eventstore.StreamAppend{StreamID: "kept", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{ev("E", 2)},
				Snapshot: &eventstore.Snapshot{State: snap{Note: "refused"}}},
		},
		{
			name:  "context ended before commit",
			check: func(err error) bool { return errors.Is(err, context.Canceled) },
			opts: func(cancel context.CancelFunc) []eventstore.AppendOption {
				return []eventstore.AppendOption{eventstore.InTransaction(func(context.Context, pgx.Tx) error { cancel(); return nil })}
			},
			kept: eventstore.StreamAppend{StreamID: "kept", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{ev("E", 2)},
				Snapshot: &eventstore.Snapshot{State: snap{Note: "two"}}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, w := newWatchedStore(t, 2)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "kept", Expected: eventstore.NoStream(),
				Events: []eventstore.EventData{first}, Snapshot: &eventstore.Snapshot{State: snap{Note: "one"}}}}); err != nil {
				t.Fatal(err)
			}
			if c.refuse != "" {
				if _, err := db.Pool.Exec(ctx, `ALTER TABLE streams ADD CONSTRAINT test_refused CHECK (`+c.refuse+`)`); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if _, err := db.Pool.Exec(context.Background(), `ALTER TABLE streams DROP CONSTRAINT test_refused`); err != nil {
						t.Error(err)
					}
				})
			}
			headRow := func() string {
				var row string
				if err := db.Pool.QueryRow(context.Background(), `SELECT row(version, last_hash, snapshot, snapshot_version)::text
					FROM streams WHERE stream_id = 'kept'`).Scan(&row); err != nil {
					t.Fatal(err)
				}
				return row
			}
			head := headRow()
			var opts []eventstore.AppendOption
			if c.opts != nil {
				opts = c.opts(cancel)
			}
			_, err := s.Append(ctx, []eventstore.StreamAppend{c.kept,
				{StreamID: "fresh", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("E", 4)}}}, opts...)
			if err == nil || !c.check(err) {
				t.Fatalf("err = %v", err)
			}
			if n := count(t, `SELECT count(*) FROM events`); n != 1 {
				t.Errorf("%d events in the log, want the first one only", n)
			}
			if n := count(t, `SELECT count(*) FROM streams WHERE stream_id = 'fresh'`); n != 0 {
				t.Error("the failed append left a head row for its new stream")
			}
			if got := headRow(); got != head {
				t.Errorf("head moved from %s to %s", head, got)
			}
			if st := s.Stats(); st.TxRetries != 0 {
				t.Errorf("%d retries of an error that is not transient", st.TxRetries)
			}
			w.checkClean(t)

			res := appendOne(t, s, "kept", eventstore.Exactly(1), ev("E", 5))
			if res.Version("kept") != 2 {
				t.Fatalf("next append reached version %d, want 2", res.Version("kept"))
			}
			evs, err := s.Load(context.Background(), "kept", 0)
			if err != nil {
				t.Fatal(err)
			}
			if br := verifyChain(evs); br != nil || len(evs) != 2 {
				t.Fatalf("%d events, chain break %+v", len(evs), br)
			}
		})
	}
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
