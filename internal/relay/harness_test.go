package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/natstest"
	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/internal/relay"
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
	wake  *projections.Signal
	nats  *natstest.Server
	relay *relay.Relay
	logs  *lockedBuffer
	cfg   relay.Config
}

func newHarness(t *testing.T, natsConfig string, adjust ...func(*relay.Config)) *harness {
	t.Helper()
	db.Reset(t)
	h := &harness{wake: projections.NewSignal(), logs: &lockedBuffer{}, nats: natstest.Start(t, natsConfig)}
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

// waitPublished waits until the relay's checkpoint is past every event in the log. (Not
// LogHead: the fence is the whole server's, and other databases' transactions hold it back.)
func waitPublished(t *testing.T, store *eventstore.Store) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // a bound against a hang
	for {
		var behind int64
		at, err := projections.LoadCheckpoint(context.Background(), db.Pool, relay.Group)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events
			WHERE (transaction_id, global_position) > ($1::text::xid8, $2)`, strconv.FormatUint(at.TransactionID, 10), at.Position).Scan(&behind); err != nil {
			t.Fatal(err)
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay at %s, %d events behind", at, behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamMessages returns every message of the stream, in stream order.
func streamMessages(t *testing.T, nc *nats.Conn) []relay.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []relay.Message
	if err := relay.Read(ctx, nc, relay.ReadOptions{UntilCaughtUp: true}, func(m relay.Message) error {
		out = append(out, m)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkStream checks the stream against the log: every event of the log exactly once (by
// message id), nothing else, each stream's versions in order, each body the event's record
// and the headers naming it.
func checkStream(t *testing.T, nc *nats.Conn, store *eventstore.Store) int {
	t.Helper()
	msgs := streamMessages(t, nc)
	log, err := store.ReadLog(context.Background(), eventstore.Checkpoint{}, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	byID := make(map[string]eventstore.RecordedEvent, len(log))
	for _, e := range log {
		byID[e.ID.String()] = e
	}
	seen := map[string]bool{}
	last := map[string]int64{}
	for _, m := range msgs {
		e, ok := byID[m.ID]
		switch {
		case !ok:
			t.Fatalf("message %d (id %q) is no event of the log", m.Sequence, m.ID)
		case seen[m.ID]:
			t.Fatalf("event %s arrived twice (again as message %d)", m.ID, m.Sequence)
		case e.Version != last[e.StreamID]+1:
			t.Fatalf("%s: version %d arrived after version %d (message %d)", e.StreamID, e.Version, last[e.StreamID], m.Sequence)
		}
		seen[m.ID] = true
		last[e.StreamID] = e.Version
		want, err := audit.RecordOf(e).AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.Data, want) {
			t.Fatalf("message %d body\n%s\nwant the record\n%s", m.Sequence, m.Data, want)
		}
		if !json.Valid(m.Data) || m.Subject != "ledger.events."+e.Type || m.Header.Get(relay.HeaderStreamID) != e.StreamID ||
			m.Header.Get(relay.HeaderVersion) != strconv.FormatInt(e.Version, 10) ||
			m.Header.Get(relay.HeaderCheckpoint) != e.Checkpoint().String() {
			t.Fatalf("message %d: subject %s, headers %v; event %s %s v%d at %s", m.Sequence, m.Subject, m.Header,
				e.Type, e.StreamID, e.Version, e.Checkpoint())
		}
	}
	if len(seen) != len(log) {
		missing := 0
		for id := range byID {
			if !seen[id] {
				missing++
			}
		}
		t.Fatalf("%d events of %d in the log arrived; %d missing", len(seen), len(log), missing)
	}
	return len(msgs)
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
