package projections

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledger/ledger/eventstore"
)

// handler applies one projection's batches, each in the subscriber's poll transaction, which
// the subscriber commits with the checkpoint once the handler acks the message.
type handler struct {
	r   *Runner
	p   Projection
	sql string // the projection's batch statement
	st  *projectorState
}

// handle applies one batch message. It first applies the events whole, in one statement. If
// that fails, it applies them one at a time, so that the event that cannot be applied is
// found and named: the events before it stay applied in the transaction (the version guard
// keeps them from being applied twice when the message is handled again), and the error names
// the event. Each attempt runs in a savepoint, so that a failed one leaves nothing behind and
// the transaction usable for the next.
func (h *handler) handle(msg *message.Message) error {
	ctx, cancel := context.WithTimeout(msg.Context(), batchTimeout)
	defer cancel()
	tx, err := pollTx(ctx)
	if err != nil {
		return err
	}
	var recorded []eventstore.RecordedEvent
	if err := gob.NewDecoder(bytes.NewReader(msg.Payload)).Decode(&recorded); err != nil {
		return fmt.Errorf("projections: message %s: %w", msg.UUID, err)
	}
	batch := make([]decoded, len(recorded))
	for i := range recorded {
		if batch[i], err = decode(&recorded[i]); err != nil {
			return &eventError{event: &recorded[i], err: err}
		}
	}
	err = h.apply(ctx, tx, batch)
	if err == nil || len(batch) == 1 {
		return err
	}
	h.r.log.Warn("projection could not apply a batch; applying its events one at a time", "projection", h.p.Group(),
		"first_position", batch[0].Position, "last_position", batch[len(batch)-1].Position, "err", err)
	for i := range batch {
		if err := h.apply(ctx, tx, batch[i:i+1]); err != nil {
			return err
		}
	}
	return nil
}

// pollTx returns the subscriber's poll transaction of the message context ctx.
func pollTx(ctx context.Context) (pgx.Tx, error) {
	wtx, ok := wsql.TxFromContext(ctx)
	if !ok {
		return nil, errors.New("projections: no subscriber transaction in the message context")
	}
	ptx, ok := wtx.(*wsql.PgxTx)
	if !ok {
		return nil, fmt.Errorf("projections: subscriber transaction is %T, want watermill-sql's pgx one", wtx)
	}
	return ptx.Tx, nil
}

// apply applies a batch in a savepoint, in one round trip; on failure it rolls back to the
// savepoint (one more) and returns the error, naming the event when the batch is one event.
func (h *handler) apply(ctx context.Context, tx pgx.Tx, batch []decoded) error {
	for _, e := range batch {
		if h.r.cfg.BeforeApply != nil {
			if err := h.r.cfg.BeforeApply(h.p.Group(), *e.RecordedEvent); err != nil {
				return h.failed(batch, err)
			}
		}
	}
	args, err := h.p.args(batch)
	if err != nil {
		return err
	}
	var stale, applied int64 // what the version guard reports: redeliveries, events applied
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	// A generic plan, which the server switches to after a few executions of a prepared
	// statement, cannot see how many records a batch holds and plans the joins for a
	// hundred: fine for the small batches of live traffic, poor for catch-up batches, which
	// are planned for what they hold (well under a millisecond, once per large batch).
	if len(batch) > customPlanBatch {
		b.Queue("SET LOCAL plan_cache_mode = force_custom_plan")
	}
	b.Queue("SAVEPOINT projection_batch")
	b.Queue(h.sql, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&stale, &applied, nil) })
	b.Queue("RELEASE SAVEPOINT projection_batch")
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		err = describeGap(err)
		if _, rbErr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT projection_batch"); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rbErr))
		}
		return h.failed(batch, err)
	}
	h.st.applied.Add(uint64(applied))
	h.st.skipped.Add(uint64(stale)) // redeliveries of events already applied: the guard kept them out
	return nil
}

// failed counts a failed attempt and returns err, naming the event when the batch is one.
func (h *handler) failed(batch []decoded, err error) error {
	h.st.failures.Add(1)
	if len(batch) == 1 {
		return &eventError{event: batch[0].RecordedEvent, err: err}
	}
	return err
}

// eventError is the failure of one event, which the projection stops at.
type eventError struct {
	event *eventstore.RecordedEvent
	err   error
}

func (e *eventError) Error() string {
	return fmt.Sprintf("event %s at position %d: %v", e.event.ID, e.event.Position, e.err)
}

func (e *eventError) Unwrap() error { return e.err }

// asyncCommit lets the poll transaction commit without waiting for its WAL to reach the disk.
// The read models are derived from the log and move with their checkpoint in one transaction:
// a crash can only lose their last few milliseconds, which the projector applies again from
// the (equally rolled back) checkpoint. Appends keep synchronous commit.
const asyncCommit = "SET LOCAL synchronous_commit = off"

// customPlanBatch is the batch size above which a batch gets a plan of its own.
const customPlanBatch = 50

// gapSQLState is the SQLSTATE of the version guard's refusal (projection_refuse_gaps).
const gapSQLState = "LDG01"

// describeGap turns the version guard's refusal into an error that names the accounts whose
// events in a batch do not follow on the version applied; other errors pass unchanged.
func describeGap(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != gapSQLState {
		return err
	}
	var gaps []struct {
		Account     uuid.UUID
		First, Last int64
		Prior       int64
	}
	if jerr := json.Unmarshal([]byte(pgErr.Detail), &gaps); jerr != nil || len(gaps) == 0 {
		return fmt.Errorf("the version guard refused the batch: %s", pgErr.Detail)
	}
	g := gaps[0]
	msg := fmt.Sprintf("account %s: events %d..%d arrived but version %d is applied: an event is missing",
		g.Account, g.First, g.Last, g.Prior)
	if len(gaps) > 1 {
		msg += fmt.Sprintf(" (and %d more accounts)", len(gaps)-1)
	}
	return errors.New(msg)
}
