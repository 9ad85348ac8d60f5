// Package audit is what auditors run over the ledger's log: the export of the global log as
// newline-delimited JSON, and the verifier that replays the whole log, recomputes every
// stream's hash chain, folds every account and compares the folds with the read models at the
// versions the projectors have applied.
package audit

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
)

// Record is an event as auditors see it: one line of an export, one entry of an account's
// events. Payload and metadata are the stored documents; Checkpoint is where a reader of the
// global log resumes after this event.
type Record struct {
	Checkpoint    string          `json:"checkpoint"`
	Position      int64           `json:"position"`
	TransactionID uint64          `json:"transactionId"`
	StreamID      string          `json:"streamId"`
	Version       int64           `json:"version"`
	EventID       uuid.UUID       `json:"eventId"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schemaVersion"`
	RecordedAt    time.Time       `json:"recordedAt"`
	Payload       json.RawMessage `json:"payload"`
	Metadata      json.RawMessage `json:"metadata"`
	// Hash is the event's link in its stream's hash chain, in hex.
	Hash string `json:"hash"`
}

// RecordOf returns the record of a stored event.
func RecordOf(e eventstore.RecordedEvent) Record {
	return Record{
		Checkpoint: e.Checkpoint().String(), Position: e.Position, TransactionID: e.TransactionID,
		StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Type: e.Type, SchemaVersion: e.SchemaVersion,
		RecordedAt: e.RecordedAt.UTC(), Payload: e.Payload, Metadata: e.RawMetadata, Hash: hex.EncodeToString(e.Hash),
	}
}

// LineWriter writes records as newline-delimited JSON (application/x-ndjson), buffered:
// Flush hands what is buffered to the underlying writer.
type LineWriter struct {
	buf *bufio.Writer
	enc *json.Encoder
}

// NewLineWriter returns a LineWriter over w.
func NewLineWriter(w io.Writer) *LineWriter {
	buf := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	return &LineWriter{buf: buf, enc: enc}
}

// Write writes e as one line.
func (lw *LineWriter) Write(e eventstore.RecordedEvent) error {
	return lw.enc.Encode(RecordOf(e)) // Encode ends every value with a newline
}

// Flush writes out what is buffered.
func (lw *LineWriter) Flush() error { return lw.buf.Flush() }
