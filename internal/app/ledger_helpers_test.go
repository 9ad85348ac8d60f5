package app_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/projections"
)

// newLedgerTB starts a ledger for benchmarks and other testing.TB users; start is the same for a
// test with a fresh database. With reset false the database is kept as it is (a benchmark
// re-run over accounts it created before).
func newLedgerTB(tb testing.TB, reset, runProjectors bool, cfg app.Config) *ledger {
	tb.Helper()
	if reset {
		db.Reset(tb)
	}
	wake := notify.NewSignal()
	store := eventstore.New(db.Pool, eventstore.WithAfterCommit(func(eventstore.AppendResult) { wake.Notify() }))
	l := &ledger{store: store, app: app.New(store, wake, cfg), wake: wake, stop: func() {}}
	l.runner = projections.NewRunner(db.Pool, wake, quietLog(), projections.Config{}, projections.All()...)
	if runProjectors {
		l.startProjectors(tb)
	}
	tb.Cleanup(func() { l.stop() })
	return l
}

// projectionGroups are the consumer groups of every read model Info serves from.
func projectionGroups() []string {
	var groups []string
	for _, p := range projections.All() {
		groups = append(groups, p.Group())
	}
	return groups
}

// waitProjected waits until, for every projection and every account stream, the version the
// projection has applied equals the stream head.
func waitProjected(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		var behind int
		err := db.Pool.QueryRow(ctx, `
			SELECT count(*) FROM streams s CROSS JOIN unnest($1::text[]) g
			LEFT JOIN projection_heads h ON h.consumer_group = g AND h.account_id = substr(s.stream_id, 9)::uuid
			WHERE s.stream_id LIKE 'account-%' AND COALESCE(h.version, 0) <> s.version`, projectionGroups()).Scan(&behind)
		if err != nil {
			tb.Fatal(err)
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			dumpProjectionState(tb)
			tb.Fatalf("projections still behind the stream heads on %d (account, projection) pairs after %v", behind, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// versioned is one decoded event with its stream version.
type versioned struct {
	version int64
	event   domain.Event
}

// folded is an account's stream folded from version 1, the truth every read must match.
type folded struct {
	acc      *domain.Account
	events   []versioned
	sent     []app.Transfer // in stream order
	received []app.Transfer
	granted  domain.Coins
}

// foldStream loads every event of the account from the store and folds it.
func foldStream(ctx context.Context, store *eventstore.Store, id uuid.UUID) (*folded, error) {
	evs, err := store.Load(ctx, domain.StreamID(id), 0)
	if err != nil {
		return nil, err
	}
	f := &folded{acc: &domain.Account{}}
	for _, e := range evs {
		ev, err := e.Decode()
		if err != nil {
			return nil, fmt.Errorf("%s version %d: %w", id, e.Version, err)
		}
		if err := f.acc.Apply(ev); err != nil {
			return nil, fmt.Errorf("%s version %d: %w", id, e.Version, err)
		}
		if f.acc.Version != e.Version {
			return nil, fmt.Errorf("%s: folded to version %d at stored version %d", id, f.acc.Version, e.Version)
		}
		f.events = append(f.events, versioned{version: e.Version, event: ev})
		switch ev := ev.(type) {
		case domain.CoinsSent:
			f.sent = append(f.sent, app.Transfer{Counterpart: ev.To.Username, Amount: int64(ev.Amount)})
		case domain.CoinsReceived:
			f.received = append(f.received, app.Transfer{Counterpart: ev.From.Username, Amount: int64(ev.Amount)})
		case domain.CoinsGranted:
			f.granted += ev.Amount
		}
	}
	return f, nil
}

// holdings turns Info's inventory into a map, failing on duplicate or non-positive rows.
func holdings(in app.Info) (map[string]int64, error) {
	m := make(map[string]int64, len(in.Inventory))
	for _, h := range in.Inventory {
		if _, dup := m[h.Item]; dup {
			return nil, fmt.Errorf("item %q listed twice", h.Item)
		}
		if h.Quantity <= 0 {
			return nil, fmt.Errorf("item %q with quantity %d", h.Item, h.Quantity)
		}
		m[h.Item] = h.Quantity
	}
	return m, nil
}

// compareInfo reports how Info differs from the fold of the account's stream ("" if not).
func compareInfo(in app.Info, f *folded) string {
	var diffs []string
	if in.Coins != int64(f.acc.Balance) {
		diffs = append(diffs, fmt.Sprintf("coins %d, fold %d", in.Coins, f.acc.Balance))
	}
	if in.Version != f.acc.Version {
		diffs = append(diffs, fmt.Sprintf("version %d, fold %d", in.Version, f.acc.Version))
	}
	items, err := holdings(in)
	if err != nil {
		diffs = append(diffs, err.Error())
	} else if !maps.Equal(items, f.acc.Items) && !(len(items) == 0 && len(f.acc.Items) == 0) {
		diffs = append(diffs, fmt.Sprintf("inventory %v, fold %v", items, f.acc.Items))
	}
	if !slices.Equal(in.Sent, f.sent) && !(len(in.Sent) == 0 && len(f.sent) == 0) {
		diffs = append(diffs, fmt.Sprintf("sent %v, fold %v", in.Sent, f.sent))
	}
	if !slices.Equal(in.Received, f.received) && !(len(in.Received) == 0 && len(f.received) == 0) {
		diffs = append(diffs, fmt.Sprintf("received %v, fold %v", in.Received, f.received))
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint(diffs)
}

// readInventory returns the inventory_v1 rows of the account.
func readInventory(ctx context.Context, id uuid.UUID) (map[string]int64, error) {
	rows, err := db.Pool.Query(ctx, `SELECT item, quantity FROM inventory_v1 WHERE account_id = $1`, id)
	if err != nil {
		return nil, err
	}
	items := map[string]int64{}
	var item string
	var q int64
	_, err = pgx.ForEachRow(rows, []any{&item, &q}, func() error { items[item] = q; return nil })
	return items, err
}

// openAccounts opens n accounts named prefix0..prefix(n-1) with a pool of workers.
func openAccounts(tb testing.TB, a *app.App, prefix string, n, workers int) ([]string, []uuid.UUID) {
	tb.Helper()
	names := make([]string, n)
	ids := make([]uuid.UUID, n)
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				name := fmt.Sprintf("%s%d", prefix, i)
				id, _, err := a.OpenAccount(context.Background(), name, "hash")
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("open %s: %w", name, err)
					}
					mu.Unlock()
					continue
				}
				names[i], ids[i] = name, id
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		tb.Fatal(firstErr)
	}
	return names, ids
}

// dumpProjectionState logs where each projection stands against the log, for a failure report.
func dumpProjectionState(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	var maxPos int64
	var maxTx string
	_ = db.Pool.QueryRow(ctx, `SELECT COALESCE(max(global_position), 0), COALESCE(max(transaction_id)::text, '') FROM events`).Scan(&maxPos, &maxTx)
	tb.Logf("log: last position %d, last transaction %s", maxPos, maxTx)
	rows, err := db.Pool.Query(ctx, `
		SELECT c.consumer_group, c.transaction_id::text, c.position,
		       (SELECT count(*) FROM events e WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.position)),
		       COALESCE(s.state, ''), COALESCE(s.last_error, '')
		FROM projection_checkpoints c LEFT JOIN projection_status s USING (consumer_group) ORDER BY 1`)
	if err != nil {
		tb.Logf("dump: %v", err)
		return
	}
	var group, tx, state, lastErr string
	var pos, after int64
	_, err = pgx.ForEachRow(rows, []any{&group, &tx, &pos, &after, &state, &lastErr}, func() error {
		tb.Logf("projection %s: checkpoint %s:%d, %d events after it, state %q %s", group, tx, pos, after, state, lastErr)
		return nil
	})
	if err != nil {
		tb.Logf("dump: %v", err)
	}
	rows, err = db.Pool.Query(ctx, `SELECT pid, state || COALESCE(' waiting for ' || wait_event_type || '/' || wait_event, ''), backend_xid::text, backend_xmin::text, now() - xact_start, left(query, 120)
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'`)
	if err != nil {
		tb.Logf("dump: %v", err)
		return
	}
	var pid int
	var st string
	var xid, xmin *string
	var age *time.Duration
	var q string
	_, err = pgx.ForEachRow(rows, []any{&pid, &st, &xid, &xmin, &age, &q}, func() error {
		tb.Logf("backend %d %s xid %v xmin %v for %v: %s", pid, st, deref2(xid), deref2(xmin), age, q)
		return nil
	})
	if err != nil {
		tb.Logf("dump: %v", err)
	}
}

func deref2(p *string) string {
	if p == nil {
		return "-"
	}
	return *p
}
