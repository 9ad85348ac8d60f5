package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
)

func exportLines(t *testing.T, l *ledger, opts audit.ExportOptions) ([]audit.Record, audit.ExportResult) {
	t.Helper()
	var buf bytes.Buffer
	res, err := audit.Export(context.Background(), l.store, &buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var r audit.Record
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("line %d: %v: %s", len(recs)+1, err, sc.Bytes())
		}
		recs = append(recs, r)
	}
	if int64(len(recs)) != res.Events {
		t.Fatalf("%d lines, result says %d events", len(recs), res.Events)
	}
	return recs, res
}

// TestExport: the export is the log in reader order, one event per line, each with the
// checkpoint to resume after it; a range export is exactly the lines between its ends.
func TestExport(t *testing.T) {
	l := newLedger(t, false)
	scenario(t, l)
	waitReadable(t, l)
	all, res := exportLines(t, l, audit.ExportOptions{PageSize: 4})
	if len(all) != scenarioEvents {
		t.Fatalf("exported %d events, want %d", len(all), scenarioEvents)
	}
	log, err := l.store.ReadLog(context.Background(), eventstore.Checkpoint{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range all {
		e := log[i]
		if r.Checkpoint != e.Checkpoint().String() || r.StreamID != e.StreamID || r.Version != e.Version ||
			r.EventID != e.ID || r.Type != e.Type || r.Hash != hex.EncodeToString(e.Hash) || !r.RecordedAt.Equal(e.RecordedAt) {
			t.Fatalf("line %d is %+v, the log has %+v", i+1, r, e)
		}
		var payload, want any
		if json.Unmarshal(r.Payload, &payload) != nil || json.Unmarshal(e.Payload, &want) != nil || !jsonEqual(payload, want) {
			t.Fatalf("line %d payload %s, stored %s", i+1, r.Payload, e.Payload)
		}
	}
	if res.Last.String() != all[len(all)-1].Checkpoint {
		t.Fatalf("last checkpoint %s, last line %s", res.Last, all[len(all)-1].Checkpoint)
	}

	after, _ := eventstore.ParseCheckpoint(all[4].Checkpoint)
	until, _ := eventstore.ParseCheckpoint(all[11].Checkpoint)
	part, res := exportLines(t, l, audit.ExportOptions{After: after, Until: until, PageSize: 3})
	if len(part) != 7 || part[0].Checkpoint != all[5].Checkpoint || res.Last != until {
		t.Fatalf("range export: %d lines from %s, last %s; want 7 lines from %s to %s", len(part), first(part), res.Last, all[5].Checkpoint, until)
	}
	rest, _ := exportLines(t, l, audit.ExportOptions{After: until, Until: eventstore.Checkpoint{TransactionID: 1 << 62, Position: 1 << 62}})
	if len(rest) != scenarioEvents-12 {
		t.Fatalf("export to beyond the end: %d lines, want %d", len(rest), scenarioEvents-12)
	}
	if none, res := exportLines(t, l, audit.ExportOptions{After: until, Until: until}); len(none) != 0 || res.Last != until {
		t.Fatalf("an empty range exported %d lines, last %s", len(none), res.Last)
	}
}

func first(rs []audit.Record) string {
	if len(rs) == 0 {
		return "nothing"
	}
	return rs[0].Checkpoint
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
