package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
)

// TestRecordCarriesTheHashedBytes: a record (an export line, a message on NATS) carries the
// payload and metadata byte for byte as stored, whitespace and escapes included, and the rule
// its hash was computed under, so that a consumer verifies each stream's chain from records
// alone, for events of either rule.
func TestRecordCarriesTheHashedBytes(t *testing.T) {
	l := newLedger(t, false)
	ctx := context.Background()
	// Rule 1 events, as an older binary stored them.
	sql, err := os.ReadFile("../../eventstore/testdata/hash_v1.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Conn().PgConn().Exec(ctx, string(sql)).ReadAll()
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}
	// Rule 2 events whose documents no JSON encoder would write as they are.
	raw := json.RawMessage(`{ "note" : "a<b & \u00e9",  "n": 1.50e0 }`)
	multiline := json.RawMessage("{\n\t\"n\": 1\r\n}")
	stream := "test-" + uuid.NewString()
	if _, err := l.store.Append(ctx, []eventstore.StreamAppend{{StreamID: stream, Expected: eventstore.NoStream(),
		Events: []eventstore.EventData{
			{Type: "Noted", SchemaVersion: 1, Payload: raw},
			{Type: "Noted", SchemaVersion: 1, Payload: multiline},
		}}}); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, l)

	var buf bytes.Buffer
	res, err := audit.Export(ctx, l.store, &buf, audit.ExportOptions{PageSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	versions := map[int]int{}
	prev := map[string][]byte{}
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		n++
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v: %s", n, err, sc.Bytes())
		}
		versions[r.HashVersion]++
		e, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		if r.StreamID == stream && r.Version == 1 && (!bytes.Equal(r.Payload, raw) || r.PayloadBytes != nil) {
			t.Fatalf("payload %q (bytes %q), stored %q", r.Payload, r.PayloadBytes, raw)
		}
		if r.StreamID == stream && r.Version == 2 && (!bytes.Equal(e.Payload, multiline) || string(r.Payload) != `{"n":1}`) {
			t.Fatalf("payload %q, bytes %q; stored %q", r.Payload, r.PayloadBytes, multiline)
		}
		if b := eventstore.VerifyLink(prev[r.StreamID], e); b != nil {
			t.Fatalf("line %d (%s v%d, rule %d) does not verify from the record: %s", n, r.StreamID, r.Version, r.HashVersion, b.Reason)
		}
		prev[r.StreamID] = e.Hash
	}
	if int64(n) != res.Events || versions[1] == 0 || versions[2] == 0 {
		t.Fatalf("%d lines of %d events; by hash rule %v: want both rules", n, res.Events, versions)
	}
}
