package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// handler applies one projection's batches.
type handler struct {
	r      *Runner
	schema *eventsSchema
	p      Projection
	sql    string // the projection's batch statement
	st     *projectorState
	giveUp context.CancelCauseFunc
	// attempts counts failed attempts, by message (a batch applied whole) and by event id (an
	// event applied alone); the subscriber delivers one message at a time.
	attempts map[string]int
}

func newHandler(r *Runner, schema *eventsSchema, p Projection, st *projectorState, giveUp context.CancelCauseFunc) *handler {
	return &handler{r: r, schema: schema, p: p, sql: p.batchSQL(), st: st, giveUp: giveUp, attempts: make(map[string]int)}
}

// handle applies one batch message. It first applies the batch whole, in one statement. If
// that fails, it applies the events one at a time, so that a transient error costs one retry
// and an event that cannot be applied is found and named: the events before it stay applied,
// the version guard skips them when the batch is delivered again, and the failing event is
// retried MaxAttempts times before the projection is marked failed at that event.
func (h *handler) handle(msg *message.Message) error {
	ctx := msg.Context()
	if err := ctx.Err(); err != nil {
		// The subscriber has stopped waiting for this message (deadline or stop) and may be
		// committing its transaction right now: touching the transaction would race it.
		return err
	}
	tx, err := pollTx(ctx)
	if err != nil {
		return err
	}
	batch, ok := h.schema.batch(msg.UUID)
	if !ok {
		return fmt.Errorf("projections: the events of message %s are gone", msg.UUID)
	}
	if h.attempts[msg.UUID] == 0 {
		err := h.applyBatch(ctx, tx, batch, false)
		if err == nil {
			h.succeeded(ctx, batch)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		h.attempts[msg.UUID]++
		h.st.failures.Add(1)
		h.r.log.Warn("projection could not apply a batch; applying its events one at a time", "projection", h.p.Group(),
			"first_position", msg.Metadata.Get(mdFirstPosition), "last_position", msg.Metadata.Get(mdLastPosition), "err", err)
	}
	for i := range batch {
		if err := h.applyBatch(ctx, tx, batch[i:i+1], true); err != nil {
			return h.failed(ctx, batch[i].ID.String(), strconv.FormatInt(batch[i].Position, 10), err)
		}
	}
	h.succeeded(ctx, batch)
	return nil
}

func (h *handler) succeeded(ctx context.Context, batch []logEvent) {
	if len(h.attempts) > 0 {
		clear(h.attempts)
	}
	if h.st.failed.Load() {
		h.st.failed.Store(false)
		if err := h.r.setState(context.WithoutCancel(ctx), h.p.Group(), "live", nil); err != nil {
			h.r.log.Error("projection status not recorded", "projection", h.p.Group(), "err", err)
		}
		h.r.log.Info("projection recovered", "projection", h.p.Group(), "position", batch[0].Position)
	}
}

// failed counts a failed attempt at the event (or undecodable message) id and returns err, so
// that the subscriber delivers the batch again; after MaxAttempts it marks the projection
// failed at that event and stops it instead.
func (h *handler) failed(ctx context.Context, id, position string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	h.attempts[id]++
	h.st.failures.Add(1)
	n := h.attempts[id]
	h.r.log.Warn("projection could not apply event", "projection", h.p.Group(), "event_id", id,
		"position", position, "attempt", n, "err", err)
	if n < h.r.cfg.MaxAttempts {
		return err
	}
	h.st.failed.Store(true)
	if serr := h.r.setState(context.WithoutCancel(ctx), h.p.Group(), "failed", &failure{position: position, eventID: id, err: err}); serr != nil {
		h.r.log.Error("projection status not recorded", "projection", h.p.Group(), "err", serr)
	}
	h.r.log.Error("projection failed; it stops at this event and retries later, never skipping it",
		"projection", h.p.Group(), "event_id", id, "position", position, "err", err)
	clear(h.attempts)
	h.giveUp(fmt.Errorf("%w at event %s: %v", errGaveUp, id, err))
	// Park until the subscriber's ack deadline: it then stops redelivering the batch and
	// commits what was applied before this event; the next poll reads nothing.
	<-ctx.Done()
	return err
}

// applyBatch applies events through the poll transaction, in one statement inside a
// savepoint, so a failed attempt leaves nothing behind. release ends the savepoint afterwards
// (one more round trip); otherwise the commit ends it.
func (h *handler) applyBatch(ctx context.Context, tx batchTx, batch []logEvent, release bool) error {
	envs := make([]Envelope, len(batch))
	for i, le := range batch {
		env, err := le.envelope()
		if err != nil {
			return fmt.Errorf("event %s at %d: %w", le.ID, le.Position, err)
		}
		if h.r.cfg.BeforeApply != nil {
			if err := h.r.cfg.BeforeApply(h.p.Group(), env); err != nil {
				return err
			}
		}
		envs[i] = env
	}
	args, err := h.p.args(envs)
	if err != nil {
		return err
	}
	var stale, applied int64
	var gaps []byte
	b := &pgx.Batch{}
	// The read models are derived from the log and move with their checkpoint in one
	// transaction, so the poll transaction need not wait for its WAL to reach the disk: a
	// crash can only lose its last few milliseconds, which the projector applies again from
	// the (equally rolled back) checkpoint. Appends keep synchronous commit.
	b.Queue("SET LOCAL synchronous_commit = off")
	// A generic plan, which the server switches to after a few executions of a prepared
	// statement, cannot see how many records a batch holds and plans the joins for a
	// hundred: fine for the small batches of live traffic, poor for catch-up batches, which
	// are planned for what they hold (well under a millisecond, once per large batch).
	if len(batch) > customPlanBatch {
		b.Queue("SET LOCAL plan_cache_mode = force_custom_plan")
	}
	b.Queue("SAVEPOINT projection_batch")
	b.Queue(h.sql, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&stale, &applied, &gaps) })
	err = tx.SendBatch(ctx, b).Close()
	if err == nil && gaps != nil {
		err = gapError(gaps)
	}
	if err == nil && release {
		_, err = tx.Exec(ctx, "RELEASE SAVEPOINT projection_batch")
	}
	if err != nil {
		if _, rbErr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT projection_batch"); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rbErr))
		}
		return err
	}
	h.st.applied.Add(uint64(applied))
	h.st.skipped.Add(uint64(stale)) // redeliveries of events already applied: the guard kept them out
	return nil
}

// customPlanBatch is the batch size above which a batch gets a plan of its own.
const customPlanBatch = 50

// gapError describes the accounts whose events in a batch do not follow on the version applied.
func gapError(raw []byte) error {
	var gaps []struct {
		Account     uuid.UUID
		First, Last int64
		Prior       int64
	}
	if err := json.Unmarshal(raw, &gaps); err != nil || len(gaps) == 0 {
		return fmt.Errorf("the version guard refused the batch: %s", raw)
	}
	g := gaps[0]
	msg := fmt.Sprintf("account %s: events %d..%d arrived but version %d is applied: an event is missing",
		g.Account, g.First, g.Last, g.Prior)
	if len(gaps) > 1 {
		msg += fmt.Sprintf(" (and %d more accounts)", len(gaps)-1)
	}
	return errors.New(msg)
}

type failure struct {
	position string // from message metadata; may be empty for a message that did not decode
	eventID  string
	err      error
}
