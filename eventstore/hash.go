package eventstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Every event is chained to its stream's previous event: its hash covers the previous event's
// hash and the event itself. An event's hash_version says under which rule (ADR 7): rule 2
// hashes the payload and metadata bytes exactly as they are stored, so that verifying is
// SHA-256 over what is read back; rule 1, for events written before, is in hash_v1.go.

// hashVersion is the rule appends hash new events under.
const hashVersion = 2

// hashDomainV2 opens every rule-2 encoding, keeping it apart from rule 1 and any other use of
// SHA-256 over similar bytes.
const hashDomainV2 = "ledger.event.v2"

// hashInput is what one event's hash covers besides the previous hash.
type hashInput struct {
	streamID      string
	version       int64
	id            uuid.UUID
	eventType     string
	schemaVersion int
	recordedAt    time.Time
	payload       []byte // as stored
	metadata      []byte // as stored
}

// hashV2 returns SHA-256 over rule 2's encoding of prev (the stream's previous hash, empty for
// its first event) and in: every field either of fixed size or length-prefixed, so no two
// different events share an encoding. Times are Unix microseconds, PostgreSQL's precision.
func hashV2(prev []byte, in hashInput) [sha256.Size]byte {
	var space [512]byte
	b := appendField(space[:0], hashDomainV2)
	b = appendField(b, prev)
	b = appendField(b, in.streamID)
	b = binary.BigEndian.AppendUint64(b, uint64(in.version))
	b = append(b, in.id[:]...)
	b = appendField(b, in.eventType)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(in.schemaVersion)))
	b = binary.BigEndian.AppendUint64(b, uint64(in.recordedAt.UnixMicro()))
	b = appendField(b, in.payload)
	b = appendField(b, in.metadata)
	return sha256.Sum256(b)
}

// appendField appends f's length (8 bytes, big-endian) and f.
func appendField[T string | []byte](b []byte, f T) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(f)))
	return append(b, f...)
}

// ChainBreak names an event whose stored hash does not match the chain.
type ChainBreak struct {
	StreamID string
	Version  int64
	EventID  uuid.UUID
	Reason   string
}

// VerifyLink checks one link of a stream's hash chain: that e's stored hash is the hash, under
// e's rule, of prev (the stored hash of the stream's previous event, nil for version 1) and
// e's content. A reader walking the global log checks every stream's chain this way, one event
// at a time; checking that versions follow each other is left to the caller, who knows the
// previous one. nil means the link holds.
func VerifyLink(prev []byte, e RecordedEvent) *ChainBreak {
	in := hashInput{streamID: e.StreamID, version: e.Version, id: e.ID, eventType: e.Type,
		schemaVersion: e.SchemaVersion, recordedAt: e.RecordedAt, payload: e.Payload, metadata: e.RawMetadata}
	var want []byte
	switch e.HashVersion {
	case 2:
		h := hashV2(prev, in)
		want = h[:]
	case 1:
		var err error
		if want, err = hashV1(prev, in); err != nil {
			return &ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Reason: err.Error()}
		}
	default:
		return &ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID,
			Reason: fmt.Sprintf("unknown hash version %d", e.HashVersion)}
	}
	if !bytes.Equal(want, e.Hash) {
		return &ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Reason: "hash mismatch"}
	}
	return nil
}
