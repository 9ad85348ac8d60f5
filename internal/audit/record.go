// Package audit is what auditors run over the ledger's log: the export of the global log as
// newline-delimited JSON, and the verifier that replays the whole log, recomputes every
// stream's hash chain, folds every account and compares the folds with the read models at the
// versions the projectors have applied.
package audit

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
)

// Record is an event as auditors and the consumers of the event stream see it: one line of an
// export, one entry of an account's events, one message body on NATS. Payload and metadata are
// the stored documents, byte for byte as the hash covers them under rule HashVersion (ADR 7);
// Checkpoint is where a reader of the global log resumes after this event.
type Record struct {
	RecordHead
	Payload  json.RawMessage `json:"payload"`
	Metadata json.RawMessage `json:"metadata"`
	// PayloadBytes and MetadataBytes are the stored documents, when they hold a line break
	// (whitespace the event store took as given): a record is one line, so such a document
	// appears compacted in Payload or Metadata and exactly, for the hash, here (base64).
	PayloadBytes  []byte `json:"payloadBytes,omitempty"`
	MetadataBytes []byte `json:"metadataBytes,omitempty"`
}

// RecordHead is what a Record says of its event besides the documents.
type RecordHead struct {
	Checkpoint    string    `json:"checkpoint"`
	Position      int64     `json:"position"`
	TransactionID uint64    `json:"transactionId"`
	StreamID      string    `json:"streamId"`
	Version       int64     `json:"version"`
	EventID       uuid.UUID `json:"eventId"`
	Type          string    `json:"type"`
	SchemaVersion int       `json:"schemaVersion"`
	RecordedAt    time.Time `json:"recordedAt"`
	// Hash is the event's link in its stream's hash chain, in hex.
	Hash string `json:"hash"`
	// HashVersion is the rule Hash was computed under: 2 hashes payload and metadata exactly
	// as they appear here; 1 (events written before rule 2) their canonical re-encoding.
	HashVersion int `json:"hashVersion"`
}

// RecordOf returns the record of a stored event.
func RecordOf(e eventstore.RecordedEvent) Record {
	return Record{RecordHead: RecordHead{
		Checkpoint: e.Checkpoint().String(), Position: e.Position, TransactionID: e.TransactionID,
		StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Type: e.Type, SchemaVersion: e.SchemaVersion,
		RecordedAt: e.RecordedAt.UTC(), Hash: hex.EncodeToString(e.Hash), HashVersion: e.HashVersion,
	}, Payload: e.Payload, Metadata: e.RawMetadata}
}

// Event returns the stored event r describes, as far as a record tells it: everything the
// hash covers, so that eventstore.VerifyLink checks a record as it checks the log.
func (r Record) Event() (eventstore.RecordedEvent, error) {
	c, err := eventstore.ParseCheckpoint(r.Checkpoint)
	if err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("record checkpoint %q: %w", r.Checkpoint, err)
	}
	h, err := hex.DecodeString(r.Hash)
	if err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("record hash: %w", err)
	}
	payload, metadata := r.Payload, r.Metadata
	if r.PayloadBytes != nil {
		payload = r.PayloadBytes
	}
	if r.MetadataBytes != nil {
		metadata = r.MetadataBytes
	}
	return eventstore.RecordedEvent{Position: c.Position, TransactionID: c.TransactionID, StreamID: r.StreamID,
		Version: r.Version, ID: r.EventID, Type: r.Type, SchemaVersion: r.SchemaVersion, Payload: payload,
		RawMetadata: metadata, RecordedAt: r.RecordedAt, Hash: h, HashVersion: r.HashVersion}, nil
}

// errNotJSON is a stored document that is not JSON: the log was changed behind the event
// store's back (appends refuse such documents).
var errNotJSON = errors.New("stored document is not valid JSON")

// AppendJSON appends r as one line of JSON (no newline). encoding/json writes every field but
// the two documents; those are appended as they are, since a JSON encoder re-encodes raw
// values (drops their whitespace, may escape characters) and the hash covers the stored bytes.
// A document with a line break, which no line may hold, is appended compacted and carried
// exactly in PayloadBytes or MetadataBytes.
func (r Record) AppendJSON(b []byte) ([]byte, error) {
	if !json.Valid(r.Payload) || !json.Valid(r.Metadata) {
		return b, fmt.Errorf("event %s (%s): %w", r.EventID, r.Checkpoint, errNotJSON)
	}
	payload, metadata := r.Payload, r.Metadata
	head := struct {
		RecordHead
		PayloadBytes  []byte `json:"payloadBytes,omitempty"`
		MetadataBytes []byte `json:"metadataBytes,omitempty"`
	}{r.RecordHead, r.PayloadBytes, r.MetadataBytes}
	if bytes.ContainsAny(payload, "\r\n") {
		head.PayloadBytes, payload = payload, compact(payload)
	}
	if bytes.ContainsAny(metadata, "\r\n") {
		head.MetadataBytes, metadata = metadata, compact(metadata)
	}
	fields, err := json.Marshal(head)
	if err != nil {
		return b, err
	}
	b = append(b, fields[:len(fields)-1]...) // without the closing brace
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	b = append(b, `,"metadata":`...)
	b = append(b, metadata...)
	return append(b, '}'), nil
}

// compact returns doc, valid JSON, without insignificant whitespace.
func compact(doc []byte) []byte {
	var buf bytes.Buffer
	_ = json.Compact(&buf, doc) // doc is valid: nothing to report
	return buf.Bytes()
}

// LineWriter writes records as newline-delimited JSON (application/x-ndjson), buffered:
// Flush hands what is buffered to the underlying writer.
type LineWriter struct {
	buf  *bufio.Writer
	line []byte
}

// NewLineWriter returns a LineWriter over w.
func NewLineWriter(w io.Writer) *LineWriter {
	return &LineWriter{buf: bufio.NewWriterSize(w, 64<<10)}
}

// Write writes e as one line.
func (lw *LineWriter) Write(e eventstore.RecordedEvent) error {
	line, err := RecordOf(e).AppendJSON(lw.line[:0])
	if err != nil {
		return err
	}
	lw.line = append(line, '\n')
	_, err = lw.buf.Write(lw.line)
	return err
}

// Flush writes out what is buffered.
func (lw *LineWriter) Flush() error { return lw.buf.Flush() }

// MarshalJSON writes r as AppendJSON does, for records inside a larger JSON document.
func (r Record) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil) }
