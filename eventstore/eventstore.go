// Package eventstore is the ledger's source of truth: an append-only log of events in PostgreSQL,
// grouped into streams with optimistic versioning. One append may touch several streams and is
// atomic; every event is chained to its stream's previous event by a SHA-256 hash; asynchronous
// readers walk the global log in (transaction id, position) order below the oldest running
// transaction, so an event whose transaction commits late is never skipped.
package eventstore

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
)

// ExpectedVersion is what an append states about a stream's current version.
type ExpectedVersion struct {
	kind    expectKind
	version int64
}

type expectKind uint8

const (
	expectExact expectKind = iota
	expectNoStream
	expectAny
)

// Exactly expects the stream to hold exactly v events (v = 0 is the same as NoStream).
func Exactly(v int64) ExpectedVersion { return ExpectedVersion{kind: expectExact, version: v} }

// NoStream expects the stream not to exist yet.
func NoStream() ExpectedVersion { return ExpectedVersion{kind: expectNoStream} }

// Any accepts whatever version the stream has, including none.
func Any() ExpectedVersion { return ExpectedVersion{kind: expectAny} }

// matches reports whether a stream currently at actual satisfies e.
func (e ExpectedVersion) matches(actual int64) bool {
	switch e.kind {
	case expectAny:
		return true
	case expectNoStream:
		return actual == 0
	default:
		return actual == e.version
	}
}

// known reports whether e pins the version, which is what makes a snapshot trustworthy.
func (e ExpectedVersion) known() (int64, bool) {
	switch e.kind {
	case expectNoStream:
		return 0, true
	case expectExact:
		return e.version, true
	default:
		return 0, false
	}
}

// String renders e for error messages.
func (e ExpectedVersion) String() string {
	switch e.kind {
	case expectAny:
		return "any"
	case expectNoStream:
		return "no stream"
	default:
		return strconv.FormatInt(e.version, 10)
	}
}

// Metadata is the context an event was recorded in.
type Metadata struct {
	CorrelationID  string `json:"correlationId,omitempty"`
	CausationID    string `json:"causationId,omitempty"`
	Actor          string `json:"actor,omitempty"`
	RequestID      string `json:"requestId,omitempty"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`

	// ClientRequestID is the X-Request-ID the client sent with the request, as the client's
	// claim: anyone may send any id, so it is never taken for RequestID, the server's own.
	ClientRequestID string `json:"clientRequestId,omitempty"`
}

// EventData is an event to append.
type EventData struct {
	// ID identifies the event; zero means the store assigns a UUIDv7.
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	// Payload is marshalled to JSON; json.RawMessage and []byte holding JSON are taken as they are.
	Payload  any
	Metadata Metadata
}

// Snapshot is an aggregate's folded state after the events of the same StreamAppend. It is
// stored with the stream head, so loading the aggregate later costs only the events after it.
type Snapshot struct {
	State any
}

// StreamAppend is the part of an append that concerns one stream.
type StreamAppend struct {
	StreamID string
	Expected ExpectedVersion
	Events   []EventData
	// Snapshot is optional and needs Expected to pin the version (Exactly or NoStream): a state
	// folded from an unknown version cannot be trusted.
	Snapshot *Snapshot
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	Position      int64
	TransactionID uint64
	StreamID      string
	Version       int64
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	Payload       json.RawMessage
	// RawMetadata is the metadata document as stored, which is what the hash chain covers
	// (MetadataOf decodes it).
	RawMetadata json.RawMessage
	RecordedAt  time.Time
	Hash        []byte
	// HashVersion is the rule Hash was computed under (see VerifyLink).
	HashVersion int
}

// Checkpoint is a reader's place in the global log: everything at or before it has been read.
// The zero Checkpoint is the start of the log.
type Checkpoint struct {
	TransactionID uint64
	Position      int64
}

// Decode returns the event's payload as its domain type (see DecodeEvent).
func (e RecordedEvent) Decode() (domain.Event, error) {
	return DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
}

// MetadataOf decodes the event's metadata document.
func (e RecordedEvent) MetadataOf() (Metadata, error) {
	var m Metadata
	err := decodeMetadata(e.RawMetadata, &m)
	return m, err
}

// Checkpoint returns the place just after e.
func (e RecordedEvent) Checkpoint() Checkpoint {
	return Checkpoint{TransactionID: e.TransactionID, Position: e.Position}
}

// Compare orders checkpoints as the log does: -1 if c comes before o, 0 if they are the same
// place, +1 if c comes after o.
func (c Checkpoint) Compare(o Checkpoint) int {
	if c.TransactionID != o.TransactionID {
		return cmp.Compare(c.TransactionID, o.TransactionID)
	}
	return cmp.Compare(c.Position, o.Position)
}

// Before reports whether c comes before o in log order.
func (c Checkpoint) Before(o Checkpoint) bool { return c.Compare(o) < 0 }

// String renders c as "transaction:position", the form ParseCheckpoint reads.
func (c Checkpoint) String() string {
	return strconv.FormatUint(c.TransactionID, 10) + ":" + strconv.FormatInt(c.Position, 10)
}

// ParseCheckpoint reads the "transaction:position" form of a Checkpoint.
func ParseCheckpoint(s string) (Checkpoint, error) {
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		tx, err1 := strconv.ParseUint(s[:i], 10, 64)
		pos, err2 := strconv.ParseInt(s[i+1:], 10, 64)
		if err1 != nil || err2 != nil || pos < 0 {
			break
		}
		return Checkpoint{TransactionID: tx, Position: pos}, nil
	}
	return Checkpoint{}, fmt.Errorf("checkpoint %q: want transaction:position: %w", s, ErrInvalidArgument)
}

// StreamResult is one stream's outcome of an append.
type StreamResult struct {
	StreamID string
	// FromVersion is the stream's version before the append; ToVersion after it.
	FromVersion int64
	ToVersion   int64
}

// AppendResult tells a reader what it must wait for to see the append.
type AppendResult struct {
	Streams []StreamResult
	// Checkpoint is the place of the append's last event in the global log.
	Checkpoint Checkpoint
}

// Version returns the new version of streamID, or 0 if the append did not touch it.
func (r AppendResult) Version(streamID string) int64 {
	for _, s := range r.Streams {
		if s.StreamID == streamID {
			return s.ToVersion
		}
	}
	return 0
}

// ErrInvalidArgument marks input refused before the database was touched.
var ErrInvalidArgument = errors.New("eventstore: invalid argument")

// ErrDuplicateEvent means an event id is already in the log; nothing of the append was written.
var ErrDuplicateEvent = errors.New("eventstore: duplicate event id")

// ConcurrencyError says that a stream was not at the version an append expected.
type ConcurrencyError struct {
	StreamID string
	Expected ExpectedVersion
	Actual   int64
}

func (e *ConcurrencyError) Error() string {
	return fmt.Sprintf("eventstore: stream %q is at version %d, append expected %s",
		e.StreamID, e.Actual, e.Expected)
}
