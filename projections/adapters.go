package projections

import (
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

	"github.com/ledger/ledger/eventstore"
)

// topic is the one watermill topic: the application's events table.
const topic = "events"

// Message metadata keys set by the schema adapter.
const (
	mdFirstPosition = "first_position"
	mdLastPosition  = "last_position"
	mdEvents        = "events"
)

// eventsSchema is a watermill-sql SchemaAdapter that reads the event store's own events table
// in (transaction_id, global_position) order, so no second copy of the events exists. A batch
// is every committed event after the checkpoint, up to the batch size, that the projector has
// not applied yet. The events below the oldest running transaction (the fence) are settled:
// no transaction still running can commit an event before them. Only settled events move the
// checkpoint, so no late-committing event is ever skipped; the events above the fence are
// applied at once all the same, so that a slow commit holds back the checkpoint but not the
// read models, and are then left out of the next polls (see ahead).
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
	// limit is how many events the latest poll was allowed to read.
	limit atomic.Int64
	// retrying is set when a batch could not be applied whole: until a batch is applied, polls
	// read at most oneAtATimeLimit events, which the handler applies one at a time, one round
	// trip each, so that such a poll ends well within its ack deadline whatever the batch size
	// and the latency to the database. (A poll that overran it would roll back what it applied
	// and start again from the same event, forever.)
	retrying atomic.Bool
	// current is the batch of the message in flight. The subscriber handles one message per
	// poll and polls again only once it is acked or abandoned, so the adapter hands the events
	// it has already decoded to the handler in process instead of encoding them again.
	current atomic.Pointer[pendingBatch]
	// ahead is what the projector committed above the fence.
	ahead ahead
}

// pendingBatch is what a poll found: events to apply (possibly none) and where the checkpoint
// goes once they are applied.
type pendingBatch struct {
	id     string // the message's UUID
	events []logEvent
	to     checkpoint
}

// first is the position the batch begins at, for logs.
func (b *pendingBatch) first() int64 {
	if len(b.events) > 0 {
		return b.events[0].Position
	}
	return b.to.Position
}

// checkpoint is a position in the log's (transaction id, position) order.
type checkpoint struct {
	TransactionID uint64
	Position      int64
}

// batch returns the batch of the message with the given UUID.
func (s *eventsSchema) batch(id string) (*pendingBatch, bool) {
	b := s.current.Load()
	if b == nil || b.id != id {
		return nil, false
	}
	return b, true
}

var _ wsql.SchemaAdapter = (*eventsSchema)(nil)

func (s *eventsSchema) InsertQuery(wsql.InsertQueryParams) (wsql.Query, error) {
	return wsql.Query{}, errors.New("projections: events are appended by the event store, never published through watermill")
}

// SelectQuery reads the consumer group's checkpoint, the next batch after it as one row of
// arrays, in binary, so that a batch is one message and is applied by one statement instead of
// one round trip per event, and the fence: the oldest transaction still running, as of the
// same snapshot. It leaves out the events the projector committed ahead ($2), but only if the
// checkpoint's row is still as the projector left it (written by transaction $3 of the server
// that started at $5; see writer), and reads above the fence only while that record has room
// ($4; see ahead). The transaction already holds the group's
// poll lock (see pollLock), so no other subscriber of the group moves the checkpoint meanwhile.
func (s *eventsSchema) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	ch := s.wake.C()
	s.pollGen.Store(&ch)
	s.pollStart.Store(time.Now().UnixNano())
	limit := s.batchSize
	if s.retrying.Load() {
		limit = min(limit, oneAtATimeLimit)
	}
	if s.stopping.Load() {
		limit = 0
	}
	s.limit.Store(int64(limit))
	return wsql.Query{
		Query: `
WITH cp AS (
    SELECT transaction_id, position, xmin::text::bigint AS writer FROM projection_checkpoints WHERE consumer_group = $1
), batch AS (
    SELECT e.global_position, e.transaction_id, e.event_id, e.stream_id, e.stream_version,
           e.event_type, e.schema_version, ` + eventstore.PayloadSQL + ` AS payload, e.recorded_at
    FROM events e
    WHERE (e.transaction_id, e.global_position) > ((SELECT transaction_id FROM cp), (SELECT position FROM cp))
      AND NOT (e.global_position = ANY ($2::bigint[]) AND (SELECT writer FROM cp) = $3 AND pg_postmaster_start_time() = $5)
      AND ($4 OR e.transaction_id < pg_snapshot_xmin(pg_current_snapshot()))
    ORDER BY e.transaction_id, e.global_position
    LIMIT ` + strconv.Itoa(limit) + `
)
SELECT count(*), array_agg(b.global_position), array_agg(b.transaction_id::text::bigint), array_agg(b.event_id),
       array_agg(b.stream_id), array_agg(b.stream_version), array_agg(b.event_type),
       array_agg(b.schema_version), array_agg(b.payload), array_agg(b.recorded_at),
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
       (SELECT transaction_id::text::bigint FROM cp), (SELECT position FROM cp), (SELECT writer FROM cp),
       pg_postmaster_start_time()
FROM batch b`,
		Args: append([]any{p.ConsumerGroup}, exclusions(&s.ahead)...),
	}, nil
}

// oneAtATimeLimit is the most events a poll reads while retrying (see eventsSchema.retrying):
// at 50 ms a round trip, one second of the ack deadline's five.
const oneAtATimeLimit = 20

func exclusions(a *ahead) []any {
	positions, w, aboveFence := a.exclusions()
	return []any{positions, int64(w.xid), aboveFence, w.started}
}

// UnmarshalMessage turns a poll's row into one batch message; a poll that found nothing to
// apply and cannot move the checkpoint is no message.
func (s *eventsSchema) UnmarshalMessage(p wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var (
		n                    int
		positions, txs, vers []int64
		ids                  []uuid.UUID
		streams, types       []string
		schemas              []int32
		payloads             [][]byte
		recordedAt           []time.Time
		fence, fromTx, xmin  int64
		started              time.Time
		from                 checkpoint
	)
	if err := p.Row.Scan(&n, &positions, &txs, &ids, &streams, &vers, &types, &schemas, &payloads, &recordedAt,
		&fence, &fromTx, &from.Position, &xmin, &started); err != nil {
		return wsql.Row{}, fmt.Errorf("projections: scan batch: %w", err)
	}
	from.TransactionID = uint64(fromTx)
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
	// A poll that read as many events as it was allowed to may have left some unread, before
	// events the record holds; one allowed none (the projector is stopping) read nothing at all.
	to := s.ahead.settle(events, int64(n) >= s.limit.Load(), from, uint64(fence), writer{xid: uint32(xmin), started: started})
	if n == 0 && to == from {
		return wsql.Row{}, stdsql.ErrNoRows
	}
	// A message is named after its first event; one that only moves the checkpoint (the
	// fence passed events applied earlier) after the position it moves to.
	name, first, last := "checkpoint-"+strconv.FormatInt(to.Position, 10), to.Position, to.Position
	if n > 0 {
		name, first, last = events[0].ID.String(), events[0].Position, events[n-1].Position
	}
	msg := message.NewMessage(name, nil)
	msg.Metadata = message.Metadata{
		mdFirstPosition: strconv.FormatInt(first, 10),
		mdLastPosition:  strconv.FormatInt(last, 10),
		mdEvents:        strconv.Itoa(n),
	}
	s.current.Store(&pendingBatch{id: msg.UUID, events: events, to: to})
	row := wsql.Row{Offset: max(last, 1), UUID: []byte(msg.UUID), Msg: msg}
	if to != from {
		row.ExtraData = map[string]any{"checkpoint": to}
	}
	return row, nil
}

// checkpoint is the log position of the event.
func (l logEvent) checkpoint() checkpoint {
	return checkpoint{TransactionID: l.TransactionID, Position: l.Position}
}

func logOrder(a, b logEvent) int { return checkpointOrder(a.checkpoint(), b.checkpoint()) }

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
// the (transaction id, position) pair of the last settled event applied: every event up to it
// is applied, and no transaction still running can add one before it.
type checkpoints struct{}

var _ wsql.OffsetsAdapter = checkpoints{}

// AckMessageQuery moves the checkpoint to where the batch settles it. A projector's handler
// sends that with its batch and the COMMIT (see handler.handle), and the subscriber's ack is
// then dropped; the ack runs when the handler leaves the commit to the subscriber.
func (checkpoints) AckMessageQuery(p wsql.AckMessageQueryParams) (wsql.Query, error) {
	to, ok := p.LastRow.ExtraData["checkpoint"].(checkpoint)
	if !ok {
		// The fence passed no event of the batch: the checkpoint stays where it is.
		return wsql.Query{Query: "SELECT"}, nil
	}
	return checkpointQuery(p.ConsumerGroup, to), nil
}

// checkpointQuery moves group's checkpoint to the log position to.
func checkpointQuery(group string, to checkpoint) wsql.Query {
	return wsql.Query{
		Query: `UPDATE projection_checkpoints SET transaction_id = $1, position = $2, updated_at = now()
		        WHERE consumer_group = $3`,
		Args: []any{to.TransactionID, to.Position, group},
	}
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
	stop    <-chan struct{}
	onBatch func()
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
