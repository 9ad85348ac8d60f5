package standby_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/internal/standby"
)

// replicated starts a primary with a standby, a table written on the primary, and a Router
// over them with the given wait bound.
func replicated(t *testing.T, wait time.Duration) (*pgtest.Cluster, *pgtest.Cluster, *pgxpool.Pool, *standby.Router) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL servers of its own")
	}
	primary := pgtest.StartCluster(t)
	primary.Exec("CREATE TABLE marks (n int PRIMARY KEY)")
	replica := primary.StartStandby(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, primary.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	sc, err := pgxpool.ParseConfig(replica.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := standby.New(pool, []*pgxpool.Config{sc}, standby.Config{Wait: wait, RetryAfter: 100 * time.Millisecond, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return primary, replica, pool, r
}

// readMark writes mark n on the primary, routes a read, and reads the mark where the read was
// routed: read-your-writes means it is always there.
func readMark(t *testing.T, pool *pgxpool.Pool, r *standby.Router, n int) (target int) {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO marks VALUES ($1)`, n); err != nil {
		t.Fatal(err)
	}
	target, err := r.Route(ctx)
	if err != nil {
		t.Fatalf("route: %v", err)
	}
	on := pool
	if target > 0 {
		on = r.Standbys()[target-1]
	}
	var seen bool
	if err := on.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM marks WHERE n = $1)`, n).Scan(&seen); err != nil {
		t.Fatalf("read on target %d: %v", target, err)
	}
	if !seen {
		t.Fatalf("mark %d, committed before the read, not seen on target %d", n, target)
	}
	return target
}

// waitReadsReturn reads marks until one is routed to the standby again; what says what became
// of the standby (resumed, restarted), for the failure message.
func waitReadsReturn(t *testing.T, pool *pgxpool.Pool, r *standby.Router, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for n := 100; ; n++ {
		if readMark(t, pool, r, n) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reads never returned to the %s standby: %v", what, r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func reads(r *standby.Router) (standbys, primary uint64, by map[string]uint64) {
	by = map[string]uint64{}
	s := r.Stats()
	for _, reason := range standby.Reasons() {
		by[reason.String()] = s.Reads[reason]
		if reason.Target() == standby.Standby {
			standbys += s.Reads[reason]
		} else {
			primary += s.Reads[reason]
		}
	}
	return standbys, primary, by
}

// A standby that keeps up serves the reads, each of which sees the write just before it.
func TestRouteToStandbyThatKeepsUp(t *testing.T) {
	_, _, pool, r := replicated(t, time.Second)
	for n := range 200 {
		readMark(t, pool, r, n)
	}
	onStandby, onPrimary, by := reads(r)
	t.Logf("reads: %v", by)
	if onStandby < 190 { // a bound of a second: only a standby failing would send reads away
		t.Errorf("%d of 200 reads on the standby, %d on the primary: %v", onStandby, onPrimary, by)
	}
}

// Replay paused: reads wait the bound, then go to the primary, and still see every write;
// the standby is then skipped without waiting until it has caught up again.
func TestRouteAroundPausedStandby(t *testing.T) {
	_, replica, pool, r := replicated(t, 20*time.Millisecond)
	readMark(t, pool, r, 0)
	replica.Exec("SELECT pg_wal_replay_pause()")
	for n := 1; n <= 20; n++ {
		if target := readMark(t, pool, r, n); target != 0 {
			t.Fatalf("read %d routed to the paused standby", n)
		}
	}
	_, _, by := reads(r)
	if by["wait_timeout"] < 1 || by["unavailable"] < 1 {
		t.Errorf("a paused standby: want reads past the bound, then reads passing it by: %v", by)
	}
	if s := r.Stats().Standbys[0]; !s.Skipped {
		t.Errorf("paused standby not skipped: %+v", s)
	}
	replica.Exec("SELECT pg_wal_replay_resume()")
	waitReadsReturn(t, pool, r, "resumed")
}

// A stopped standby turns no read into an error; once started again, reads return to it.
func TestRouteAroundStoppedStandby(t *testing.T) {
	_, replica, pool, r := replicated(t, 50*time.Millisecond)
	readMark(t, pool, r, 0)
	replica.Stop()
	for n := 1; n <= 20; n++ {
		if target := readMark(t, pool, r, n); target != 0 {
			t.Fatalf("read %d routed to the stopped standby", n)
		}
	}
	if s := r.Stats().Standbys[0]; s.Up || !s.Skipped {
		t.Errorf("stopped standby: %+v", s)
	}
	replica.Start()
	waitReadsReturn(t, pool, r, "restarted")
	_, _, by := reads(r)
	t.Logf("reads: %v", by)
}

// A primary named as a standby is refused: its data need not be the primary's.
func TestRouteRefusesAPrimaryAsStandby(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a PostgreSQL server of its own")
	}
	primary := pgtest.StartCluster(t)
	other := pgtest.StartCluster(t)
	primary.Exec("CREATE TABLE marks (n int PRIMARY KEY)")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, primary.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	sc, _ := pgxpool.ParseConfig(other.URL("postgres"))
	r, err := standby.New(pool, []*pgxpool.Config{sc}, standby.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n := range 5 {
		if target := readMark(t, pool, r, n); target != 0 {
			t.Fatalf("read routed to a server that is not a standby")
		}
	}
}
