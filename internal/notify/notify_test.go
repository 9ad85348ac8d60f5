package notify_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/internal/notify"
)

// checkInterval is how often a Notifier looks for other ledger processes.
const checkInterval = time.Second

// namedPool connects to the test database as a process whose sessions carry name.
func namedPool(t *testing.T, name string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// session opens one connection to the test database named name, as another program would.
func session(t *testing.T, name string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = name
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// runNotifier runs a Notifier for a process whose pool is named name until the test ends.
func runNotifier(t *testing.T, name string) (*notify.Notifier, *notify.Signal) {
	t.Helper()
	wake := notify.NewSignal()
	n := notify.NewNotifier(namedPool(t, name), wake, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, wake
}

// heard publishes on n every 20ms for up to d and reports whether listener received a NOTIFY
// on the ledger's channel meanwhile.
func heard(t *testing.T, n *notify.Notifier, listener *pgx.Conn, d time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			n.Publish()
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	_, err := listener.WaitForNotification(ctx)
	switch {
	case err == nil:
		return true
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return false
	default:
		t.Fatal(err)
		return false
	}
}

// listenAs opens a session named name that LISTENs on the ledger's channel.
func listenAs(t *testing.T, name string) *pgx.Conn {
	t.Helper()
	conn := session(t, name)
	if _, err := conn.Exec(context.Background(), "LISTEN "+notify.Channel); err != nil {
		t.Fatal(err)
	}
	return conn
}

// A process alone on its database sends no NOTIFY: nobody would hear it, and each one is a
// transaction with an xid and a commit record. Sessions of other programs (the test's own
// listener, a tool whose name merely starts with "ledger") and of the process itself do not
// count; a session of another ledger process turns NOTIFYs on within one look, and its leaving
// turns them off again.
func TestNotifierSendsOnlyWhileAnotherLedgerProcessIsConnected(t *testing.T) {
	listener := listenAs(t, "notify test listener")
	_ = session(t, "ledger-loadtest")
	n, _ := runNotifier(t, "ledger serve 1 alone000")

	if heard(t, n, listener, 2*checkInterval+checkInterval/2) {
		t.Fatal("a process alone on the database sent a NOTIFY")
	}

	for _, other := range []string{"ledger serve 1 other000", "ledger audit"} {
		t.Run(other, func(t *testing.T) {
			conn := session(t, other)
			began := time.Now()
			// One look, plus slack for a loaded machine.
			if !heard(t, n, listener, checkInterval+2*time.Second) {
				t.Fatalf("no NOTIFY while %q is connected", other)
			}
			t.Logf("NOTIFYs flow %v after %q connected", time.Since(began).Round(time.Millisecond), other)

			if err := conn.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * checkInterval)
			// Drop what was sent before the look that noticed.
			drain, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			for {
				if _, err := listener.WaitForNotification(drain); err != nil {
					break
				}
			}
			cancel()
			if heard(t, n, listener, checkInterval+checkInterval/2) {
				t.Fatalf("NOTIFYs still sent after %q left", other)
			}
		})
	}
}

// Two processes share a database: a NOTIFY published by one wakes the other's waiters, and a
// process is not woken by its own NOTIFYs. Their pids are the same, as in two containers: the
// tag in their names tells them apart.
func TestNotifierCarriesWakeUpsBetweenProcesses(t *testing.T) {
	const nameA, nameB = "ledger serve 1 aaaaaaaa", "ledger serve 1 bbbbbbbb"
	a, wakeA := runNotifier(t, nameA)
	_, wakeB := runNotifier(t, nameB)
	// Both must be listening, or a's own NOTIFY could pass before a hears anything.
	waitListening(t, nameA)
	waitListening(t, nameB)

	deadline := time.After(10 * time.Second)
	for woke := false; !woke; {
		cb, ca := wakeB.C(), wakeA.C()
		a.Publish() // a may not have seen b yet: publish until b hears one
		select {
		case <-cb:
			woke = true
			// a's listener has the NOTIFY b heard: give it time to misbehave.
			select {
			case <-ca:
				t.Fatal("a process was woken by its own NOTIFY")
			case <-time.After(200 * time.Millisecond):
			}
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("a NOTIFY from one process never woke the other")
		}
	}
}

// waitListening waits until the process whose sessions are named name LISTENs on the ledger's
// channel.
func waitListening(t *testing.T, name string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var listening bool
		if err := db.Pool.QueryRow(context.Background(), `
			SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1 AND query = $2)`,
			name, "LISTEN "+notify.Channel).Scan(&listening); err != nil {
			t.Fatal(err)
		}
		if listening {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q never listened", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
