// Package relaytest checks what the relay put on JetStream against the event log, for the
// relay's own tests and the drills that run the real binary.
package relaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/relay"
	"github.com/ledger/ledger/projections"
)

// WaitPublished waits until the relay's checkpoint is past every event in the log. (Not
// LogHead: the fence is the whole server's, and other databases' transactions hold it back.)
func WaitPublished(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a bound against a hang
	for {
		var behind int64
		at, err := projections.LoadCheckpoint(context.Background(), pool, relay.Group)
		if err != nil {
			tb.Fatal(err)
		}
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events
			WHERE (transaction_id, global_position) > ($1::text::xid8, $2)`, strconv.FormatUint(at.TransactionID, 10), at.Position).Scan(&behind); err != nil {
			tb.Fatal(err)
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("relay at %s, %d events behind", at, behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Messages returns every message of the stream, in stream order.
func Messages(tb testing.TB, nc *nats.Conn) []relay.Message {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out []relay.Message
	if err := relay.Read(ctx, nc, relay.ReadOptions{UntilCaughtUp: true}, func(m relay.Message) error {
		out = append(out, m)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return out
}

// CheckStream checks the stream against the log and returns how many messages it holds:
// every event of the log exactly once (by message id) and nothing else, each stream's versions
// in order, each body the event's record, the headers naming the event.
func CheckStream(tb testing.TB, nc *nats.Conn, pool *pgxpool.Pool) int {
	tb.Helper()
	return CheckStreamAfter(tb, nc, pool, eventstore.Checkpoint{})
}

// CheckStreamAfter is CheckStream for a stream that should hold the log's events after from
// only, as a republish --from leaves it: none at or before from.
func CheckStreamAfter(tb testing.TB, nc *nats.Conn, pool *pgxpool.Pool, from eventstore.Checkpoint) int {
	tb.Helper()
	msgs := Messages(tb, nc)
	want := expect(tb, pool, from)
	for _, m := range msgs {
		e := want.next(tb, m.ID, fmt.Sprintf("message %d", m.Sequence), m.Data)
		if m.Subject != relay.SubjectPrefix+e.Type || m.Header.Get(relay.HeaderStreamID) != e.StreamID ||
			m.Header.Get(relay.HeaderVersion) != strconv.FormatInt(e.Version, 10) ||
			m.Header.Get(relay.HeaderCheckpoint) != e.Checkpoint().String() {
			tb.Fatalf("message %d: subject %s, headers %v; event %s %s v%d at %s", m.Sequence, m.Subject, m.Header,
				e.Type, e.StreamID, e.Version, e.Checkpoint())
		}
	}
	want.done(tb)
	return len(msgs)
}

// CheckRecords checks lines of records, as `ledger events tail` prints them, against the log's
// events after from (zero: the whole log) as CheckStreamAfter checks messages.
func CheckRecords(tb testing.TB, pool *pgxpool.Pool, from eventstore.Checkpoint, lines []string) {
	tb.Helper()
	want := expect(tb, pool, from)
	for i, l := range lines {
		var r audit.RecordHead
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			tb.Fatalf("line %d %q: %v", i+1, l, err)
		}
		want.next(tb, r.EventID.String(), fmt.Sprintf("line %d", i+1), []byte(l))
	}
	want.done(tb)
}

// expected is the log's events after a checkpoint, as a reader should see them.
type expected struct {
	byID map[string]eventstore.RecordedEvent
	seen map[string]bool
	last map[string]int64 // stream id → the version seen last (or the last at or before from)
}

func expect(tb testing.TB, pool *pgxpool.Pool, from eventstore.Checkpoint) *expected {
	tb.Helper()
	x := &expected{byID: map[string]eventstore.RecordedEvent{}, seen: map[string]bool{}, last: map[string]int64{}}
	_, err := eventstore.WalkLog(context.Background(), pool, eventstore.LogRange{Until: eventstore.EndOfLog}, 10_000, func(page []eventstore.RecordedEvent) error {
		for _, e := range page {
			if from.Before(e.Checkpoint()) {
				x.byID[e.ID.String()] = e
			} else {
				x.last[e.StreamID] = e.Version
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return x
}

// next checks that the event id, read as what with body, is the next expected event of its
// stream, and returns it.
func (x *expected) next(tb testing.TB, id, what string, body []byte) eventstore.RecordedEvent {
	tb.Helper()
	e, ok := x.byID[id]
	switch {
	case !ok:
		tb.Fatalf("%s (id %q) is no event of the log after the checkpoint", what, id)
	case x.seen[id]:
		tb.Fatalf("event %s arrived twice (again as %s)", id, what)
	case e.Version != x.last[e.StreamID]+1:
		tb.Fatalf("%s: version %d arrived after version %d (%s): a gap or a reordering", e.StreamID, e.Version, x.last[e.StreamID], what)
	}
	x.seen[id] = true
	x.last[e.StreamID] = e.Version
	want, err := audit.RecordOf(e).AppendJSON(nil)
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.Equal(body, want) {
		tb.Fatalf("%s body\n%s\nwant the record\n%s", what, body, want)
	}
	return e
}

// done checks that every expected event arrived.
func (x *expected) done(tb testing.TB) {
	tb.Helper()
	if len(x.seen) != len(x.byID) {
		tb.Fatalf("%d of the log's %d events arrived; %d missing", len(x.seen), len(x.byID), len(x.byID)-len(x.seen))
	}
}
