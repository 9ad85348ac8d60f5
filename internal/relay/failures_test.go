package relay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/relay"
)

// writeUntil appends events from a few writers until stop, and returns how many failed.
func writeUntil(t *testing.T, store *eventstore.Store, stop <-chan struct{}) (*sync.WaitGroup, *atomic.Int64) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ids := appendEventsQuiet(store, 1, 3)
				if ids == nil {
					failed.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return &wg, &failed
}

// appendEventsQuiet is appendEvents for goroutines: nil when an append failed.
func appendEventsQuiet(store *eventstore.Store, streams, perStream int) []string {
	var ids []string
	for range streams {
		id := "test-" + time.Now().Format("150405.000000000") + "-" + strings.Repeat("x", 1)
		for v := range perStream {
			exp := eventstore.Exactly(int64(v))
			if v == 0 {
				exp = eventstore.NoStream()
			}
			if _, err := store.Append(context.Background(), []eventstore.StreamAppend{{StreamID: id, Expected: exp,
				Events: []eventstore.EventData{{Type: "Noted", SchemaVersion: 1, Payload: map[string]int{"n": v}}}}}); err != nil {
				return nil
			}
		}
		ids = append(ids, id)
	}
	return ids
}

// TestRelayNATSOutage: NATS stopped for a few seconds under writes: every append succeeds,
// the relay's status says failed with the reason and shows the lag growing; NATS started
// again, the relay catches up with no gap and no duplicate, and says it is live.
func TestRelayNATSOutage(t *testing.T) {
	h := newHarness(t, "")
	h.run(t)
	stop := make(chan struct{})
	wg, failed := writeUntil(t, h.store, stop)
	time.Sleep(300 * time.Millisecond)
	h.nats.Stop()
	waitUntil(t, "status names the outage", func() bool {
		st, ok := relayStatus(t)
		return ok && st.State == "failed" && strings.Contains(st.LastError, "NATS") && st.EventsBehind > 0
	})
	st1, _ := relayStatus(t)
	time.Sleep(2 * time.Second)
	st2, _ := relayStatus(t)
	if st2.EventsBehind <= st1.EventsBehind || st2.LagMs <= st1.LagMs {
		t.Errorf("lag did not grow while NATS was away: %s, then %s", describe(st1), describe(st2))
	}
	if stats := h.relay.Stats(); stats.Connected || stats.Failures == 0 || !stats.Active {
		t.Errorf("stats while NATS is away: %+v", stats)
	}
	t.Logf("while NATS was away: %s", describe(st2))
	h.nats.Start()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d appends failed while NATS was away", n)
	}
	waitPublished(t, h.store)
	n := checkStream(t, h.nats.Connect(), h.store)
	st, _ := relayStatus(t)
	if st.State != "live" || st.EventsBehind != 0 || !h.relay.Stats().Connected {
		t.Fatalf("after the outage: %s, %+v", describe(st), h.relay.Stats())
	}
	t.Logf("%d events, all arrived once and in order", n)
}

// TestRelayStreamDeleted: the stream deleted while the relay runs is created again, and the
// log says so; the relay publishes the log again from its start, so the new stream holds the
// whole history in order; a republish from the start then adds nothing.
func TestRelayStreamDeleted(t *testing.T) {
	h := newHarness(t, "")
	h.run(t)
	appendEvents(t, h.store, 4, 5, "Noted")
	waitPublished(t, h.store)
	nc := h.nats.Connect()
	js, _ := nc.JetStream()
	if err := js.DeleteStream(relay.DefaultStream); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, h.store, 3, 4, "Noted")
	waitPublished(t, h.store)
	if h.relay.Stats().StreamRecreated != 1 || !strings.Contains(h.logs.String(), "created again") {
		t.Fatalf("stats %+v; log:\n%s", h.relay.Stats(), h.logs.String())
	}
	if n := checkStream(t, nc, h.store); n != 4*5+3*4 {
		t.Fatalf("the recreated stream holds %d messages", n)
	}
	n, _, err := relay.Republish(context.Background(), h.store, h.cfg, eventstore.Checkpoint{}, nil)
	if err != nil || n != 4*5+3*4 {
		t.Fatalf("republish: %d, %v", n, err)
	}
	if n := checkStream(t, nc, h.store); n != 4*5+3*4 {
		t.Fatalf("%d messages after the republish", n)
	}
}

// TestRelayUnreachableAtStart: no NATS when the relay starts: it says so in the log and the
// status, appends go on, and once NATS answers everything arrives.
func TestRelayUnreachableAtStart(t *testing.T) {
	h := newHarness(t, "")
	h.nats.Stop()
	h.run(t)
	appendEvents(t, h.store, 3, 3, "Noted")
	waitUntil(t, "status names the unreachable server", func() bool {
		st, ok := relayStatus(t)
		return ok && st.State == "failed" && strings.Contains(st.LastError, "connect to NATS at "+h.nats.URL) && st.EventsBehind == 9
	})
	if !strings.Contains(h.logs.String(), "events are not reaching NATS") {
		t.Fatalf("log:\n%s", h.logs.String())
	}
	h.nats.Start()
	waitPublished(t, h.store)
	checkStream(t, h.nats.Connect(), h.store)
	if st, _ := relayStatus(t); st.State != "live" {
		t.Fatalf("status %s", describe(st))
	}
}

// authorization is a server configuration with one user allowed everything but publishing
// CoinsBurnt events.
const authorization = `authorization {
  users = [{user: relay, password: s3cret, permissions: {publish: {allow: [">"], deny: ["ledger.events.CoinsBurnt"]}}}]
}`

// failureLogged returns the error of the relay's log line saying that events do not reach
// NATS, the first whose error names each of causes (case aside); the test fails without one.
func failureLogged(t *testing.T, logs string, causes ...string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
lines:
	for sc.Scan() {
		var l struct{ Level, Msg, Err string }
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if l.Level != "ERROR" || !strings.HasPrefix(l.Msg, "events are not reaching NATS") {
			continue
		}
		for _, c := range causes {
			if !strings.Contains(strings.ToLower(l.Err), strings.ToLower(c)) {
				continue lines
			}
		}
		return l.Err
	}
	t.Fatalf("no error line in the log names %q:\n%s", causes, logs)
	return ""
}

// redacted is a server URL as the relay names it with the user relay: the password hidden.
func redacted(url string) string {
	return strings.Replace(url, "nats://", "nats://relay:xxxxx@", 1)
}

// TestRelayWrongCredentials: a refused password is in the status and in the log's error line,
// which names the server and the refusal, with the password itself kept out of both.
func TestRelayWrongCredentials(t *testing.T) {
	var url string
	h := newHarness(t, authorization, func(c *relay.Config) {})
	url = strings.Replace(h.nats.URL, "nats://", "nats://relay:wrong-password@", 1)
	h.cfg.URL = url
	h.relay = relay.New(h.store, db.Pool, h.wake, h.relayLog(), h.cfg)
	h.run(t)
	appendEvents(t, h.store, 1, 2, "Noted")
	waitUntil(t, "status names the refusal", func() bool {
		st, ok := relayStatus(t)
		return ok && st.State == "failed" && strings.Contains(strings.ToLower(st.LastError), "authorization violation")
	})
	st, _ := relayStatus(t)
	if strings.Contains(st.LastError, "wrong-password") || strings.Contains(h.logs.String(), "wrong-password") {
		t.Fatalf("the password shows: %q", st.LastError)
	}
	logged := failureLogged(t, h.logs.String(), "connect to NATS at "+redacted(h.nats.URL), "authorization violation")
	t.Logf("status: %s; log: %s", describe(st), logged)
}

// TestRelayRefusedSubject: a subject the server refuses stops the relay at that event (no
// gap: nothing after it in its stream is published) with the refusal in the status and in the
// log's error line, the password in neither; the events before it arrived; writes go on.
func TestRelayRefusedSubject(t *testing.T) {
	h := newHarness(t, authorization)
	h.cfg.URL = strings.Replace(h.nats.URL, "nats://", "nats://relay:s3cret@", 1)
	h.relay = relay.New(h.store, db.Pool, h.wake, h.relayLog(), h.cfg)
	h.run(t)
	appendEvents(t, h.store, 2, 2, "Noted")
	waitPublished(t, h.store)
	appendEvents(t, h.store, 1, 1, "CoinsBurnt")
	appendEvents(t, h.store, 1, 1, "Noted")
	waitUntil(t, "status names the refused subject", func() bool {
		st, ok := relayStatus(t)
		return ok && st.State == "failed" && strings.Contains(st.LastError, "ledger.events.CoinsBurnt") &&
			strings.Contains(strings.ToLower(st.LastError), "permissions violation")
	})
	st, _ := relayStatus(t)
	if st.EventsBehind < 1 {
		t.Fatalf("status %s", describe(st))
	}
	logged := failureLogged(t, h.logs.String(), "publish to ledger.events.CoinsBurnt refused", "permissions violation")
	if strings.Contains(st.LastError, "s3cret") || strings.Contains(h.logs.String(), "s3cret") {
		t.Fatalf("the password shows: %q", st.LastError)
	}
	t.Logf("status: %s; log: %s", describe(st), logged)
	nc := h.nats.Connect(nats.UserInfo("relay", "s3cret"))
	for _, m := range streamMessages(t, nc) {
		if m.Subject == "ledger.events.CoinsBurnt" {
			t.Fatal("a refused subject was stored")
		}
	}
}

// TestRelayForeignStream: a stream of the relay's name whose subjects do not include the
// ledger's is reported, not replaced.
func TestRelayForeignStream(t *testing.T) {
	h := newHarness(t, "")
	nc := h.nats.Connect()
	js, _ := nc.JetStream()
	if _, err := js.AddStream(&nats.StreamConfig{Name: relay.DefaultStream, Subjects: []string{"other.>"},
		Duplicates: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	h.run(t)
	appendEvents(t, h.store, 1, 1, "Noted")
	waitUntil(t, "status names the stream's subjects", func() bool {
		st, ok := relayStatus(t)
		return ok && st.State == "failed" && strings.Contains(st.LastError, "subjects must include ledger.events.>")
	})
}

// TestRelayRefusedEventHoldsBackItsStream: when one event of a stream is refused, no later
// event of that stream is stored, even though events leave without waiting for each other's
// acknowledgement: the stream's order in JetStream never has a hole that a later version covers.
// Other streams go on up to the first refused event of the log.
func TestRelayRefusedEventHoldsBackItsStream(t *testing.T) {
	h := newHarness(t, authorization)
	h.cfg.URL = strings.Replace(h.nats.URL, "nats://", "nats://relay:s3cret@", 1)
	h.relay = relay.New(h.store, db.Pool, h.wake, h.relayLog(), h.cfg)
	held := "test-" + uuid.NewString()
	var evs []eventstore.EventData
	for _, typ := range []string{"Noted", "CoinsBurnt", "Noted", "Noted"} {
		evs = append(evs, eventstore.EventData{Type: typ, SchemaVersion: 1, Payload: map[string]any{"n": len(evs)}})
	}
	if _, err := h.store.Append(context.Background(), []eventstore.StreamAppend{{StreamID: held,
		Expected: eventstore.NoStream(), Events: evs}}); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, h.store, 20, 3, "Noted") // after it in the log, one page with it
	h.run(t)
	waitUntil(t, "status names the refused subject", func() bool {
		st, ok := relayStatus(t)
		return ok && st.State == "failed" && strings.Contains(st.LastError, "ledger.events.CoinsBurnt")
	})
	nc := h.nats.Connect(nats.UserInfo("relay", "s3cret"))
	for _, m := range streamMessages(t, nc) {
		if m.Header.Get(relay.HeaderStreamID) == held && m.Header.Get(relay.HeaderVersion) != "1" {
			t.Fatalf("version %s of the stream was stored after its version 2 was refused", m.Header.Get(relay.HeaderVersion))
		}
	}
}
