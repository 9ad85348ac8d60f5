package relay_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/relay"
)

// TestRelayExactlyOnceInOrder: events appended by concurrent writers, before and while the
// relay runs, each arrive once, each stream's versions in order, each body the event's
// record; the stream is created as the contract says; a second relay run from an older
// checkpoint (a crash before the checkpoint was saved) adds nothing, JetStream dropping the
// repeats by message id.
func TestRelayExactlyOnceInOrder(t *testing.T) {
	h := newHarness(t, "")
	appendEvents(t, h.store, 8, 10, "Noted")
	h.run(t)
	appendEvents(t, h.store, 16, 25, "Noted")
	waitPublished(t, h.store)
	nc := h.nats.Connect()
	if n := checkStream(t, nc, h.store); n != 8*10+16*25 {
		t.Fatalf("%d messages", n)
	}
	js, _ := nc.JetStream()
	info, err := js.StreamInfo(relay.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.Storage != nats.FileStorage || c.Duplicates < 2*time.Minute ||
		len(c.Subjects) != 1 || c.Subjects[0] != "ledger.events.>" {
		t.Fatalf("stream config %+v", c)
	}
	st, ok := relayStatus(t)
	if !ok || st.State != "live" || st.EventsBehind != 0 || !strings.Contains(st.Checkpoint, ":") {
		t.Fatalf("status %+v", st)
	}

	// Everything again from the start: all within the duplicate window, so all dropped.
	n, last, err := relay.Republish(context.Background(), h.store, h.cfg, eventstore.Checkpoint{}, nil)
	if err != nil || n != 8*10+16*25 {
		t.Fatalf("republish: %d events, last %s, %v", n, last, err)
	}
	if n := checkStream(t, nc, h.store); n != 8*10+16*25 {
		t.Fatalf("%d messages after the republish", n)
	}
}
