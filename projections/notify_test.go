package projections_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ledger/ledger/projections"
)

// Two processes share a database: a NOTIFY published by one wakes the other's waiters, and a
// process is not woken by its own NOTIFYs.
func TestNotifierCarriesWakeUpsBetweenProcesses(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	wakeA, wakeB := projections.NewSignal(), projections.NewSignal()
	a := projections.NewNotifier(db.Pool, wakeA, log)
	b := projections.NewNotifier(db.Pool, wakeB, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, n := range []*projections.Notifier{a, b} {
		go func() { n.Run(ctx); done <- struct{}{} }()
	}
	defer func() { cancel(); <-done; <-done }()

	deadline := time.After(10 * time.Second)
	for woke := false; !woke; {
		cb, ca := wakeB.C(), wakeA.C()
		a.Publish() // the listener may not be listening yet: publish until b hears one
		select {
		case <-cb:
			woke = true
			select {
			case <-ca:
				t.Fatal("a process was woken by its own NOTIFY")
			default:
			}
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("a NOTIFY from one process never woke the other")
		}
	}
}
