package app_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/projections"
)

var db *pgtest.Database

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "app", &db)) }

// ledger is the in-process CQRS loop: store, app, projectors.
type ledger struct {
	store  *eventstore.Store
	app    *app.App
	runner *projections.Runner
	wake   *notify.Signal
	stop   func()
}

func quietLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start resets the database and starts a ledger; runProjectors false leaves the read models
// to be built later (tests of lag and catch-up).
func start(t *testing.T, runProjectors bool, cfg app.Config) *ledger {
	t.Helper()
	return newLedgerTB(t, true, runProjectors, cfg)
}

// startProjectors runs the projectors until l.stop, which the ledger's cleanup calls too, and
// waits until they have started.
func (l *ledger) startProjectors(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.runner.Run(ctx)
	}()
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				tb.Error("projectors did not stop within 30s")
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for !l.runner.Running() {
		if time.Now().After(deadline) {
			tb.Fatal("projectors did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
