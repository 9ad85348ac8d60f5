package eventstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/ledger/ledger/eventstore"
)

// chainBreaks checks a stream's events, given in version order from version 1, link by link,
// and returns every break: a link is checked against the previous event's stored hash, so an
// edited event breaks its own link only.
func chainBreaks(evs []eventstore.RecordedEvent) []eventstore.ChainBreak {
	var out []eventstore.ChainBreak
	var prev []byte
	for i, e := range evs {
		if e.Version != int64(i)+1 {
			out = append(out, eventstore.ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID,
				Reason: fmt.Sprintf("expected version %d", i+1)})
		}
		if brk := eventstore.VerifyLink(prev, e); brk != nil {
			out = append(out, *brk)
		}
		prev = e.Hash
	}
	return out
}

// verifyChain returns the first break of a stream's chain, or nil when it holds.
func verifyChain(evs []eventstore.RecordedEvent) *eventstore.ChainBreak {
	if brks := chainBreaks(evs); len(brks) > 0 {
		return &brks[0]
	}
	return nil
}

// loadHashV1Fixture writes into the database the events and stream heads that the code of hash
// rule 1 wrote (testdata/hash_v1.sql): three accounts of the audit scenario and a stream
// "notes" of unusual documents, all as rule 1 stored them, inserted as that code inserted them.
func loadHashV1Fixture(t *testing.T) {
	t.Helper()
	sql, err := os.ReadFile("testdata/hash_v1.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Conn().PgConn().Exec(context.Background(), string(sql)).ReadAll(); err != nil {
		t.Fatal(err)
	}
}

// tamper runs an edit that the append-only trigger refuses, with triggers off as they are for
// a superuser restoring a dump: the chain must catch what the trigger cannot.
func tamper(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, sql, args...); err == nil {
		t.Fatal("the append-only trigger let an edit through")
	}
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "SET session_replication_role = DEFAULT")
	if tag, err := conn.Exec(ctx, sql, args...); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("tamper: %v, %d rows", err, tag.RowsAffected())
	}
}

// chainBreaksOf loads a stream and returns its chain's breaks.
func chainBreaksOf(t *testing.T, s *eventstore.Store, stream string) []eventstore.ChainBreak {
	t.Helper()
	evs, err := s.Load(context.Background(), stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	return chainBreaks(evs)
}

// wantOneBreak fails unless the stream's chain breaks at exactly version v.
func wantOneBreak(t *testing.T, s *eventstore.Store, stream string, v int64) {
	t.Helper()
	evs, err := s.Load(context.Background(), stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	if brks := chainBreaks(evs); len(brks) != 1 || brks[0].Version != v || brks[0].EventID != evs[v-1].ID {
		t.Fatalf("%s: breaks %+v, want exactly version %d", stream, brks, v)
	}
}

// everyByteCounts flips, one at a time, every byte of the payload and of the metadata of each
// event and checks that the chain breaks at exactly that event.
func everyByteCounts(t *testing.T, evs []eventstore.RecordedEvent) {
	t.Helper()
	for i := range evs {
		for _, doc := range []string{"payload", "metadata"} {
			orig := evs[i].Payload
			if doc == "metadata" {
				orig = evs[i].RawMetadata
			}
			for k := range orig {
				bad := bytes.Clone(orig)
				bad[k] ^= 1
				edited := append([]eventstore.RecordedEvent(nil), evs...)
				if doc == "payload" {
					edited[i].Payload = bad
				} else {
					edited[i].RawMetadata = bad
				}
				if brks := chainBreaks(edited); len(brks) != 1 || brks[0].Version != evs[i].Version {
					t.Fatalf("%s version %d, %s byte %d changed (%q): breaks %+v", evs[i].StreamID, evs[i].Version, doc, k, bad, brks)
				}
			}
		}
	}
}

func TestHashChain(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	appendOne(t, s, "chain", eventstore.NoStream(), ev("E", 1), ev("E", 2))
	withNote := ev("E", 3)
	withNote.Payload = amount{Amount: 3, Note: "<b>ünïcode & spaces</b>"}
	appendOne(t, s, "chain", eventstore.Exactly(2), withNote)
	appendOne(t, s, "chain", eventstore.Exactly(3), ev("E", 4), ev("E", 5))
	appendOne(t, s, "other", eventstore.NoStream(), ev("E", 1))

	evs, err := s.Load(ctx, "chain", 0)
	if err != nil {
		t.Fatal(err)
	}
	if brks := chainBreaks(evs); len(brks) != 0 {
		t.Fatalf("untouched chain broken: %+v", brks)
	}
	if bytes.Equal(evs[1].Hash, evs[0].Hash) {
		t.Fatal("hashes repeat")
	}
	everyByteCounts(t, evs)

	// In the database: one byte of the payload, then the metadata.
	at := `WHERE stream_id = 'chain' AND stream_version = $1`
	tamper(t, `UPDATE events SET payload_bytes = set_byte(payload_bytes, 10, get_byte(payload_bytes, 10) # 1) `+at, 3)
	wantOneBreak(t, s, "chain", 3)
	tamper(t, `UPDATE events SET payload_bytes = set_byte(payload_bytes, 10, get_byte(payload_bytes, 10) # 1) `+at, 3)
	if evs, _ := s.Load(ctx, "chain", 0); verifyChain(evs) != nil {
		t.Fatalf("restored payload still broken: %+v", verifyChain(evs))
	}
	tamper(t, `UPDATE events SET metadata_bytes = metadata_bytes || ' '::bytea `+at, 5)
	wantOneBreak(t, s, "chain", 5)
	if _, err := db.Pool.Exec(ctx, `DELETE FROM events`); err == nil {
		t.Fatal("the append-only trigger let a DELETE through")
	}
}

// TestDocumentsAreStoredAsGiven: payload and metadata are stored as the bytes that were hashed,
// exactly as given (white space, escapes, a NUL, a fraction, characters HTML escapes), and the
// stored hash is rule 2 over the stored columns, as ADR 7 defines it.
func TestDocumentsAreStoredAsGiven(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	docs := []string{
		` { "note" : "a\u0000b <&> \u00e9 é 😀", "n": 1.50, "e": 1e3, "neg": -0, "z": null } `,
		`{"b":1,"a":2,"b":3}`,
		`[]`,
		`"\\u0000"`,
	}
	var evs []eventstore.EventData
	for _, d := range docs {
		e := ev("E", 0)
		e.Payload = json.RawMessage(d)
		evs = append(evs, e)
	}
	appendOne(t, s, "docs", eventstore.NoStream(), evs...)
	rows, err := db.Pool.Query(ctx, `SELECT stream_version, event_id, event_type, schema_version, payload_bytes, metadata_bytes,
		recorded_at, hash, hash_version, payload IS NULL AND metadata IS NULL FROM events WHERE stream_id = 'docs' ORDER BY stream_version`)
	if err != nil {
		t.Fatal(err)
	}
	var prev []byte
	n := 0
	for rows.Next() {
		var e eventstore.RecordedEvent
		var hashVersion int16
		var jsonbEmpty bool
		if err := rows.Scan(&e.Version, &e.ID, &e.Type, &e.SchemaVersion, &e.Payload, &e.RawMetadata, &e.RecordedAt,
			&e.Hash, &hashVersion, &jsonbEmpty); err != nil {
			t.Fatal(err)
		}
		if string(e.Payload) != docs[n] || hashVersion != 2 || !jsonbEmpty {
			t.Fatalf("version %d: stored %q under rule %d (jsonb empty: %v), want %q under rule 2", e.Version, e.Payload, hashVersion, jsonbEmpty, docs[n])
		}
		// Rule 2, written out from ADR 7.
		var b []byte
		field := func(f []byte) { b = append(binary.BigEndian.AppendUint64(b, uint64(len(f))), f...) }
		field([]byte("ledger.event.v2"))
		field(prev)
		field([]byte("docs"))
		b = binary.BigEndian.AppendUint64(b, uint64(e.Version))
		b = append(b, e.ID[:]...)
		field([]byte(e.Type))
		b = binary.BigEndian.AppendUint64(b, uint64(e.SchemaVersion))
		b = binary.BigEndian.AppendUint64(b, uint64(e.RecordedAt.UnixMicro()))
		field(e.Payload)
		field(e.RawMetadata)
		if want := sha256.Sum256(b); !bytes.Equal(e.Hash, want[:]) {
			t.Fatalf("version %d: stored hash %x, rule 2 gives %x", e.Version, e.Hash, want)
		}
		prev = e.Hash
		n++
	}
	if rows.Err() != nil || n != len(docs) {
		t.Fatalf("%d events read: %v", n, rows.Err())
	}
	loaded, err := s.Load(ctx, "docs", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range loaded {
		if string(e.Payload) != docs[i] || e.HashVersion != 2 {
			t.Fatalf("loaded %q under rule %d, want %q", e.Payload, e.HashVersion, docs[i])
		}
	}
	if brks := chainBreaks(loaded); len(brks) != 0 {
		t.Fatalf("breaks: %+v", brks)
	}
}

// TestHashRule1ChainsStillVerify: events written under rule 1, before events kept their bytes,
// verify as they are, new events chain onto them under rule 2, and an edit of either kind of
// event breaks the chain at exactly that event.
func TestHashRule1ChainsStillVerify(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	loadHashV1Fixture(t)
	var streams []string
	rows, _ := db.Pool.Query(ctx, `SELECT stream_id FROM streams ORDER BY stream_id`)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, id)
	}
	if rows.Err() != nil || len(streams) != 4 {
		t.Fatalf("fixture streams %v: %v", streams, rows.Err())
	}
	var events int
	for _, id := range streams {
		evs, err := s.Load(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.HashVersion != 1 {
				t.Fatalf("%s version %d: rule %d, want 1", id, e.Version, e.HashVersion)
			}
		}
		if brks := chainBreaks(evs); len(brks) != 0 {
			t.Fatalf("%s: rule 1 chain broken: %+v", id, brks)
		}
		everyByteCounts(t, evs)
		events += len(evs)
	}
	if events != 21 {
		t.Fatalf("%d fixture events", events)
	}

	// New events chain onto the old ones.
	appendOne(t, s, "notes", eventstore.Exactly(4), ev("E", 5), ev("E", 6))
	evs, err := s.Load(ctx, "notes", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 6 || evs[3].HashVersion != 1 || evs[4].HashVersion != 2 || verifyChain(evs) != nil {
		t.Fatalf("mixed chain: %d events, break %+v", len(evs), verifyChain(evs))
	}

	at := `WHERE stream_id = 'notes' AND stream_version = $1`
	tamper(t, `UPDATE events SET payload = jsonb_set(payload, '{n}', '-6') `+at, 1)
	wantOneBreak(t, s, "notes", 1)
	tamper(t, `UPDATE events SET payload = jsonb_set(payload, '{n}', '-5') `+at, 1)
	tamper(t, `UPDATE events SET metadata = metadata || '{"actor": "mallory"}' `+at, 2)
	wantOneBreak(t, s, "notes", 2)
	tamper(t, `UPDATE events SET metadata = metadata || '{"actor": "zoë <admin>"}' `+at, 2)
	tamper(t, `UPDATE events SET payload_bytes = set_byte(payload_bytes, 3, get_byte(payload_bytes, 3) # 1) `+at, 5)
	wantOneBreak(t, s, "notes", 5)
	tamper(t, `UPDATE events SET payload_bytes = set_byte(payload_bytes, 3, get_byte(payload_bytes, 3) # 1) `+at, 5)
	// A rule 2 event moved to rule 1's columns, and a rule 1 event to rule 2's.
	tamper(t, `UPDATE events SET hash_version = 1, payload = convert_from(payload_bytes, 'UTF8')::jsonb,
		metadata = convert_from(metadata_bytes, 'UTF8')::jsonb, payload_bytes = NULL, metadata_bytes = NULL `+at, 6)
	wantOneBreak(t, s, "notes", 6)
	tamper(t, `UPDATE events SET hash_version = 2, payload_bytes = convert_to(payload::text, 'UTF8'),
		metadata_bytes = convert_to(metadata::text, 'UTF8'), payload = NULL, metadata = NULL `+at, 3)
	breaks := chainBreaksOf(t, s, "notes")
	if len(breaks) != 2 || breaks[0].Version != 3 || breaks[1].Version != 6 {
		t.Fatalf("breaks %+v, want versions 3 and 6", breaks)
	}
}

// BenchmarkVerifyLink checks one link of each rule, for a transfer's payload as each rule
// stores it (rule 1: jsonb's rendering, which the rule re-encodes; rule 2: the bytes as hashed).
//
//	go test -run '^$' -bench VerifyLink ./eventstore/
func BenchmarkVerifyLink(b *testing.B) {
	e := eventstore.RecordedEvent{StreamID: "account-0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", Version: 7,
		Type: "CoinsSent", SchemaVersion: 1, Hash: make([]byte, 32)}
	for _, rule := range []struct {
		version           int
		payload, metadata string
	}{
		{1, `{"to": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6c", "username": "bob"}, "from": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "username": "alice"}, "amount": 17, "transferId": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6d"}`, `{"actor": "alice"}`},
		{2, `{"transferId":"0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6d","from":{"id":"0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b","username":"alice"},"to":{"id":"0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6c","username":"bob"},"amount":17}`, `{"actor":"alice"}`},
	} {
		e.HashVersion, e.Payload, e.RawMetadata = rule.version, []byte(rule.payload), []byte(rule.metadata)
		b.Run(fmt.Sprint("rule=", rule.version), func(b *testing.B) {
			for b.Loop() {
				if brk := eventstore.VerifyLink(e.Hash, e); brk == nil || brk.Reason != "hash mismatch" {
					b.Fatal(brk)
				}
			}
		})
	}
}
