package projections

import (
	stdsql "database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// topic is the one watermill topic: the application's events table.
const topic = "events"

// Message metadata keys set by the schema adapter.
const (
	mdStream        = "stream_id"
	mdVersion       = "stream_version"
	mdType          = "event_type"
	mdSchema        = "schema_version"
	mdPosition      = "global_position"
	mdTransactionID = "transaction_id"
	mdRecordedAt    = "recorded_at"
)

// eventsSchema is a watermill-sql SchemaAdapter that reads the event store's own events table,
// in (transaction_id, global_position) order below the oldest running transaction, so no
// second copy of the events exists and no late-committing event is skipped.
type eventsSchema struct {
	batchSize int
	// wake is taken at the start of every poll, so that the backoff manager waits on a channel
	// that any append committed after the poll began has already closed.
	wake    *Signal
	pollGen atomic.Pointer[<-chan struct{}]
	// stopping makes every further poll read nothing, so the batch in flight is the last.
	stopping atomic.Bool
}

var _ wsql.SchemaAdapter = (*eventsSchema)(nil)

func (s *eventsSchema) InsertQuery(wsql.InsertQueryParams) (wsql.Query, error) {
	return wsql.Query{}, errors.New("projections: events are appended by the event store, never published through watermill")
}

// SelectQuery locks the consumer group's checkpoint row (one subscriber per group at a time)
// and reads the next batch after it.
func (s *eventsSchema) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	ch := s.wake.C()
	s.pollGen.Store(&ch)
	limit := s.batchSize
	if s.stopping.Load() {
		limit = 0
	}
	return wsql.Query{
		Query: `
WITH cp AS (
    SELECT transaction_id, position FROM projection_checkpoints WHERE consumer_group = $1 FOR UPDATE
)
SELECT e.global_position, e.transaction_id, e.event_id, e.stream_id, e.stream_version,
       e.event_type, e.schema_version, e.payload, e.recorded_at
FROM cp, events e
WHERE (e.transaction_id, e.global_position) > (cp.transaction_id, cp.position)
  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY e.transaction_id, e.global_position
LIMIT ` + strconv.Itoa(limit),
		Args: []any{p.ConsumerGroup},
	}, nil
}

func (s *eventsSchema) UnmarshalMessage(p wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var (
		pos, version int64
		txID         uint64
		id           uuid.UUID
		stream, typ  string
		schema       int32
		payload      []byte
		at           time.Time
	)
	if err := p.Row.Scan(&pos, &txID, &id, &stream, &version, &typ, &schema, &payload, &at); err != nil {
		return wsql.Row{}, fmt.Errorf("projections: scan event: %w", err)
	}
	msg := message.NewMessage(id.String(), payload)
	msg.Metadata = message.Metadata{
		mdStream:        stream,
		mdVersion:       strconv.FormatInt(version, 10),
		mdType:          typ,
		mdSchema:        strconv.Itoa(int(schema)),
		mdPosition:      strconv.FormatInt(pos, 10),
		mdTransactionID: strconv.FormatUint(txID, 10),
		mdRecordedAt:    at.UTC().Format(time.RFC3339Nano),
	}
	return wsql.Row{Offset: pos, UUID: id[:], Payload: payload, Msg: msg,
		ExtraData: map[string]any{"transaction_id": txID}}, nil
}

func (s *eventsSchema) SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil // the migrations own the schema
}

// SubscribeIsolationLevel is stated explicitly: the pgx adapter would otherwise turn the
// default into SERIALIZABLE.
func (s *eventsSchema) SubscribeIsolationLevel() stdsql.IsolationLevel {
	return stdsql.LevelRepeatableRead
}

// checkpoints is a watermill-sql OffsetsAdapter over projection_checkpoints. The checkpoint is
// the (transaction id, position) pair of the last event applied.
type checkpoints struct{}

var _ wsql.OffsetsAdapter = checkpoints{}

func (checkpoints) AckMessageQuery(p wsql.AckMessageQueryParams) (wsql.Query, error) {
	txID, ok := p.LastRow.ExtraData["transaction_id"].(uint64)
	if !ok {
		return wsql.Query{}, fmt.Errorf("projections: row at %d has no transaction id", p.LastRow.Offset)
	}
	return wsql.Query{
		Query: `UPDATE projection_checkpoints SET transaction_id = $1, position = $2, updated_at = now()
		        WHERE consumer_group = $3`,
		Args: []any{txID, p.LastRow.Offset, p.ConsumerGroup},
	}, nil
}

func (checkpoints) ConsumedMessageQuery(wsql.ConsumedMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{}, nil
}

func (checkpoints) NextOffsetQuery(p wsql.NextOffsetQueryParams) (wsql.Query, error) {
	return wsql.Query{
		Query: `SELECT position, transaction_id FROM projection_checkpoints WHERE consumer_group = $1 FOR UPDATE`,
		Args:  []any{p.ConsumerGroup},
	}, nil
}

func (checkpoints) SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil
}

// BeforeSubscribingQueries creates the group's checkpoint row, so that FOR UPDATE has a row to lock.
func (checkpoints) BeforeSubscribingQueries(p wsql.BeforeSubscribingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{
		Query: `INSERT INTO projection_checkpoints (consumer_group) VALUES ($1) ON CONFLICT DO NOTHING`,
		Args:  []any{p.ConsumerGroup},
	}}, nil
}

// wakeBackoff replaces the subscriber's poll-interval sleep: when a poll found nothing it
// blocks until an append (or another projector's commit) signals, with the poll interval only
// as a fallback; after a batch it tells waiting readers that the read models moved.
type wakeBackoff struct {
	schema        *eventsSchema
	pollInterval  time.Duration
	retryInterval time.Duration
	stop          <-chan struct{}
	onBatch       func()
	// idle is closed after the first poll that ends once the schema is stopping: from then on
	// no poll transaction is in flight.
	idle     chan struct{}
	idleOnce sync.Once
}

func (b *wakeBackoff) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if b.schema.stopping.Load() {
		if !noMsg && err == nil {
			b.onBatch()
		}
		b.idleOnce.Do(func() { close(b.idle) })
		return b.pollInterval
	}
	if err != nil {
		logger.Error("projection poll failed", err, nil)
		return b.retryInterval
	}
	if !noMsg {
		b.onBatch()
		return 0
	}
	gen := b.schema.pollGen.Load()
	if gen == nil {
		return b.pollInterval
	}
	t := time.NewTimer(b.pollInterval)
	defer t.Stop()
	select {
	case <-*gen:
	case <-t.C:
	case <-b.stop:
	}
	return 0
}
