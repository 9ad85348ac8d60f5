package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/natstest"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/internal/relay"
	"github.com/ledger/ledger/internal/relay/relaytest"
	"github.com/ledger/ledger/projections"
)

var db *pgtest.Database

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "relay", &db)) }

// lockedBuffer collects a relay's log lines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is an event store over the package's emptied database, a NATS server of its own,
// and a relay between them.
type harness struct {
	store *eventstore.Store
	wake  *notify.Signal
	nats  *natstest.Server
	relay *relay.Relay
	logs  *lockedBuffer
	cfg   relay.Config
}

func newHarness(t testing.TB, natsConfig string, adjust ...func(*relay.Config)) *harness {
	t.Helper()
	db.Reset(t)
	h := &harness{wake: notify.NewSignal(), logs: &lockedBuffer{}, nats: natstest.Start(t, natsConfig)}
	h.store = eventstore.New(db.Pool, eventstore.WithAfterCommit(func(eventstore.AppendResult) { h.wake.Notify() }))
	h.cfg = relay.Config{URL: h.nats.URL, RetryBackoff: 50 * time.Millisecond, MaxRetryBackoff: 500 * time.Millisecond,
		AckTimeout: 2 * time.Second}
	for _, a := range adjust {
		a(&h.cfg)
	}
	h.relay = relay.New(h.store, db.Pool, h.wake, slog.New(slog.NewJSONHandler(h.logs, nil)), h.cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", h.logs.String())
		}
	})
	return h
}

// run runs the relay until the test ends.
func (h *harness) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop within 30s")
		}
	})
}

// appendEvents appends perStream events to each of streams new streams, from one goroutine
// per stream, each event on its own (so that transactions interleave), and returns the
// stream ids.
func appendEvents(t *testing.T, store *eventstore.Store, streams, perStream int, eventType string) []string {
	t.Helper()
	ids := make([]string, streams)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range ids {
		ids[i] = "test-" + uuid.NewString()
		wg.Go(func() {
			for v := range perStream {
				exp := eventstore.Exactly(int64(v))
				if v == 0 {
					exp = eventstore.NoStream()
				}
				_, err := store.Append(context.Background(), []eventstore.StreamAppend{{StreamID: ids[i], Expected: exp,
					Events: []eventstore.EventData{{Type: eventType, SchemaVersion: 1,
						Payload: map[string]any{"n": v, "note": "a<b"}}}}})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

func waitPublished(t testing.TB, _ *eventstore.Store) {
	t.Helper()
	relaytest.WaitPublished(t, db.Pool)
}

func streamMessages(t *testing.T, nc *nats.Conn) []relay.Message {
	t.Helper()
	return relaytest.Messages(t, nc)
}

func checkStream(t *testing.T, nc *nats.Conn, _ *eventstore.Store) int {
	t.Helper()
	return relaytest.CheckStream(t, nc, db.Pool)
}

// relayStatus returns the relay's row of the projection status.
func relayStatus(t *testing.T) (projections.Status, bool) {
	t.Helper()
	st, err := projections.Statuses(context.Background(), db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == relay.Group {
			return s, true
		}
	}
	return projections.Status{}, false
}

// waitUntil polls cond until it holds; the bound only guards against a hang.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func describe(s projections.Status) string {
	return fmt.Sprintf("%s at %s, %d behind, lag %dms, %s %q, active %v", s.Name, s.Checkpoint, s.EventsBehind, s.LagMs, s.State, s.LastError, s.Active)
}

func (h *harness) relayLog() *slog.Logger { return slog.New(slog.NewJSONHandler(h.logs, nil)) }
