package projections_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ledger/ledger/projections"
)

// followRunner runs a runner that follows projection_versions, as a serving process does.
func (w *world) followRunner() *projections.Runner {
	w.t.Helper()
	r := projections.NewRunner(db.Pool, w.wake, testLog(w.t), projections.Config{Follow: true, FollowInterval: 50 * time.Millisecond},
		projections.Versions()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	w.t.Cleanup(func() { cancel(); <-done })
	return r
}

// trafficInBackground writes rounds of traffic until the returned function is called, which
// waits for the round in flight.
func (w *world) trafficInBackground() (stop func()) {
	stopping, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stopping:
				return
			default:
				w.traffic(5)
			}
		}
	}()
	return func() { close(stopping); <-done }
}

// checkBalanceV2 compares balance_v2 with the fold of every account's stream, totals included.
func (w *world) checkBalanceV2() {
	w.t.Helper()
	ctx := context.Background()
	for name, id := range w.users {
		acc := w.foldAccount(id)
		var coins, received, sent, spent int64
		if err := db.Pool.QueryRow(ctx, `SELECT coins, received, sent, spent FROM balance_v2 WHERE account_id = $1`, id).
			Scan(&coins, &received, &sent, &spent); err != nil {
			w.t.Fatalf("%s: balance_v2: %v", name, err)
		}
		if coins != int64(acc.Balance) || received != int64(acc.Received) || sent != int64(acc.Sent) || spent != int64(acc.Spent) {
			w.t.Errorf("%s: balance_v2 has coins %d received %d sent %d spent %d; the log folds to %d/%d/%d/%d",
				name, coins, received, sent, spent, acc.Balance, acc.Received, acc.Sent, acc.Spent)
		}
	}
}

// A rebuild builds balance v2 from history while traffic goes on, switches reads to it, and
// retires v1; the following runner takes v2 over.
func TestRebuildSwitchesToTheNewVersionUnderTraffic(t *testing.T) {
	w := newWorld(t)
	w.traffic(300)
	w.settle() // the build reads these
	r := w.followRunner()
	w.waitCaughtUp()

	stopTraffic := w.trafficInBackground()
	var phases []string
	rep, err := projections.Rebuild(context.Background(), db.Pool, "balance", projections.RebuildOptions{
		Log: testLog(t), PageSize: 100, Grace: 300 * time.Millisecond,
		Progress: func(p projections.RebuildProgress) {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
		},
	})
	stopTraffic()
	if err != nil {
		t.Fatal(err)
	}
	if rep.From != 1 || rep.To != 2 || rep.Events == 0 || rep.Accounts != 4 {
		t.Fatalf("report %+v", rep)
	}
	want := []string{"building", "catching up", "switching", "retiring", "done"}
	if len(phases) != len(want) {
		t.Fatalf("phases %v, want %v", phases, want)
	}
	var active int
	_ = db.Pool.QueryRow(context.Background(), `SELECT active_version FROM projection_versions WHERE name = 'balance'`).Scan(&active)
	if active != 2 {
		t.Fatalf("balance active version %d after the rebuild", active)
	}
	w.traffic(10) // after the switch: only the following runner projects v2 now
	w.waitCaughtUp("balance_v2", "inventory_v1", "history_v2")
	w.checkBalanceV2()
	var v1rows int
	_ = db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM balance_v1`).Scan(&v1rows)
	if v1rows != 0 {
		t.Errorf("balance_v1 still has %d rows after being retired", v1rows)
	}
	if !r.Running() {
		t.Error("the following runner is not running after the switch")
	}
	if c := r.Counters("balance_v2"); c.Applied == 0 {
		t.Errorf("the following runner did not take v2 over: %+v", c)
	}
	st, err := projections.Statuses(context.Background(), db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == "balance" && (s.ActiveVersion != 2 || s.State != "live") {
			t.Errorf("status %+v", s)
		}
	}
	// Nothing is left to rebuild.
	if _, err := projections.Rebuild(context.Background(), db.Pool, "balance", projections.RebuildOptions{}); !errors.Is(err, projections.ErrNothingToRebuild) {
		t.Errorf("second rebuild: %v, want ErrNothingToRebuild", err)
	}
}

// A database that served history v1 before version 2 existed moves to the paged history by a
// rebuild under traffic, without a pause: v1 serves until the switch, v2 after it, and both
// hold exactly the log's transfer halves.
func TestRebuildMovesHistoryToPagesUnderTraffic(t *testing.T) {
	w := newWorld(t)
	if _, err := db.Pool.Exec(context.Background(), `UPDATE projection_versions SET active_version = 1 WHERE name = 'history'`); err != nil {
		t.Fatal(err)
	}
	w.traffic(150) // more than one page of history_v2 for some accounts
	w.settle()
	w.followRunner()
	w.waitCaughtUp("balance_v1", "inventory_v1", "history_v1")
	w.checkHistory(projections.History())

	stopTraffic := w.trafficInBackground()
	rep, err := projections.Rebuild(context.Background(), db.Pool, "history", projections.RebuildOptions{
		Log: testLog(t), PageSize: 100, Grace: 300 * time.Millisecond})
	stopTraffic()
	if err != nil {
		t.Fatal(err)
	}
	if rep.From != 1 || rep.To != 2 {
		t.Fatalf("report %+v", rep)
	}
	w.traffic(10)
	w.waitCaughtUp("balance_v1", "inventory_v1", "history_v2")
	w.checkHistory(projections.HistoryV2())
	var pages, longest, v1rows int
	_ = db.Pool.QueryRow(context.Background(), `SELECT count(*), max(page) FROM history_v2`).Scan(&pages, &longest)
	_ = db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM history_v1`).Scan(&v1rows)
	if longest < 1 {
		t.Errorf("no account's history reached a second page (%d pages): the test does not cover page turns", pages)
	}
	if v1rows != 0 {
		t.Errorf("history_v1 still has %d rows after being retired", v1rows)
	}
}

// Two rebuilds of one projection cannot run at once; a rebuild that dies before the switch
// leaves the old version serving and can simply run again.
func TestRebuildIsExclusiveAndRestartable(t *testing.T) {
	w := newWorld(t)
	w.traffic(200)
	w.settle() // the build reads these, in more than three pages
	ctx := context.Background()

	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(1279607890, hashtext('balance'))`); err != nil {
		t.Fatal(err)
	}
	_, err = projections.Rebuild(ctx, db.Pool, "balance", projections.RebuildOptions{})
	_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock(1279607890, hashtext('balance'))`)
	conn.Release()
	if !errors.Is(err, projections.ErrRebuildRunning) {
		t.Fatalf("rebuild while another holds the lock: %v", err)
	}

	// Die in the middle of the build.
	dying, die := context.WithCancel(ctx)
	pages := 0
	_, err = projections.Rebuild(dying, db.Pool, "balance", projections.RebuildOptions{PageSize: 50,
		Progress: func(p projections.RebuildProgress) {
			if p.Phase == "building" {
				if pages++; pages == 3 {
					die()
				}
			}
		}})
	if err == nil {
		t.Fatal("the interrupted rebuild reported success")
	}
	var active int
	_ = db.Pool.QueryRow(ctx, `SELECT active_version FROM projection_versions WHERE name = 'balance'`).Scan(&active)
	if active != 1 {
		t.Fatalf("an interrupted rebuild switched reads to v%d", active)
	}
	r, _ := w.runner(projections.Config{}) // v1 keeps serving
	w.waitCaughtUp()
	w.checkReadModels()
	_ = r
	if _, err := projections.Rebuild(ctx, db.Pool, "balance", projections.RebuildOptions{Grace: 100 * time.Millisecond}); err != nil {
		t.Fatalf("rebuild after the interrupted one: %v", err)
	}
	w.followRunner()
	w.waitCaughtUp("balance_v2")
	w.checkBalanceV2()
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(&testWriter{t}, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// Balance v2 keeps totals even when a batch leaves an account's coins where they were: coins
// received and the same coins sent on, applied in one batch.
func TestBalanceV2KeepsTotalsOfABatchThatNetsToZero(t *testing.T) {
	w := newWorld(t)
	if _, err := db.Pool.Exec(context.Background(), `UPDATE projection_versions SET active_version = 2 WHERE name = 'balance'`); err != nil {
		t.Fatal(err)
	}
	w.open("ann")
	w.open("ben")
	_, stop := w.startRunner(projections.Config{})
	w.waitCaughtUp("balance_v2")
	stop()
	w.transfer("ann", "ben", 2)
	w.transfer("ben", "ann", 2) // ben: +2 then -2, read in one batch by the next runner
	w.startRunner(projections.Config{})
	w.waitCaughtUp("balance_v2")
	w.checkBalanceV2()
}
