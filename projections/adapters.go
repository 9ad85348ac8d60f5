package projections

import (
	"cmp"
	stdsql "database/sql"
	"errors"
	"fmt"
	"slices"
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
	mdFirstPosition = "first_position"
	mdLastPosition  = "last_position"
	mdEvents        = "events"
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
	// pollStart is when the latest poll began (unix nanoseconds), for the backoff's spacing.
	pollStart atomic.Int64
	// stopping makes every further poll read nothing, so the batch in flight is the last.
	stopping atomic.Bool
	// current is the batch of the message in flight. The subscriber handles one message per
	// poll and polls again only once it is acked or abandoned, so the adapter hands the events
	// it has already decoded to the handler in process instead of encoding them again.
	current atomic.Pointer[pendingBatch]
}

type pendingBatch struct {
	id     string // the message's UUID
	events []logEvent
}

// batch returns the events of the message with the given UUID.
func (s *eventsSchema) batch(id string) ([]logEvent, bool) {
	b := s.current.Load()
	if b == nil || b.id != id {
		return nil, false
	}
	return b.events, true
}

var _ wsql.SchemaAdapter = (*eventsSchema)(nil)

func (s *eventsSchema) InsertQuery(wsql.InsertQueryParams) (wsql.Query, error) {
	return wsql.Query{}, errors.New("projections: events are appended by the event store, never published through watermill")
}

// SelectQuery reads the consumer group's checkpoint and the next batch after it as one row of
// arrays, in binary, so that a batch is one message and is applied by one statement instead of
// one round trip per event. The transaction already holds the group's poll lock (see
// pollLock), so no other subscriber of the group moves the checkpoint meanwhile.
func (s *eventsSchema) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	ch := s.wake.C()
	s.pollGen.Store(&ch)
	s.pollStart.Store(time.Now().UnixNano())
	limit := s.batchSize
	if s.stopping.Load() {
		limit = 0
	}
	return wsql.Query{
		Query: `
WITH cp AS (
    SELECT transaction_id, position FROM projection_checkpoints WHERE consumer_group = $1
), batch AS (
    SELECT e.global_position, e.transaction_id, e.event_id, e.stream_id, e.stream_version,
           e.event_type, e.schema_version, e.payload, e.recorded_at
    FROM events e
    WHERE (e.transaction_id, e.global_position) > ((SELECT transaction_id FROM cp), (SELECT position FROM cp))
      AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.transaction_id, e.global_position
    LIMIT ` + strconv.Itoa(limit) + `
)
SELECT count(*), array_agg(b.global_position), array_agg(b.transaction_id::text::bigint), array_agg(b.event_id),
       array_agg(b.stream_id), array_agg(b.stream_version), array_agg(b.event_type),
       array_agg(b.schema_version), array_agg(b.payload), array_agg(b.recorded_at)
FROM batch b`,
		Args: []any{p.ConsumerGroup},
	}, nil
}

// UnmarshalMessage turns a poll's row into one batch message; an empty poll is no message.
func (s *eventsSchema) UnmarshalMessage(p wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var (
		n                    int
		positions, txs, vers []int64
		ids                  []uuid.UUID
		streams, types       []string
		schemas              []int32
		payloads             [][]byte
		recordedAt           []time.Time
	)
	if err := p.Row.Scan(&n, &positions, &txs, &ids, &streams, &vers, &types, &schemas, &payloads, &recordedAt); err != nil {
		return wsql.Row{}, fmt.Errorf("projections: scan batch: %w", err)
	}
	if n == 0 {
		return wsql.Row{}, stdsql.ErrNoRows
	}
	for _, l := range []int{len(positions), len(txs), len(ids), len(streams), len(vers), len(types), len(schemas), len(payloads), len(recordedAt)} {
		if l != n {
			return wsql.Row{}, fmt.Errorf("projections: batch of %d events has a column of %d", n, l)
		}
	}
	events := make([]logEvent, n)
	for i := range events {
		events[i] = logEvent{Position: positions[i], TransactionID: uint64(txs[i]), ID: ids[i], Stream: streams[i],
			Version: vers[i], Type: types[i], SchemaVersion: int(schemas[i]), Payload: payloads[i], RecordedAt: recordedAt[i]}
	}
	// The aggregates see the rows in the subquery's order; sorting again costs nothing when it
	// holds and keeps the log order when it would not.
	if !slices.IsSortedFunc(events, logOrder) {
		slices.SortFunc(events, logOrder)
	}
	first, last := events[0], events[n-1]
	msg := message.NewMessage(first.ID.String(), nil)
	msg.Metadata = message.Metadata{
		mdFirstPosition: strconv.FormatInt(first.Position, 10),
		mdLastPosition:  strconv.FormatInt(last.Position, 10),
		mdEvents:        strconv.Itoa(n),
	}
	s.current.Store(&pendingBatch{id: msg.UUID, events: events})
	return wsql.Row{Offset: last.Position, UUID: first.ID[:], Msg: msg,
		ExtraData: map[string]any{"transaction_id": last.TransactionID}}, nil
}

func logOrder(a, b logEvent) int {
	if c := cmp.Compare(a.TransactionID, b.TransactionID); c != 0 {
		return c
	}
	return cmp.Compare(a.Position, b.Position)
}

func (s *eventsSchema) SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil // the migrations own the schema
}

// SubscribeIsolationLevel is stated explicitly (watermill's pgx adapter would otherwise turn
// the default into SERIALIZABLE): READ COMMITTED, so that the poll query's snapshot is taken
// after the poll lock is granted and sees the checkpoint its previous holder committed. The
// poll is one statement (one snapshot for the checkpoint, the fence and the events), and the
// statements after it only write what this transaction alone may write while it holds the lock.
func (s *eventsSchema) SubscribeIsolationLevel() stdsql.IsolationLevel {
	return stdsql.LevelReadCommitted
}

// pollLockClass keeps the projectors' poll locks apart from other advisory locks ("LEDQ").
const pollLockClass = 1279607892

// pollLock is the statement every poll transaction of a consumer group runs first: a
// transaction-level advisory lock on the group, so one subscriber of a group polls and applies
// at a time (leases keep a group in one process; this holds whatever happens). It replaces
// locking the checkpoint row FOR UPDATE, which gave every poll, even an empty one, a
// transaction id from its first statement to its commit: every event appended meanwhile has a
// newer one and stays behind the log's fence until that commit, for every projector. Now a
// poll takes a transaction id only when it writes.
func pollLock(group string) queuedStmt {
	return queuedStmt{sql: `SELECT pg_advisory_xact_lock($1, hashtext($2))`, args: []any{pollLockClass, group}}
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
		Query: `SELECT position, transaction_id FROM projection_checkpoints WHERE consumer_group = $1`,
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
	// spacing is the least time between the starts of two polls (see Config.PollSpacing).
	spacing time.Duration
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
		return b.untilSpaced()
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
	return b.untilSpaced()
}

// untilSpaced is how long the next poll waits so that it starts no sooner than spacing after
// the last one began.
func (b *wakeBackoff) untilSpaced() time.Duration {
	started := b.schema.pollStart.Load()
	if b.spacing <= 0 || started == 0 {
		return 0
	}
	return max(0, b.spacing-time.Since(time.Unix(0, started)))
}
