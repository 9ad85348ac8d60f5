package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/ledger/ledger/projections"
)

// startRunner runs a following runner, as one serving process does, until the returned stop.
func (w *world) startRunner(cfg projections.Config) (*projections.Runner, func()) {
	cfg.Follow = true
	cfg.FollowInterval = 50 * time.Millisecond
	cfg.LeaseRetry = 50 * time.Millisecond
	cfg.LeaseCheck = 50 * time.Millisecond
	r := projections.NewRunner(db.Pool, w.wake, testLog(w.t), cfg, projections.Versions()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	w.t.Cleanup(stop)
	return r, stop
}

func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > 10*time.Second {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(began)
}

var groups = []string{"balance_v1", "inventory_v1", "history_v2"}

// inEveryGroup is a condition for waitFor: holds is true of r's counters of every projection.
func inEveryGroup(r *projections.Runner, holds func(projections.Counters) bool) func() bool {
	return func() bool {
		for _, g := range groups {
			if !holds(r.Counters(g)) {
				return false
			}
		}
		return true
	}
}

func running(c projections.Counters) bool    { return c.Running }
func standingBy(c projections.Counters) bool { return c.Standby }

// Two processes share the database: each projection runs in exactly one of them; the other
// stands by and takes over when the first stops or loses its session.
func TestOneProcessRunsEachProjectionAndAnotherTakesOver(t *testing.T) {
	w := newWorld(t)
	a, stopA := w.startRunner(projections.Config{})
	waitFor(t, "a runs every projection", inEveryGroup(a, running))
	b, _ := w.startRunner(projections.Config{})
	waitFor(t, "b stands by", inEveryGroup(b, standingBy))
	if !b.Running() {
		t.Error("a standby process reports the projectors as not running")
	}
	w.traffic(30)
	w.waitCaughtUp()
	for _, g := range groups {
		if c := b.Counters(g); c.Applied != 0 || c.Running {
			t.Errorf("%s: the standby applied events while the other process ran it: %+v", g, c)
		}
	}

	stopA()
	took := waitFor(t, "b takes over", inEveryGroup(b, running))
	t.Logf("took over in %v", took)
	w.traffic(30)
	w.waitCaughtUp()
	w.checkReadModels()
	for _, g := range groups {
		if c := b.Counters(g); c.Applied == 0 {
			t.Errorf("%s: b did not apply after taking over: %+v", g, c)
		}
	}

	// b's lease sessions die (as when its connection to the database breaks): b notices and
	// stops; b or a third process takes each lease again, and exactly one runs it.
	c, _ := w.startRunner(projections.Config{})
	var terminated int
	if err := db.Pool.QueryRow(context.Background(), `
		SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1279607891
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&terminated); err != nil {
		t.Fatal(err)
	}
	if terminated == 0 {
		t.Fatal("no lease session to terminate")
	}
	waitFor(t, "one process runs each projection again", func() bool {
		for _, g := range groups {
			cb, cc := b.Counters(g), c.Counters(g)
			if cb.Running == cc.Running || cb.Standby == cc.Standby {
				return false
			}
		}
		return true
	})
	w.traffic(30)
	w.waitCaughtUp()
	w.checkReadModels()
}
