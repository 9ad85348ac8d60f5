package eventstore

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// canonicalCases are documents as PostgreSQL's jsonb gives them back (keys by length, then
// bytes; ", " and ": " between tokens) and other shapes the fast path must get exactly right or
// hand over.
var canonicalCases = []string{
	`{"to": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "username": "bob"}, "from": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6c", "username": "alice"}, "amount": 17, "transferId": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6d"}`,
	`{"actor": "alice", "requestId": "r-1", "correlationId": "c-1"}`,
	`{"item": "pink-hoody", "price": 500, "quantity": 1}`,
	`{"amount": 1000, "reason": "welcome"}`,
	`{"username": "ünïcode é <b>&</b>", "accountId": "x"}`,
	`{"a": [1, -2, 3, {"z": null, "y": true, "x": false}], "b": []}`,
	`{}`, `[]`, `[{}]`, `5`, `-5`, `"text"`, `null`, ` { "b" : 1 , "a" : 2 } `,
	`{"n": 9223372036854775807}`, `{"n": -9223372036854775808}`,
	// Handed over to the general path, which refuses or rewrites them.
	`{"s": "escaped \u00e9"}`,
	`{"n": 9223372036854775808}`, `{"n": 1.5}`, `{"n": 1e3}`, `{"n": -0}`, `{"n": 007}`,
	`{"s": "tab\there"}`, `{"s": "quote \" inside"}`, `{"s": "line\u2028sep"}`, "{\"s\": \"raw \xff byte\"}",
	`{"a": 1, "a": 2}`, `{"a": 1,}`, `[1,]`, `{"a" 1}`, `{"a": tru}`, `{} {}`, `{"a": 1} x`, ``, `   `,
	`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
}

// ordinaryCases is how many of canonicalCases the fast path must answer itself.
const ordinaryCases = 16

// TestCanonicalFastPathIsCanonicalJSON: wherever the fast path answers, it answers exactly what
// CanonicalJSON (the definition) does, and it does answer for the log's usual documents.
func TestCanonicalFastPathIsCanonicalJSON(t *testing.T) {
	for _, doc := range canonicalCases {
		checkCanonical(t, []byte(doc))
	}
	for _, doc := range canonicalCases[:ordinaryCases] {
		c := canonicalizer{src: []byte(doc)}
		if !c.document() {
			t.Errorf("fast path gave up on an ordinary document %s", doc)
		}
	}
}

func FuzzCanonicalFastPath(f *testing.F) {
	for _, doc := range canonicalCases {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) { checkCanonical(t, doc) })
}

func checkCanonical(t *testing.T, doc []byte) {
	t.Helper()
	want, wantErr := CanonicalJSON(doc)
	c := canonicalizer{src: doc}
	if !c.document() {
		return // handed over
	}
	if wantErr != nil {
		t.Fatalf("fast path accepted %q, which CanonicalJSON refuses: %v", doc, wantErr)
	}
	if !bytes.Equal(c.out, want) {
		t.Fatalf("fast path wrote %s for %q, CanonicalJSON %s", c.out, doc, want)
	}
	got, err := appendCanonical([]byte("prefix"), doc)
	if err != nil || !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Fatalf("appendCanonical(%q) = %s, %v", doc, got, err)
	}
}

func BenchmarkCanonical(b *testing.B) {
	doc := []byte(canonicalCases[0])
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := appendCanonical(nil, doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		for b.Loop() {
			if _, err := CanonicalJSON(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestLinkHashIsChainHash: the replay's hash is the append's, byte for byte, whatever the time.
func TestLinkHashIsChainHash(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	times := []time.Time{
		time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
		time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(999, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 6, 1, 12, 0, 0, 123456789, time.FixedZone("", -7*3600)),
	}
	for i := range 2000 {
		at := time.Unix(r.Int64N(1<<35), r.Int64N(1e9))
		if i < len(times) {
			at = times[i]
		}
		var id uuid.UUID
		for k := range id {
			id[k] = byte(r.IntN(256))
		}
		prev := make([]byte, r.IntN(2)*32)
		for k := range prev {
			prev[k] = byte(r.IntN(256))
		}
		in := hashInput{streamID: fmt.Sprintf("account-%d", r.IntN(1000)), version: r.Int64N(1 << 40), id: id,
			eventType: "CoinsSent", schemaVersion: r.IntN(3), recordedAt: at,
			payload: []byte(strings.Repeat("p", r.IntN(900))), metadata: []byte(`{"actor":"a"}`)}
		got := linkHash(prev, in)
		if want := chainHash(prev, in); !bytes.Equal(got[:], want) {
			t.Fatalf("linkHash differs from chainHash for %+v", in)
		}
	}
}
