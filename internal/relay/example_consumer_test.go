package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The consumer of docs/events.md, word for word (TestDocsShowTheExampleConsumer checks it). It
// uses nothing of the ledger's code: only NATS's client and the JSON of the contract.

// LedgerEvent is one message body: the event's record, as `ledger audit export` writes it.
type LedgerEvent struct {
	EventID       string          `json:"eventId"`
	StreamID      string          `json:"streamId"`
	Version       int64           `json:"version"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schemaVersion"`
	RecordedAt    time.Time       `json:"recordedAt"`
	Payload       json.RawMessage `json:"payload"`
	Metadata      json.RawMessage `json:"metadata"`
	Hash          string          `json:"hash"`
	HashVersion   int             `json:"hashVersion"`
	Checkpoint    string          `json:"checkpoint"`
}

// ConsumeLedgerEvents hands every ledger event to handle once, each stream's events in version
// order, until ctx ends. durable names the consumer on the server, which keeps its place
// across restarts. applied is the consumer's own record of the last version it handled per
// stream: keep it with the state handle changes (in the same transaction), so that a repeat
// (a redelivery, or a republish beyond the duplicate window) is recognised and skipped.
func ConsumeLedgerEvents(ctx context.Context, nc *nats.Conn, durable string, applied map[string]int64,
	handle func(LedgerEvent) error) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "LEDGER", jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 1, // one at a time: a failed event is retried before the next of its stream
	})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var e LedgerEvent
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			_ = m.Term() // not an event record: never deliver it again
			return
		}
		if e.Version <= applied[e.StreamID] {
			_ = m.Ack() // a repeat: handled already
			return
		}
		if err := handle(e); err != nil {
			_ = m.NakWithDelay(time.Second) // try again; nothing later is delivered meanwhile
			return
		}
		applied[e.StreamID] = e.Version
		_ = m.Ack()
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	return nil
}

// TestExampleConsumer runs the documented consumer against the relay: it handles every event
// once and in order per stream, skips a repeat that JetStream could not drop (a republish
// beyond the duplicate window, whose message id is new), and a failing handler delays an
// event without losing it.
func TestExampleConsumer(t *testing.T) {
	h := newHarness(t, "")
	h.run(t)
	appendEvents(t, h.store, 5, 6, "Noted")
	waitPublished(t, h.store)
	nc := h.nats.Connect()
	msgs := streamMessages(t, nc)
	// A repeat JetStream cannot recognise: the same body under another message id.
	js, _ := nc.JetStream()
	if _, err := js.PublishMsg(&nats.Msg{Subject: msgs[3].Subject, Data: msgs[3].Data, Header: nats.Header{nats.MsgIdHdr: []string{"beyond-the-window"}}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []LedgerEvent
	failedOnce := false
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	applied := map[string]int64{}
	go func() {
		done <- ConsumeLedgerEvents(ctx, nc, "example", applied, func(e LedgerEvent) error {
			mu.Lock()
			defer mu.Unlock()
			if len(got) == 7 && !failedOnce {
				failedOnce = true
				return context.DeadlineExceeded // a passing failure of the consumer's own
			}
			got = append(got, e)
			return nil
		})
	}()
	waitUntil(t, "the consumer handles every event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 30
	})
	time.Sleep(200 * time.Millisecond) // room for a wrong extra delivery to show
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 30 || !failedOnce {
		t.Fatalf("handled %d events (failed once: %v)", len(got), failedOnce)
	}
	last := map[string]int64{}
	for _, e := range got {
		if e.Version != last[e.StreamID]+1 {
			t.Fatalf("%s: version %d after %d", e.StreamID, e.Version, last[e.StreamID])
		}
		last[e.StreamID] = e.Version
	}
}

// TestDocsShowTheExampleConsumer: the Go code in docs/events.md is this file's consumer.
func TestDocsShowTheExampleConsumer(t *testing.T) {
	doc, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_consumer_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, code, ok := strings.Cut(string(doc), "```go\n")
	code, _, ok2 := strings.Cut(code, "```")
	if !ok || !ok2 || !bytes.Contains(src, []byte(strings.TrimSpace(code))) {
		t.Fatal("docs/events.md must show the consumer of internal/relay/example_consumer_test.go word for word, from `type LedgerEvent` to the end of ConsumeLedgerEvents")
	}
}
