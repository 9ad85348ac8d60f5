// Package relaytest checks what the relay put on JetStream against the event log, for the
// relay's own tests and the drills that run the real binary.
package relaytest

import (
	"bytes"
	"context"
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
	msgs := Messages(tb, nc)
	byID := map[string]eventstore.RecordedEvent{}
	store := eventstore.New(pool)
	for at := (eventstore.Checkpoint{}); ; {
		page, err := store.ReadLog(context.Background(), at, 10_000)
		if err != nil {
			tb.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			byID[e.ID.String()] = e
		}
		at = page[len(page)-1].Checkpoint()
	}
	seen := map[string]bool{}
	last := map[string]int64{}
	for _, m := range msgs {
		e, ok := byID[m.ID]
		switch {
		case !ok:
			tb.Fatalf("message %d (id %q) is no event of the log", m.Sequence, m.ID)
		case seen[m.ID]:
			tb.Fatalf("event %s arrived twice (again as message %d)", m.ID, m.Sequence)
		case e.Version != last[e.StreamID]+1:
			tb.Fatalf("%s: version %d arrived after version %d (message %d): a gap or a reordering", e.StreamID, e.Version, last[e.StreamID], m.Sequence)
		}
		seen[m.ID] = true
		last[e.StreamID] = e.Version
		want, err := audit.RecordOf(e).AppendJSON(nil)
		if err != nil {
			tb.Fatal(err)
		}
		if !bytes.Equal(m.Data, want) {
			tb.Fatalf("message %d body\n%s\nwant the record\n%s", m.Sequence, m.Data, want)
		}
		if m.Subject != relay.SubjectPrefix+e.Type || m.Header.Get(relay.HeaderStreamID) != e.StreamID ||
			m.Header.Get(relay.HeaderVersion) != strconv.FormatInt(e.Version, 10) ||
			m.Header.Get(relay.HeaderCheckpoint) != e.Checkpoint().String() {
			tb.Fatalf("message %d: subject %s, headers %v; event %s %s v%d at %s", m.Sequence, m.Subject, m.Header,
				e.Type, e.StreamID, e.Version, e.Checkpoint())
		}
	}
	if len(seen) != len(byID) {
		tb.Fatalf("%d of the log's %d events arrived; %d missing", len(seen), len(byID), len(byID)-len(seen))
	}
	return len(msgs)
}
