package projections_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/projections"
)

type world struct {
	t     *testing.T
	store *eventstore.Store
	wake  *projections.Signal
	users map[string]uuid.UUID
}

func newWorld(t *testing.T) *world {
	db.Reset(t)
	wake := projections.NewSignal()
	return &world{t: t, wake: wake, users: map[string]uuid.UUID{},
		store: eventstore.New(db.Pool, eventstore.WithAfterCommit(func(eventstore.AppendResult) { wake.Notify() }))}
}

func data(events ...domain.Event) []eventstore.EventData {
	out := make([]eventstore.EventData, len(events))
	for i, e := range events {
		out[i] = eventstore.EventData{Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Payload: e}
	}
	return out
}

func (w *world) open(name string) uuid.UUID {
	id := uuid.New()
	evs, err := domain.OpenAccount(id, name)
	if err != nil {
		w.t.Fatal(err)
	}
	w.append(eventstore.StreamAppend{StreamID: domain.StreamID(id), Expected: eventstore.NoStream(), Events: data(evs...)})
	w.users[name] = id
	return id
}

func (w *world) append(a ...eventstore.StreamAppend) {
	w.t.Helper()
	if _, err := w.store.Append(context.Background(), a); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) transfer(from, to string, amount domain.Coins) {
	f, t := domain.AccountRef{ID: w.users[from], Username: from}, domain.AccountRef{ID: w.users[to], Username: to}
	id := uuid.New()
	w.append(
		eventstore.StreamAppend{StreamID: domain.StreamID(f.ID), Expected: eventstore.Any(), Events: data(domain.CoinsSent{TransferID: id, From: f, To: t, Amount: amount})},
		eventstore.StreamAppend{StreamID: domain.StreamID(t.ID), Expected: eventstore.Any(), Events: data(domain.CoinsReceived{TransferID: id, From: f, To: t, Amount: amount})},
	)
}

func (w *world) buy(who, item string, price domain.Coins) {
	w.append(eventstore.StreamAppend{StreamID: domain.StreamID(w.users[who]), Expected: eventstore.Any(),
		Events: data(domain.ItemPurchased{Item: item, Price: price, Quantity: 1})})
}

// traffic writes n rounds of purchases and transfers among the accounts, never overdrawing.
func (w *world) traffic(n int) {
	names := []string{"ann", "ben", "cat", "dan"}
	for _, name := range names {
		if _, ok := w.users[name]; !ok {
			w.open(name)
		}
	}
	for i := range n {
		a, b := names[i%4], names[(i+1)%4]
		w.transfer(a, b, domain.Coins(1+i%3))
		if i%5 == 0 {
			w.buy(a, "pen", 10)
		}
	}
}

func (w *world) runner(cfg projections.Config) (*projections.Runner, func()) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{w.t}, nil))
	}
	r := projections.NewRunner(db.Pool, w.wake, log, cfg, projections.All()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				w.t.Error("runner did not stop")
			}
		})
	}
	w.t.Cleanup(stop)
	return r, stop
}

type testWriter struct{ t *testing.T }

func (tw *testWriter) Write(p []byte) (int, error) { tw.t.Log(string(p)); return len(p), nil }

// waitCaughtUp waits until every projection has applied every account's stream head.
func (w *world) waitCaughtUp(groups ...string) {
	w.t.Helper()
	if len(groups) == 0 {
		groups = []string{"balance_v1", "inventory_v1", "history_v1"}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var behind int
		err := db.Pool.QueryRow(context.Background(), `
			SELECT count(*) FROM streams s CROSS JOIN unnest($1::text[]) g
			LEFT JOIN projection_heads h ON h.consumer_group = g AND h.account_id = substr(s.stream_id, 9)::uuid
			WHERE COALESCE(h.version, 0) <> s.version`, groups).Scan(&behind)
		if err != nil {
			w.t.Fatal(err)
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("projections %v still behind on %d accounts", groups, behind)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkReadModels compares every read model with the fold of the event log.
func (w *world) checkReadModels() {
	w.t.Helper()
	ctx := context.Background()
	for name, id := range w.users {
		evs, err := w.store.Load(ctx, domain.StreamID(id), 0)
		if err != nil {
			w.t.Fatal(err)
		}
		acc := &domain.Account{}
		var sent, received int
		for _, e := range evs {
			ev, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
			if err != nil {
				w.t.Fatal(err)
			}
			if err := acc.Apply(ev); err != nil {
				w.t.Fatal(err)
			}
			switch ev.(type) {
			case domain.CoinsSent:
				sent++
			case domain.CoinsReceived:
				received++
			}
		}
		var coins int64
		if err := db.Pool.QueryRow(ctx, `SELECT coins FROM balance_v1 WHERE account_id = $1`, id).Scan(&coins); err != nil {
			w.t.Fatalf("%s balance: %v", name, err)
		}
		if coins != int64(acc.Balance) {
			w.t.Errorf("%s: read model has %d coins, the log folds to %d", name, coins, acc.Balance)
		}
		rows, _ := db.Pool.Query(ctx, `SELECT item, quantity FROM inventory_v1 WHERE account_id = $1`, id)
		items := map[string]int64{}
		var item string
		var q int64
		if _, err := pgx.ForEachRow(rows, []any{&item, &q}, func() error { items[item] = q; return nil }); err != nil {
			w.t.Fatal(err)
		}
		if !maps.Equal(items, acc.Items) && !(len(items) == 0 && len(acc.Items) == 0) {
			w.t.Errorf("%s: inventory %v, the log folds to %v", name, items, acc.Items)
		}
		var hs, hr int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE from_id = $1 AND from_version IS NOT NULL),
			count(*) FILTER (WHERE to_id = $1 AND to_version IS NOT NULL) FROM history_v1`, id).Scan(&hs, &hr); err != nil {
			w.t.Fatal(err)
		}
		if hs != sent || hr != received {
			w.t.Errorf("%s: history %d sent / %d received, the log has %d / %d", name, hs, hr, sent, received)
		}
	}
}

func TestProjectorsBuildReadModels(t *testing.T) {
	w := newWorld(t)
	w.traffic(50)
	r, _ := w.runner(projections.Config{})
	w.waitCaughtUp()
	w.checkReadModels()
	w.traffic(30) // live, after catch-up
	w.waitCaughtUp()
	w.checkReadModels()
	if c := r.Counters("balance_v1"); c.Applied == 0 || c.Failures != 0 {
		t.Fatalf("balance counters %+v", c)
	}
}

// A handler that fails once in the middle of a batch: the savepoint undoes the failed attempt,
// the redelivery applies the event once, and the rest of the batch is not applied twice.
func TestFailureMidBatchAppliesEverythingOnce(t *testing.T) {
	w := newWorld(t)
	w.traffic(40)
	var failed sync.Map
	_, _ = w.runner(projections.Config{BeforeApply: func(group string, e projections.Envelope) error {
		if e.Position%7 == 3 {
			if _, done := failed.LoadOrStore(fmt.Sprint(group, e.Position), true); !done {
				return errors.New("injected failure")
			}
		}
		return nil
	}})
	w.waitCaughtUp()
	w.checkReadModels()
	n := 0
	failed.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Fatal("no failure was injected")
	}
}

// A router stopped in the middle of a batch and started again applies everything exactly once.
func TestStopMidBatchAndResume(t *testing.T) {
	w := newWorld(t)
	w.traffic(200)
	var seen atomic.Int64
	stopped := make(chan struct{})
	stopFn := make(chan func(), 1) // the hook may run before w.runner has returned stop
	_, stop := w.runner(projections.Config{BatchSize: 100, BeforeApply: func(group string, e projections.Envelope) error {
		if group == "balance_v1" && seen.Add(1) == 150 {
			go func() { (<-stopFn)(); close(stopped) }()
		}
		return nil
	}})
	stopFn <- stop
	<-stopped
	var cp int64
	if err := db.Pool.QueryRow(context.Background(), `SELECT position FROM projection_checkpoints WHERE consumer_group = 'balance_v1'`).Scan(&cp); err != nil {
		t.Fatal(err)
	}
	var last int64
	_ = db.Pool.QueryRow(context.Background(), `SELECT max(global_position) FROM events`).Scan(&last)
	if cp == 0 || cp >= last {
		t.Fatalf("checkpoint %d of %d: the stop did not land mid-log", cp, last)
	}
	w.traffic(20)
	r2, _ := w.runner(projections.Config{})
	w.waitCaughtUp()
	w.checkReadModels()
	if c := r2.Counters("balance_v1"); c.Failures != 0 {
		t.Fatalf("restarted projector failed: %+v", c)
	}
}

// The projector must not skip an event whose transaction commits after a later one.
func TestProjectorWaitsForOutOfOrderCommit(t *testing.T) {
	w := newWorld(t)
	w.open("early")
	w.open("late")
	w.runner(projections.Config{PollInterval: 20 * time.Millisecond})
	w.waitCaughtUp()

	inT1, release, t1done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var releaseOnce sync.Once
	releaseT1 := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseT1) // never leave the server-wide fence held by a failed test
	go func() {
		_, err := w.store.Append(context.Background(), []eventstore.StreamAppend{{StreamID: domain.StreamID(w.users["early"]),
			Expected: eventstore.Exactly(2), Events: data(domain.CoinsGranted{Amount: 5, Reason: "t1"})}},
			eventstore.InTransaction(func(context.Context, pgx.Tx) error { close(inT1); <-release; return nil }))
		t1done <- err
	}()
	<-inT1
	w.append(eventstore.StreamAppend{StreamID: domain.StreamID(w.users["late"]), Expected: eventstore.Exactly(2),
		Events: data(domain.CoinsGranted{Amount: 7, Reason: "t2"})})

	// T2 is committed; the projector polls repeatedly but must not move past the open T1.
	time.Sleep(200 * time.Millisecond)
	var lateV int64
	_ = db.Pool.QueryRow(context.Background(), `SELECT version FROM projection_heads WHERE consumer_group = 'balance_v1' AND account_id = $1`, w.users["late"]).Scan(&lateV)
	if lateV != 2 {
		t.Fatalf("the projector applied T2 (version %d) while the older T1 was still open", lateV)
	}
	releaseT1()
	if err := <-t1done; err != nil {
		t.Fatal(err)
	}
	w.waitCaughtUp()
	w.checkReadModels()
}

// A projector that keeps failing on one event is marked failed, never skips it, leaves the
// other projections running, and resumes from its checkpoint once the cause is gone.
func TestFailingProjectionIsVisibleAndRecovers(t *testing.T) {
	w := newWorld(t)
	w.traffic(10)
	var poisoned atomic.Bool
	poisoned.Store(true)
	var poison int64
	_ = db.Pool.QueryRow(context.Background(), `SELECT max(global_position) FROM events WHERE event_type = 'CoinsSent'`).Scan(&poison)
	r, _ := w.runner(projections.Config{MaxAttempts: 3, RetryInterval: 5 * time.Millisecond, RestartBackoff: 50 * time.Millisecond,
		BeforeApply: func(group string, e projections.Envelope) error {
			if group == "history_v1" && e.Position == poison && poisoned.Load() {
				return errors.New("injected: cannot handle this event")
			}
			return nil
		}})
	w.waitCaughtUp("balance_v1", "inventory_v1")
	deadline := time.Now().Add(20 * time.Second)
	var state string
	var failedAt *int64
	for {
		_ = db.Pool.QueryRow(context.Background(), `SELECT state, failed_position FROM projection_status WHERE consumer_group = 'history_v1'`).Scan(&state, &failedAt)
		if state == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history never reported failed (state %q)", state)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if failedAt == nil || *failedAt != poison {
		t.Fatalf("failed at %v, want %d", failedAt, poison)
	}
	if r.Running() {
		t.Fatal("runner reports healthy while a projection is failed")
	}
	var cp int64
	_ = db.Pool.QueryRow(context.Background(), `SELECT position FROM projection_checkpoints WHERE consumer_group = 'history_v1'`).Scan(&cp)
	if cp >= poison {
		t.Fatalf("history checkpoint %d moved past the failing event %d", cp, poison)
	}
	poisoned.Store(false) // the fix
	w.waitCaughtUp()
	w.checkReadModels()
	deadline = time.Now().Add(20 * time.Second)
	for state != "live" || !r.Running() {
		if time.Now().After(deadline) {
			t.Fatalf("history did not recover: state %q", state)
		}
		time.Sleep(10 * time.Millisecond)
		_ = db.Pool.QueryRow(context.Background(), `SELECT state FROM projection_status WHERE consumer_group = 'history_v1'`).Scan(&state)
	}
}
