package audit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
)

// benchEvents is the size of BenchmarkVerify's log: LEDGER_BENCH_EVENTS, default 1,000,000.
func benchEvents() int {
	if n, err := strconv.Atoi(os.Getenv("LEDGER_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// BenchmarkVerify replays a log of benchEvents() events over benchEvents()/100 accounts whose
// read models are all caught up, so that every account is compared with every read model.
//
//	LEDGER_BENCH_EVENTS=1000000 go test -run '^$' -bench Verify -benchtime 1x ./internal/audit/
func BenchmarkVerify(b *testing.B) {
	n := benchEvents()
	store := generateLedger(b, n, max(2, n/100))
	ctx := context.Background()
	var rep *audit.Report
	var runs []string
	cpu := processCPU()
	for b.Loop() {
		var err error
		if rep, err = audit.Verify(ctx, store, audit.VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
		runs = append(runs, fmt.Sprintf("%.0f", rep.EventsPerSecond()))
		if !rep.OK() || rep.Events != int64(n) {
			b.Fatalf("verify found %d mismatches over %d events, first: %v", len(rep.Mismatches), rep.Events, rep.Mismatches)
		}
	}
	// The machine is shared: the CPU time the verifier itself spent per event is the steadier
	// figure (PostgreSQL's share is not in it).
	b.ReportMetric(float64(rep.Events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(rep.Events*int64(b.N)), "cpu-ns/event")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.Logf("%d events, %d accounts, %d comparisons, %d snapshots; events/s of each run: %v; heap in use %d MiB",
		rep.Events, rep.Accounts, rep.Comparisons, rep.Snapshots, runs, ms.HeapInuse>>20)
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// generated remembers the ledger a benchmark generated, so that the framework's repeated runs
// of the benchmark function do not generate it again.
var generated struct {
	mu     sync.Mutex
	events int
	store  *eventstore.Store
}

// generateLedger writes a valid log of exactly events events over the given number of accounts
// straight through eventstore.Append, thousands of events per append, with the domain deciding
// every event (grants, purchases, transfers), and writes the read models as caught-up
// projectors would have.
func generateLedger(b *testing.B, events, accounts int) *eventstore.Store {
	b.Helper()
	generated.mu.Lock()
	defer generated.mu.Unlock()
	if generated.events == events {
		return generated.store
	}
	began := time.Now()
	db.Reset(b)
	ctx := context.Background()
	var clockMu sync.Mutex
	stamp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store := eventstore.New(db.Pool, eventstore.WithClock(func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return stamp
	}))
	g := &generator{store: store, rng: rand.New(rand.NewPCG(1, 2)), catalog: domain.Catalog{"pen": 10, "cup": 20, "book": 50}}
	next := func() time.Time { // each append a millisecond after the one before
		clockMu.Lock()
		defer clockMu.Unlock()
		stamp = stamp.Add(time.Millisecond)
		return stamp
	}
	const perAppend = 2_000
	g.accs = make([]*domain.Account, accounts)
	for i := range accounts {
		id, _ := uuid.NewV7()
		g.accs[i] = &domain.Account{}
		evs, err := domain.OpenAccount(id, fmt.Sprintf("bench%06d", i))
		if err != nil {
			b.Fatal(err)
		}
		g.decide(g.accs[i], evs...)
		if g.pending >= perAppend {
			g.flush(ctx, b, next())
		}
	}
	for g.written+g.pending < events {
		// A window of accounts, each with a few events; a transfer stays within the window, so
		// that one append holds both of its halves.
		window := g.rng.Perm(len(g.accs))[:min(len(g.accs), 200)]
		for g.pending < perAppend && g.written+g.pending < events {
			from := g.accs[window[g.rng.IntN(len(window))]]
			switch r := g.rng.IntN(10); {
			case r < 6:
				if evs, err := from.Buy([]string{"pen", "cup", "book"}[g.rng.IntN(3)], g.catalog); err == nil {
					g.decide(from, evs...)
				}
			case r < 9 && g.written+g.pending+2 <= events:
				to := g.accs[window[g.rng.IntN(len(window))]]
				tid, _ := uuid.NewV7()
				if sent, received, err := from.Send(to.Ref(), domain.Coins(1+g.rng.IntN(25)), tid); err == nil {
					g.decide(from, sent)
					g.decide(to, received)
				}
			default:
				if evs, err := from.Grant(domain.Coins(50+g.rng.IntN(100)), "bench bonus", "admin"); err == nil {
					g.decide(from, evs...)
				}
			}
		}
		g.flush(ctx, b, next())
	}
	g.writeReadModels(ctx, b)
	if _, err := db.Pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d events over %d accounts in %s", g.written, len(g.accs), time.Since(began).Round(time.Millisecond))
	generated.events, generated.store = events, store
	return store
}

// generator decides events on in-memory accounts and appends them in large batches.
type generator struct {
	store   *eventstore.Store
	rng     *rand.Rand
	catalog domain.Catalog
	accs    []*domain.Account

	// batch: events decided since the last append, by account, with the version each
	// account had before them.
	batch   map[*domain.Account]*pendingStream
	order   []*domain.Account
	pending int
	written int

	transfers []transferRow
}

type pendingStream struct {
	before int64
	events []domain.Event
}

// transferRow is a history_v1 row once both halves are written.
type transferRow struct {
	id                   uuid.UUID
	from, to             domain.AccountRef
	fromVersion, version int64
	amount               domain.Coins
	at                   time.Time
}

// decide folds events into acc and queues them for the next append.
func (g *generator) decide(acc *domain.Account, events ...domain.Event) {
	if g.batch == nil {
		g.batch = make(map[*domain.Account]*pendingStream)
	}
	p, ok := g.batch[acc]
	if !ok {
		p = &pendingStream{before: acc.Version}
		g.batch[acc] = p
		g.order = append(g.order, acc)
	}
	for _, e := range events {
		if err := acc.Apply(e); err != nil {
			panic(fmt.Sprintf("generator decided an event the fold refuses: %v", err))
		}
	}
	p.events = append(p.events, events...)
	g.pending += len(events)
}

// flush appends the queued events, stamped at.
func (g *generator) flush(ctx context.Context, b *testing.B, at time.Time) {
	if g.pending == 0 {
		return
	}
	appends := make([]eventstore.StreamAppend, 0, len(g.order))
	sentAt := map[uuid.UUID]int64{} // transfer → sender's version, to fill history rows
	for _, acc := range g.order {
		p := g.batch[acc]
		data := make([]eventstore.EventData, len(p.events))
		for i, e := range p.events {
			data[i] = eventstore.EventData{Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Payload: e,
				Metadata: eventstore.Metadata{Actor: acc.Username}}
			if s, ok := e.(domain.CoinsSent); ok {
				sentAt[s.TransferID] = p.before + int64(i) + 1
			}
		}
		appends = append(appends, eventstore.StreamAppend{StreamID: domain.StreamID(acc.ID), Expected: eventstore.Exactly(p.before),
			Events: data, Snapshot: &eventstore.Snapshot{State: acc}})
	}
	for _, acc := range g.order {
		p := g.batch[acc]
		for i, e := range p.events {
			if r, ok := e.(domain.CoinsReceived); ok {
				g.transfers = append(g.transfers, transferRow{id: r.TransferID, from: r.From, to: r.To,
					fromVersion: sentAt[r.TransferID], version: p.before + int64(i) + 1, amount: r.Amount, at: at})
			}
		}
	}
	if _, err := g.store.Append(ctx, appends); err != nil {
		b.Fatal(err)
	}
	g.written += g.pending
	g.pending = 0
	clear(g.batch)
	g.order = g.order[:0]
}

// writeReadModels writes what caught-up projectors would hold: every account at its head.
func (g *generator) writeReadModels(ctx context.Context, b *testing.B) {
	var heads, balances, items, history [][]any
	for _, acc := range g.accs {
		for _, group := range []string{"balance_v1", "inventory_v1", "history_v1"} {
			heads = append(heads, []any{group, acc.ID, acc.Version})
		}
		balances = append(balances, []any{acc.ID, acc.Username, int64(acc.Balance)})
		for item, q := range acc.Items {
			items = append(items, []any{acc.ID, item, q})
		}
	}
	for _, t := range g.transfers {
		history = append(history, []any{t.id, t.from.ID, t.from.Username, t.fromVersion, t.to.ID, t.to.Username, t.version, int64(t.amount), t.at, int64(0)})
	}
	for _, c := range []struct {
		table   string
		columns []string
		rows    [][]any
	}{
		{"projection_heads", []string{"consumer_group", "account_id", "version"}, heads},
		{"balance_v1", []string{"account_id", "username", "coins"}, balances},
		{"inventory_v1", []string{"account_id", "item", "quantity"}, items},
		{"history_v1", []string{"transfer_id", "from_id", "from_username", "from_version", "to_id", "to_username", "to_version", "amount", "at", "position"}, history},
	} {
		if _, err := db.Pool.CopyFrom(ctx, pgx.Identifier{c.table}, c.columns, pgx.CopyFromRows(c.rows)); err != nil {
			b.Fatalf("write %s: %v", c.table, err)
		}
	}
	// History is written in version 1's shape (a row per transfer): it serves the reads.
	if _, err := db.Pool.Exec(ctx, `UPDATE projection_versions SET active_version = 1 WHERE name = 'history'`); err != nil {
		b.Fatal(err)
	}
}
