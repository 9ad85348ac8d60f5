package eventstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The hash chain must be recomputable from what is stored. PostgreSQL's jsonb keeps values but
// not bytes (key order, white space and number spelling change), so every JSON document is
// hashed in a canonical form: keys sorted, no white space, and only integer numbers, which
// jsonb renders back exactly as written. The same function canonicalises at append time (what
// is stored is already canonical) and at verification time (from what jsonb gives back).

// hashDomain separates this encoding from any other use of SHA-256 over similar bytes.
const hashDomain = "ledger.event.v1"

// recordedAtLayout is fixed-width, UTC and at PostgreSQL's microsecond precision.
const recordedAtLayout = "2006-01-02T15:04:05.000000Z"

// CanonicalJSON returns the canonical form of a JSON document: object keys sorted, no
// insignificant white space, numbers restricted to integers.
func CanonicalJSON(doc []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("not valid JSON: trailing data")
	}
	if err := checkIntegers(v); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("re-encode JSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

func checkIntegers(v any) error {
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			if err := checkIntegers(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := checkIntegers(e); err != nil {
				return err
			}
		}
	case json.Number:
		s := string(x)
		if strings.ContainsAny(s, ".eE") || s == "-0" {
			return fmt.Errorf("number %s: only integers are allowed (jsonb would respell it)", s)
		}
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return fmt.Errorf("number %s does not fit in 64 bits", s)
		}
	}
	return nil
}

// hashInput is what one event's hash covers besides the previous hash.
type hashInput struct {
	streamID      string
	version       int64
	id            uuid.UUID
	eventType     string
	schemaVersion int
	recordedAt    time.Time
	payload       []byte // canonical
	metadata      []byte // canonical
}

// chainHash returns SHA-256(prev || encoding of in). Fields are length-prefixed so no two
// different events share an encoding.
func chainHash(prev []byte, in hashInput) []byte {
	h := sha256.New()
	h.Write(prev)
	writeField(h, []byte(hashDomain))
	writeField(h, []byte(in.streamID))
	writeField(h, []byte(strconv.FormatInt(in.version, 10)))
	writeField(h, []byte(in.id.String()))
	writeField(h, []byte(in.eventType))
	writeField(h, []byte(strconv.Itoa(in.schemaVersion)))
	writeField(h, []byte(in.recordedAt.UTC().Format(recordedAtLayout)))
	writeField(h, in.payload)
	writeField(h, in.metadata)
	return h.Sum(nil)
}

func writeField(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// ChainBreak names the first event of a stream whose stored hash does not match the chain.
type ChainBreak struct {
	StreamID string
	Version  int64
	EventID  uuid.UUID
	Reason   string
}

// VerifyChain recomputes the hash chain of one stream's events, given in version order from
// version 1, and returns the first break, or nil when every stored hash matches.
func VerifyChain(events []RecordedEvent) *ChainBreak {
	var prev []byte
	for i, e := range events {
		brk := func(reason string) *ChainBreak {
			return &ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Reason: reason}
		}
		if e.Version != int64(i)+1 {
			return brk(fmt.Sprintf("expected version %d", i+1))
		}
		payload, err := CanonicalJSON(e.Payload)
		if err != nil {
			return brk("payload: " + err.Error())
		}
		meta, err := CanonicalJSON(e.RawMetadata)
		if err != nil {
			return brk("metadata: " + err.Error())
		}
		want := chainHash(prev, hashInput{
			streamID: e.StreamID, version: e.Version, id: e.ID, eventType: e.Type,
			schemaVersion: e.SchemaVersion, recordedAt: e.RecordedAt, payload: payload, metadata: meta,
		})
		if !bytes.Equal(want, e.Hash) {
			return brk("hash mismatch")
		}
		prev = e.Hash
	}
	return nil
}
