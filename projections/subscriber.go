package projections

import (
	"bytes"
	stdsql "database/sql"
	"encoding/gob"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/notify"
)

// A projector is a watermill Router handler fed by a watermill-sql subscriber. The subscriber's
// adapters below read the event store's own events table (no second copy of the events) through
// the one fenced log reader, and keep the consumer group's checkpoint in projection_checkpoints.

// topic is the one watermill topic: the application's events table.
const topic = "events"

// eventsSchema is a watermill-sql SchemaAdapter over the events table. A poll reads the page of
// the fenced log after the group's checkpoint (eventstore.LogPageSQL) and turns it into one
// message whose payload is the page's events: one message, one statement applying the batch.
type eventsSchema struct {
	batchSize int
	// wake is taken at the start of every poll, so that the backoff waits on a channel that
	// any append committed after the poll began has already closed.
	wake *pollWake
}

var _ wsql.SchemaAdapter = (*eventsSchema)(nil)

func (s *eventsSchema) InsertQuery(wsql.InsertQueryParams) (wsql.Query, error) {
	return wsql.Query{}, errors.New("projections: events are appended by the event store, never published through watermill")
}

// SelectQuery reads the next page of the log after the consumer group's checkpoint, in one
// statement: one snapshot for the checkpoint, the fence and the events.
func (s *eventsSchema) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	s.wake.pollStarts()
	limit := s.batchSize
	if s.wake.stopping.Load() {
		limit = 0 // a stopping projector drains: its last poll reads nothing
	}
	return wsql.Query{
		Query: eventstore.LogBatchSQL(`(SELECT transaction_id, position FROM projection_checkpoints WHERE consumer_group = $1)`, "$2"),
		Args:  []any{p.ConsumerGroup, limit},
	}, nil
}

// UnmarshalMessage turns a poll's page into one message carrying its events; an empty page is
// no message.
func (s *eventsSchema) UnmarshalMessage(p wsql.UnmarshalMessageParams) (wsql.Row, error) {
	page, err := eventstore.ScanLogBatch(p.Row)
	if err != nil {
		return wsql.Row{}, err
	}
	if len(page) == 0 {
		return wsql.Row{}, stdsql.ErrNoRows
	}
	// The payload is the page in gob: the message never leaves this process, and gob copies
	// the events' JSON documents as bytes where JSON would check and escape them again
	// (a projection alone catches up faster in most runs: ADR 8).
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(page); err != nil {
		return wsql.Row{}, fmt.Errorf("projections: encode a batch: %w", err)
	}
	payload := buf.Bytes()
	first, last := page[0], page[len(page)-1]
	// The message is named after its first event, which no other message starts with.
	msg := message.NewMessage(first.ID.String(), payload)
	msg.Metadata.Set("events", strconv.Itoa(len(page)))
	return wsql.Row{Offset: last.Position, UUID: []byte(msg.UUID), Payload: payload, Msg: msg,
		ExtraData: map[string]any{checkpointKey: last.Checkpoint()}}, nil
}

// checkpointKey names, in a row's ExtraData, the checkpoint after the row's last event.
const checkpointKey = "checkpoint"

func (s *eventsSchema) SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil // the migrations own the schema
}

// SubscribeIsolationLevel is stated explicitly (watermill's pgx adapter would otherwise turn
// the default into SERIALIZABLE). READ COMMITTED: the poll is one statement, and the version
// guard keeps a batch that another process applied meanwhile from being applied twice.
func (s *eventsSchema) SubscribeIsolationLevel() stdsql.IsolationLevel {
	return stdsql.LevelReadCommitted
}

// checkpoints is a watermill-sql OffsetsAdapter over projection_checkpoints: the checkpoint
// after the last event applied, which moves in the poll transaction with the read models.
type checkpoints struct{}

var _ wsql.OffsetsAdapter = checkpoints{}

// AckMessageQuery moves the checkpoint past the acked batch (never back: see SaveCheckpoint).
func (checkpoints) AckMessageQuery(p wsql.AckMessageQueryParams) (wsql.Query, error) {
	to, ok := p.LastRow.ExtraData[checkpointKey].(eventstore.Checkpoint)
	if !ok {
		return wsql.Query{}, fmt.Errorf("projections: message %s carries no checkpoint", p.LastRow.UUID)
	}
	return wsql.Query{Query: saveCheckpointSQL,
		Args: []any{p.ConsumerGroup, strconv.FormatUint(to.TransactionID, 10), to.Position}}, nil
}

func (checkpoints) ConsumedMessageQuery(wsql.ConsumedMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{}, nil
}

// NextOffsetQuery is not used: SelectQuery reads the checkpoint itself.
func (checkpoints) NextOffsetQuery(wsql.NextOffsetQueryParams) (wsql.Query, error) {
	return wsql.Query{}, nil
}

func (checkpoints) SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil
}

// BeforeSubscribingQueries creates the group's checkpoint at the start of the log if it has
// none, so that the poll has one to read.
func (checkpoints) BeforeSubscribingQueries(p wsql.BeforeSubscribingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{
		Query: `INSERT INTO projection_checkpoints (consumer_group) VALUES ($1) ON CONFLICT DO NOTHING`,
		Args:  []any{p.ConsumerGroup},
	}}, nil
}

// pollWake is the subscriber's BackoffManager: after a poll that found nothing it waits for an
// append (or another projector's commit) to signal, with the poll interval only as a fallback,
// instead of sleeping the interval; after a batch it tells waiting readers that the read
// models moved (the poll transaction has committed by then); and it spaces polls.
//
// It also drains a stopping projector. watermill-sql ends a poll's transaction when its
// subscriber closes even if the handler is still using it, which two goroutines on one
// connection do not survive; so a projector stops by reading nothing more (stopping), waiting
// until the poll in flight has ended (idle), and only then closing its router.
type pollWake struct {
	signal       *notify.Signal
	pollInterval time.Duration
	// spacing is the least time between the starts of two polls (see Config.PollSpacing).
	spacing time.Duration
	stop    <-chan struct{}

	stopping atomic.Bool
	// idle is closed once a poll ends after stopping was set: no transaction is open then.
	idle     chan struct{}
	idleOnce sync.Once

	// gen and started belong to the subscriber's goroutine: SelectQuery sets them, and
	// HandleError, which runs after the poll on the same goroutine, reads them.
	gen     <-chan struct{}
	started time.Time
}

var _ wsql.BackoffManager = (*pollWake)(nil)

func (b *pollWake) pollStarts() {
	b.gen = b.signal.C()
	b.started = time.Now()
}

func (b *pollWake) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if b.stopping.Load() {
		if !noMsg && err == nil {
			b.signal.Notify()
		}
		b.idleOnce.Do(func() { close(b.idle) })
		return b.pollInterval
	}
	if err != nil {
		logger.Error("projection poll failed", err, nil)
		return b.pollInterval // a failed poll is tried again as an idle one would poll
	}
	if !noMsg {
		b.signal.Notify()
		return b.untilSpaced()
	}
	if b.gen == nil {
		return b.pollInterval
	}
	t := time.NewTimer(b.pollInterval)
	defer t.Stop()
	select {
	case <-b.gen:
	case <-t.C:
	case <-b.stop:
	}
	return b.untilSpaced()
}

// untilSpaced is how long the next poll waits so that it starts no sooner than spacing after
// the last one began.
func (b *pollWake) untilSpaced() time.Duration {
	if b.spacing <= 0 || b.started.IsZero() {
		return 0
	}
	return max(0, b.spacing-time.Since(b.started))
}
