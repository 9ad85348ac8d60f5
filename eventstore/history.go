package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Reads of one stream's past, for auditors and for answers as of a point in time: a stream page
// by page or event by event, and the prefix of a stream up to a global position or a
// recorded-at time.

// streamSQL reads the events of stream $1 with a version above $2 in version order, at most $3
// of them (NULL: all). A stream's versions are dense and each commits after the one before it,
// so paging by version never skips an event.
const streamSQL = `SELECT ` + eventColumns + ` FROM events
	WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3`

// ReadStream calls fn with each event of streamID with a version above after, in version
// order, at most limit of them (limit <= 0: up to the stream's head), read with one statement.
// It is for readers that go through a long stream once and keep little of each event (a
// chart, a chain check): the event fn sees is the store's to reuse, and its Payload,
// RawMetadata and Hash are the driver's memory, valid only until fn returns (Clone keeps one).
// An error from fn ends the read and is returned as it is.
func (s *Store) ReadStream(ctx context.Context, streamID string, after int64, limit int, fn func(*RecordedEvent) error) error {
	var most *int
	if limit > 0 {
		most = &limit
	}
	rows, err := s.pool.Query(ctx, streamSQL, streamID, after, most)
	if err != nil {
		return fmt.Errorf("eventstore: read stream %q: %w", streamID, err)
	}
	var (
		e                 RecordedEvent
		typ               pgtype.DriverBytes
		schema            int32
		hashVersion       int16
		payload, md, hash pgtype.DriverBytes
		types             = make(map[string]string)
		fnErr             error
	)
	e.StreamID = streamID
	// The stream is known, and each type name is kept once: a row costs no allocation.
	_, err = pgx.ForEachRow(rows, []any{&e.Position, &e.TransactionID, nil, &e.Version, &e.ID, &typ, &schema,
		&payload, &md, &e.RecordedAt, &hash, &hashVersion}, func() error {
		var ok bool
		if e.Type, ok = types[string(typ)]; !ok {
			e.Type = string(typ)
			types[e.Type] = e.Type
		}
		e.SchemaVersion, e.HashVersion = int(schema), int(hashVersion)
		e.Payload, e.RawMetadata, e.Hash = []byte(payload), []byte(md), []byte(hash)
		fnErr = fn(&e)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("eventstore: read stream %q: %w", streamID, err)
	}
	return nil
}

// Clone returns a copy of e that owns its bytes, which is what a ReadStream reader keeps.
func (e RecordedEvent) Clone() RecordedEvent {
	buf := make([]byte, 0, len(e.Payload)+len(e.RawMetadata)+len(e.Hash))
	keep := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		buf = append(buf, b...)
		return buf[len(buf)-len(b) : len(buf) : len(buf)]
	}
	e.Payload, e.RawMetadata, e.Hash = keep(e.Payload), keep(e.RawMetadata), keep(e.Hash)
	return e
}

// loadStream is ReadStream keeping every event.
func (s *Store) loadStream(ctx context.Context, streamID string, after int64, limit int) ([]RecordedEvent, error) {
	var out []RecordedEvent
	if limit > 0 {
		out = make([]RecordedEvent, 0, min(limit, maxPageHint))
	}
	err := s.ReadStream(ctx, streamID, after, limit, func(e *RecordedEvent) error {
		out = append(out, e.Clone())
		return nil
	})
	return out, err
}

// LoadPage returns at most limit events of streamID with a version above after, in version
// order.
func (s *Store) LoadPage(ctx context.Context, streamID string, after int64, limit int) ([]RecordedEvent, error) {
	if limit <= 0 {
		return nil, invalid("load page: limit %d must be positive", limit)
	}
	return s.loadStream(ctx, streamID, after, limit)
}

// LoadThroughPosition returns the events of streamID at or before the
// global position pos, in version order. Appends to one stream are serialised, so a stream's
// positions ascend with its versions and the answer is a prefix of the stream.
func (s *Store) LoadThroughPosition(ctx context.Context, streamID string, pos int64) ([]RecordedEvent, error) {
	// "+ 0" keeps the planner on the stream's index alone: with stale statistics it ANDs in a
	// scan of the primary key up to the position, most of the statement's time on a long log.
	return s.loadPayloads(ctx, "load through position", streamID, `global_position + 0 <= $2`, pos)
}

// LoadRecordedBy returns the events of streamID recorded at or before t,
// in version order. Recorded-at times are stamped before an append waits for its stream, so in
// rare cases a version is recorded a moment earlier than the one before it: the answer may then
// have a hole, and a caller that needs a prefix of the stream stops at the first one.
func (s *Store) LoadRecordedBy(ctx context.Context, streamID string, t time.Time) ([]RecordedEvent, error) {
	return s.loadPayloads(ctx, "load recorded by", streamID, `recorded_at <= $2`, t)
}

// loadPayloads reads one stream's events with one statement through the (stream_id,
// stream_version) index, and only the columns folding needs (version, type, schema version,
// payload; the others are left zero): a time-travelling read of a long stream is mostly the
// cost of moving and decoding them.
func (s *Store) loadPayloads(ctx context.Context, what, streamID, cond string, arg any) ([]RecordedEvent, error) {
	rows, err := s.pool.Query(ctx, `SELECT stream_version, event_type, schema_version, `+PayloadSQL+` FROM events
		WHERE stream_id = $1 AND `+cond+` ORDER BY stream_version`, streamID, arg)
	if err != nil {
		return nil, fmt.Errorf("eventstore: %s %q: %w", what, streamID, err)
	}
	defer rows.Close()
	var out []RecordedEvent
	types := make(map[string]string)
	for rows.Next() {
		var e RecordedEvent
		var schema int32
		var typ []byte
		if err := rows.Scan(&e.Version, &typ, &schema, &e.Payload); err != nil {
			return nil, fmt.Errorf("eventstore: %s %q: %w", what, streamID, err)
		}
		var ok bool
		if e.Type, ok = types[string(typ)]; !ok {
			e.Type = string(typ)
			types[e.Type] = e.Type
		}
		e.SchemaVersion = int(schema)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("eventstore: %s %q: %w", what, streamID, err)
	}
	return out, nil
}
