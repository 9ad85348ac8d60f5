package projections_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/projections"
)

type world struct {
	t     *testing.T
	store *eventstore.Store
	wake  *notify.Signal
	users map[string]uuid.UUID
	// rounds counts the rounds of traffic written so far.
	rounds int
}

func newWorld(t *testing.T) *world {
	db.Reset(t)
	wake := notify.NewSignal()
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

// traffic writes n more rounds of purchases and transfers among the accounts, never
// overdrawing, however often it is called: the rounds go on where the last call stopped, so
// that over every twelve rounds each account sends what it receives, and a purchase is paid
// with coins granted for it.
func (w *world) traffic(n int) {
	names := []string{"ann", "ben", "cat", "dan"}
	for _, name := range names {
		if _, ok := w.users[name]; !ok {
			w.open(name)
		}
	}
	for range n {
		i := w.rounds
		w.rounds++
		a, b := names[i%4], names[(i+1)%4]
		w.transfer(a, b, domain.Coins(1+i%3))
		if i%5 == 0 {
			w.grant(a, 10)
			w.buy(a, "pen", 10)
		}
	}
}

func (w *world) grant(who string, amount domain.Coins) {
	w.append(eventstore.StreamAppend{StreamID: domain.StreamID(w.users[who]), Expected: eventstore.Any(),
		Events: data(domain.CoinsGranted{Amount: amount, Reason: "traffic"})})
}

// settle waits until every event written so far is below the log's fence, where a rebuild
// reads: a transaction of another test on the shared server may hold the fence back.
func (w *world) settle() {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var head int64
	if err := db.Pool.QueryRow(ctx, `SELECT COALESCE(max(transaction_id)::text::bigint, 0) FROM events`).Scan(&head); err != nil {
		w.t.Fatal(err)
	}
	if err := w.store.WaitSettled(ctx, uint64(head)+1); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) runner(cfg projections.Config) (*projections.Runner, func()) {
	return w.runnerOn(db.Pool, cfg)
}

// runnerOn starts the projections' runner on pool.
func (w *world) runnerOn(pool *pgxpool.Pool, cfg projections.Config) (*projections.Runner, func()) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{w.t}, nil))
	}
	r := projections.NewRunner(pool, w.wake, log, cfg, projections.All()...)
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
		groups = []string{"balance_v1", "inventory_v1", "history_v2"}
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

// foldAccount folds the account's whole stream from the log: what every read model of it
// has to agree with.
func (w *world) foldAccount(id uuid.UUID) *domain.Account {
	w.t.Helper()
	evs, err := w.store.Load(context.Background(), domain.StreamID(id), 0)
	if err != nil {
		w.t.Fatal(err)
	}
	acc := &domain.Account{}
	for _, e := range evs {
		ev, err := e.Decode()
		if err != nil {
			w.t.Fatal(err)
		}
		if err := acc.Apply(ev); err != nil {
			w.t.Fatal(err)
		}
	}
	return acc
}

// checkReadModels compares every read model with the fold of the event log.
func (w *world) checkReadModels() {
	w.t.Helper()
	ctx := context.Background()
	for name, id := range w.users {
		acc := w.foldAccount(id)
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
	}
	w.checkHistory(projections.HistoryV2())
}

// checkHistory compares every account's coin history in p's read model with its transfer
// halves in the log: the same entries, each at its own stream version and time.
func (w *world) checkHistory(p projections.Projection) {
	w.t.Helper()
	ctx := context.Background()
	got := map[uuid.UUID][]projections.HistoryEntry{}
	if err := projections.ReadHistory(ctx, db.Pool, p, func(account uuid.UUID, e projections.HistoryEntry) {
		got[account] = append(got[account], e)
	}); err != nil {
		w.t.Fatal(err)
	}
	for name, id := range w.users {
		evs, err := w.store.Load(ctx, domain.StreamID(id), 0)
		if err != nil {
			w.t.Fatal(err)
		}
		var want []projections.HistoryEntry
		for _, e := range evs {
			ev, err := e.Decode()
			if err != nil {
				w.t.Fatal(err)
			}
			en := projections.HistoryEntry{Version: e.Version, At: e.RecordedAt}
			switch ev := ev.(type) {
			case domain.CoinsSent:
				en.Sent, en.Counterpart, en.Amount, en.Transfer = true, ev.To.Username, int64(ev.Amount), ev.TransferID
			case domain.CoinsReceived:
				en.Counterpart, en.Amount, en.Transfer = ev.From.Username, int64(ev.Amount), ev.TransferID
			default:
				continue
			}
			want = append(want, en)
		}
		have := got[id]
		slices.SortFunc(have, func(a, b projections.HistoryEntry) int { return cmp.Compare(a.Version, b.Version) })
		if len(have) != len(want) {
			w.t.Errorf("%s: %s holds %d entries, the log %d transfer halves", name, p.Group(), len(have), len(want))
			continue
		}
		for i := range want {
			if h := have[i]; h.Version != want[i].Version || h.Sent != want[i].Sent || h.Counterpart != want[i].Counterpart ||
				h.Amount != want[i].Amount || h.Transfer != want[i].Transfer || !h.At.Equal(want[i].At) {
				w.t.Errorf("%s: %s entry %d is %+v, the log's %+v", name, p.Group(), i, h, want[i])
				break
			}
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
	_, _ = w.runner(projections.Config{BeforeApply: func(group string, e eventstore.RecordedEvent) error {
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
	_, stop := w.runner(projections.Config{BatchSize: 100, BeforeApply: func(group string, e eventstore.RecordedEvent) error {
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

// holdOpen appends a grant to the account in a transaction that stays open until release is
// called; it returns the transaction's id and release, which waits for the commit.
func (w *world) holdOpen(name string, expected int64, amount domain.Coins) (xid string, release func()) {
	w.t.Helper()
	return w.holdOpenIn(w.store, name, expected, amount)
}

// holdOpenUnheard is holdOpen through a store that wakes no projector when it commits.
func (w *world) holdOpenUnheard(name string, expected int64, amount domain.Coins) (xid string, release func()) {
	w.t.Helper()
	return w.holdOpenIn(eventstore.New(db.Pool), name, expected, amount)
}

func (w *world) holdOpenIn(store *eventstore.Store, name string, expected int64, amount domain.Coins) (xid string, release func()) {
	w.t.Helper()
	inTx, proceed, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := store.Append(context.Background(), []eventstore.StreamAppend{{StreamID: domain.StreamID(w.users[name]),
			Expected: eventstore.Exactly(expected), Events: data(domain.CoinsGranted{Amount: amount, Reason: "held open"})}},
			eventstore.InTransaction(func(ctx context.Context, tx pgx.Tx) error {
				err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid)
				close(inTx)
				<-proceed
				return err
			}))
		done <- err
	}()
	<-inTx
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(proceed)
			if err := <-done; err != nil {
				w.t.Error(err)
			}
		})
	}
	w.t.Cleanup(release) // never leave the server-wide fence held by a failed test
	return xid, release
}

// checkpointsPast returns the consumer groups whose checkpoint is at or past transaction xid.
func checkpointsPast(t *testing.T, xid string) []string {
	t.Helper()
	return queryGroups(t, `SELECT consumer_group FROM projection_checkpoints WHERE transaction_id >= $1::xid8`, xid)
}

// queryGroups returns the consumer groups a query selects.
func queryGroups(t *testing.T, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return groups
}

// Two transactions commit out of log order: T1 (the older transaction id) is still open when
// T2 commits. The projectors read the log below its fence, so they wait for T1 instead of
// skipping it: while it is open no checkpoint passes it and T2 is not applied either; once it
// commits, both are applied, once each.
func TestProjectorWaitsForAnOutOfOrderCommitInsteadOfSkippingIt(t *testing.T) {
	w := newWorld(t)
	w.open("early")
	w.open("late")
	r, _ := w.runner(projections.Config{PollInterval: 20 * time.Millisecond})
	w.waitCaughtUp()

	t1, releaseT1 := w.holdOpen("early", 2, 5)
	w.append(eventstore.StreamAppend{StreamID: domain.StreamID(w.users["late"]), Expected: eventstore.Exactly(2),
		Events: data(domain.CoinsGranted{Amount: 7, Reason: "t2"})})

	time.Sleep(200 * time.Millisecond) // polls go on meanwhile
	if passed := checkpointsPast(t, t1); len(passed) > 0 {
		t.Fatalf("the checkpoints of %v passed T1 (transaction %s) while it was still open", passed, t1)
	}
	if ahead := queryGroups(t, `SELECT consumer_group FROM projection_heads WHERE account_id = $1 AND version > 2`,
		w.users["late"]); len(ahead) > 0 {
		t.Fatalf("%v applied T2 while T1, before it in the log, was still open", ahead)
	}
	releaseT1()
	w.waitCaughtUp()
	w.checkReadModels()
	for _, g := range []string{"balance_v1", "inventory_v1", "history_v2"} {
		if c := r.Counters(g); c.Failures != 0 || c.Redelivered != 0 {
			t.Errorf("%s counters %+v: want no failure, and T2 not sent again", g, c)
		}
	}
}

// A projector stopped right after a late commit must not have moved its checkpoint past it.
// Here T1 commits out of log order after T2, wakes no projector, and the projectors stop
// before they poll again; started again, they must apply T1.
func TestStoppingProjectorDoesNotSkipALateCommit(t *testing.T) {
	w := newWorld(t)
	w.open("early")
	w.open("late")
	_, stop := w.runner(projections.Config{PollInterval: time.Hour}) // they poll when woken
	w.waitCaughtUp()

	t1, releaseT1 := w.holdOpenUnheard("early", 2, 5) // T1's commit wakes nobody
	w.append(eventstore.StreamAppend{StreamID: domain.StreamID(w.users["late"]), Expected: eventstore.Exactly(2),
		Events: data(domain.CoinsGranted{Amount: 7, Reason: "t2"})})
	time.Sleep(50 * time.Millisecond) // T2's commit woke the projectors, which polled
	releaseT1()
	stop()

	if skipped := checkpointsPastUnapplied(t, t1, w.users["early"], 3); len(skipped) > 0 {
		t.Fatalf("stopping moved the checkpoints of %v past T1 (transaction %s), which they never applied", skipped, t1)
	}
	w.runner(projections.Config{PollInterval: time.Hour})
	w.waitCaughtUp()
	w.checkReadModels()
}

// Projectors stopped and started again at random moments, while transactions commit out of
// log order (some without waking them), apply every event once and skip none: the read models
// end as the fold of the log, and no guard meets a gap on the way.
func TestRestartsAmidLateCommitsSkipNothing(t *testing.T) {
	w := newWorld(t)
	w.traffic(4)
	w.open("slow")
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	version := int64(2) // of the account "slow"
	for range 25 {
		r, stop := w.runner(projections.Config{PollInterval: 50 * time.Millisecond})
		hold := w.holdOpen
		if rng.IntN(2) == 0 {
			hold = w.holdOpenUnheard
		}
		_, release := hold("slow", version, 1)
		version++
		w.traffic(1 + rng.IntN(3))
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		release()
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		stop()
		for _, g := range []string{"balance_v1", "inventory_v1", "history_v2"} {
			if c := r.Counters(g); c.Failures != 0 {
				t.Fatalf("%s failed %d times on a log with no bad event: the guard met a gap", g, c.Failures)
			}
		}
	}
	w.runner(projections.Config{})
	w.waitCaughtUp()
	w.checkReadModels()
}

// checkpointsPastUnapplied returns the consumer groups whose checkpoint is at or past
// transaction xid while they have not applied version of account.
func checkpointsPastUnapplied(t *testing.T, xid string, account uuid.UUID, version int64) []string {
	t.Helper()
	return queryGroups(t, `
		SELECT c.consumer_group FROM projection_checkpoints c
		LEFT JOIN projection_heads h ON h.consumer_group = c.consumer_group AND h.account_id = $2
		WHERE c.transaction_id >= $1::xid8 AND COALESCE(h.version, 0) < $3`, xid, account, version)
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
		BeforeApply: func(group string, e eventstore.RecordedEvent) error {
			if group == "history_v2" && e.Position == poison && poisoned.Load() {
				return errors.New("injected: cannot handle this event")
			}
			return nil
		}})
	w.waitCaughtUp("balance_v1", "inventory_v1")
	deadline := time.Now().Add(20 * time.Second)
	var state string
	var failedAt *int64
	for {
		_ = db.Pool.QueryRow(context.Background(), `SELECT state, failed_position FROM projection_status WHERE consumer_group = 'history_v2'`).Scan(&state, &failedAt)
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
	_ = db.Pool.QueryRow(context.Background(), `SELECT position FROM projection_checkpoints WHERE consumer_group = 'history_v2'`).Scan(&cp)
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
		_ = db.Pool.QueryRow(context.Background(), `SELECT state FROM projection_status WHERE consumer_group = 'history_v2'`).Scan(&state)
	}
}

// An event whose predecessor the projection never applied (here: the head moved back behind
// the projector's back) stops the projection at that event: the version guard refuses the
// batch, which is then applied event by event until the gap is named, and nothing after it
// is applied or checkpointed. The other projections go on. Once the gap is mended the
// projection resumes from its checkpoint.
func TestGapStopsTheProjectionInsteadOfSkipping(t *testing.T) {
	w := newWorld(t)
	w.traffic(8)
	_, stop := w.runner(projections.Config{})
	w.waitCaughtUp()
	stop()
	ctx := context.Background()
	ann := w.users["ann"]
	var head int64
	if err := db.Pool.QueryRow(ctx, `UPDATE projection_heads SET version = version - 1
		WHERE consumer_group = 'balance_v1' AND account_id = $1 RETURNING version + 1`, ann).Scan(&head); err != nil {
		t.Fatal(err)
	}
	var coinsBefore int64
	_ = db.Pool.QueryRow(ctx, `SELECT coins FROM balance_v1 WHERE account_id = $1`, ann).Scan(&coinsBefore)
	w.transfer("ben", "cat", 1)
	w.transfer("ben", "ann", 2) // ann's next version follows head, which the projection no longer holds
	var gapAt int64
	_ = db.Pool.QueryRow(ctx, `SELECT max(global_position) FROM events WHERE stream_id = $1`, domain.StreamID(ann)).Scan(&gapAt)
	w.transfer("cat", "dan", 1)

	r, stop := w.runner(projections.Config{MaxAttempts: 2, RetryInterval: 5 * time.Millisecond, RestartBackoff: time.Hour})
	w.waitCaughtUp("inventory_v1", "history_v2")
	var state, lastError string
	var failedAt *int64
	deadline := time.Now().Add(20 * time.Second)
	for state != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("balance never reported failed (state %q)", state)
		}
		time.Sleep(10 * time.Millisecond)
		_ = db.Pool.QueryRow(ctx, `SELECT state, failed_position, COALESCE(last_error, '') FROM projection_status
			WHERE consumer_group = 'balance_v1'`).Scan(&state, &failedAt, &lastError)
	}
	if failedAt == nil || *failedAt != gapAt {
		t.Errorf("failed at %v, want the event after the gap at %d", failedAt, gapAt)
	}
	if !strings.Contains(lastError, "an event is missing") || !strings.Contains(lastError, ann.String()) {
		t.Errorf("last error %q does not name the gap on %s", lastError, ann)
	}
	var cp, coins int64
	_ = db.Pool.QueryRow(ctx, `SELECT position FROM projection_checkpoints WHERE consumer_group = 'balance_v1'`).Scan(&cp)
	if cp >= gapAt {
		t.Errorf("balance checkpoint %d moved past the gap at %d", cp, gapAt)
	}
	_ = db.Pool.QueryRow(ctx, `SELECT coins FROM balance_v1 WHERE account_id = $1`, ann).Scan(&coins)
	if coins != coinsBefore {
		t.Errorf("ann's balance moved from %d to %d across the gap", coinsBefore, coins)
	}
	if c := r.Counters("balance_v1"); c.Failures == 0 {
		t.Errorf("balance counters %+v count no failure", c)
	}

	if _, err := db.Pool.Exec(ctx, `UPDATE projection_heads SET version = $2
		WHERE consumer_group = 'balance_v1' AND account_id = $1`, ann, head); err != nil {
		t.Fatal(err)
	}
	stop()
	w.runner(projections.Config{})
	w.waitCaughtUp()
	w.checkReadModels()
}

// A projector told to stop while its batch is failing (the database went away as the lease
// was lost, say) gives up on the batch and stops: it does not wait for a drain that the
// failing batch never lets finish.
func TestStopWhileABatchFailsEnds(t *testing.T) {
	w := newWorld(t)
	w.traffic(40)
	var stopping atomic.Bool
	stopFn := make(chan func(), 1)
	stopped := make(chan struct{})
	_, stop := w.runner(projections.Config{BatchSize: 10, MaxAttempts: 2, RetryInterval: 10 * time.Millisecond,
		BeforeApply: func(group string, e eventstore.RecordedEvent) error {
			if group != "balance_v1" || e.Position < 15 {
				return nil
			}
			if !stopping.Swap(true) {
				go func() { (<-stopFn)(); close(stopped) }()
				time.Sleep(200 * time.Millisecond) // the stop has begun: this batch is being drained
			}
			return errors.New("injected failure while stopping")
		}})
	stopFn <- stop
	select {
	case <-stopped:
	case <-time.After(40 * time.Second):
		t.Fatal("the runner did not stop while a batch was failing")
	}
	var cp int64
	if err := db.Pool.QueryRow(context.Background(), `SELECT position FROM projection_checkpoints WHERE consumer_group = 'balance_v1'`).Scan(&cp); err != nil {
		t.Fatal(err)
	}
	if cp >= 15 {
		t.Fatalf("checkpoint %d: it moved past the event that failed", cp)
	}
	w.runner(projections.Config{})
	w.waitCaughtUp()
	w.checkReadModels()
}
