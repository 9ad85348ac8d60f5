package app_test

import (
	"context"
	"io"
	"log/slog"
	"os"
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
	db.Reset(t)
	wake := notify.NewSignal()
	store := eventstore.New(db.Pool, eventstore.WithAfterCommit(func(eventstore.AppendResult) { wake.Notify() }))
	l := &ledger{store: store, app: app.New(store, wake, cfg), wake: wake, stop: func() {}}
	l.runner = projections.NewRunner(db.Pool, wake, quietLog(), projections.Config{}, projections.All()...)
	if runProjectors {
		l.startProjectors(t)
	}
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *ledger) startProjectors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.runner.Run(ctx)
	}()
	l.stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("projectors did not stop within 30s")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !l.runner.Running() {
		if time.Now().After(deadline) {
			t.Fatal("projectors did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
