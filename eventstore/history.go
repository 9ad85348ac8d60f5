package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reads of one stream's past, for auditors and for answers as of a point in time: a stream page
// by page, and the prefix of a stream up to a global position or a recorded-at time.

// LoadPage returns at most limit events of streamID with a version above after, in version
// order. A stream's versions are dense and each commits after the one before it, so paging by
// version never skips an event.
func (s *Store) LoadPage(ctx context.Context, streamID string, after int64, limit int) ([]RecordedEvent, error) {
	if limit <= 0 {
		return nil, invalid("load page: limit %d must be positive", limit)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3`, streamID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore: load page %q: %w", streamID, err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RecordedEvent, error) { return scanEvent(r) })
	if err != nil {
		return nil, fmt.Errorf("eventstore: load page %q: %w", streamID, err)
	}
	return evs, nil
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
