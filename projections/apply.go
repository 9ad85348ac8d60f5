package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	// event applied alone). The subscriber delivers one message at a time, but a handler
	// that outlived its message's deadline may still be counting when the next one starts.
	mu       sync.Mutex
	attempts map[string]int
}

func newHandler(r *Runner, schema *eventsSchema, p Projection, st *projectorState, giveUp context.CancelCauseFunc) *handler {
	return &handler{r: r, schema: schema, p: p, sql: p.batchSQL(), st: st, giveUp: giveUp, attempts: make(map[string]int)}
}

// handle applies one batch message: the committed events after the checkpoint not applied yet,
// settled (below the fence) or not, so that a transaction that is slow to commit holds back no
// read model; and it moves the checkpoint only as far as the settled events go, so that an
// event committing late, before the others in the log, is read by a later poll and never
// skipped (see eventsSchema). (Per account, nothing can commit before an event already
// committed: appends to a stream hold its lock until they commit, so the version guard never
// sees a hole that a late commit would fill.)
//
// It first applies the events whole, in one statement, and commits them with the checkpoint
// in the same round trip. If that statement fails, it applies the events one at a time, so
// that a transient error costs one retry and an event that cannot be applied is found and
// named: the events before it stay applied, the version guard skips them when the batch is
// delivered again, and the failing event is retried MaxAttempts times before the projection
// is marked failed at that event.
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
	pb, ok := h.schema.batch(msg.UUID)
	if !ok {
		return fmt.Errorf("projections: the events of message %s are gone", msg.UUID)
	}
	batch := pb.events
	if h.attempted(msg.UUID) == 0 {
		wrote, err := h.commitBatch(ctx, tx, batch, pb.to)
		if err == nil {
			h.schema.ahead.committed(batch, pb.to, wrote)
			h.succeeded(ctx, pb.first())
			return nil
		}
		h.schema.ahead.forget()
		if ctx.Err() != nil && !errors.Is(err, errPollTxOver) {
			return err
		}
		h.attempt(msg.UUID)
		h.st.failures.Add(1)
		h.schema.retrying.Store(true)
		h.r.log.Warn("projection could not apply a batch; applying its events one at a time", "projection", h.p.Group(),
			"first_position", msg.Metadata.Get(mdFirstPosition), "last_position", msg.Metadata.Get(mdLastPosition), "err", err)
		if errors.Is(err, errPollTxOver) {
			// The transaction is over: rolled back, or its COMMIT was sent and it is not known
			// whether it committed. Nothing more can be applied in it. Acking ends the poll at
			// once (the subscriber commits nothing more and reports the error); the next poll
			// reads the checkpoint again, which moved only if the batch committed with it,
			// and applies the rest one event at a time.
			return nil
		}
	}
	// The subscriber commits what this loop applies with its ack, the checkpoint (see
	// checkpoints.AckMessageQuery), once the handler returns.
	h.schema.ahead.forget()
	for i := range batch {
		if err := h.applyBatch(ctx, tx, batch[i:i+1]); err != nil {
			return h.failed(ctx, batch[i].ID.String(), strconv.FormatInt(batch[i].Position, 10), err)
		}
	}
	h.succeeded(ctx, pb.first())
	return nil
}

func (h *handler) succeeded(ctx context.Context, position int64) {
	h.forgetAttempts()
	h.schema.retrying.Store(false)
	if h.st.failed.Load() {
		h.st.failed.Store(false)
		if err := h.r.setState(context.WithoutCancel(ctx), h.p.Group(), "live", nil); err != nil {
			h.r.log.Error("projection status not recorded", "projection", h.p.Group(), "err", err)
		}
		h.r.log.Info("projection recovered", "projection", h.p.Group(), "position", position)
	}
}

// failed counts a failed attempt at the event (or undecodable message) id and returns err, so
// that the subscriber delivers the batch again; after MaxAttempts it marks the projection
// failed at that event and stops it instead.
func (h *handler) failed(ctx context.Context, id, position string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	n := h.attempt(id)
	h.st.failures.Add(1)
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
	h.forgetAttempts()
	h.giveUp(fmt.Errorf("%w at event %s: %v", errGaveUp, id, err))
	// Park until the subscriber's ack deadline: it then stops redelivering the batch and
	// commits what was applied before this event; the next poll reads nothing.
	<-ctx.Done()
	return err
}

// attempt counts a failed attempt at key and returns how many there were.
func (h *handler) attempt(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts[key]++
	return h.attempts[key]
}

// attempted returns how many attempts at key failed.
func (h *handler) attempted(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts[key]
}

func (h *handler) forgetAttempts() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.attempts)
}

// commitBatch applies a batch (which may be empty), writes the checkpoint "to" and commits, in
// one round trip: the transaction holds its id only while the server works. It returns the
// commit as the checkpoint's row names its writer (32-bit transaction id; no savepoint, whose
// subtransaction would write the row under an id of its own). If a statement fails, the
// transaction is rolled back and over (the error wraps errPollTxOver); an error before
// anything was sent leaves it as it was.
func (h *handler) commitBatch(ctx context.Context, tx pollBatchTx, batch []logEvent, to checkpoint) (writer, error) {
	b := &pgx.Batch{}
	var res *guardResult
	if len(batch) > 0 {
		var err error
		if res, err = h.queueBatch(b, batch, false); err != nil {
			return writer{}, err
		}
	} else {
		b.Queue(asyncCommit)
	}
	q := checkpointQuery(h.p.Group(), to)
	b.Queue(q.Query, q.Args...)
	var xid int64
	var started time.Time
	b.Queue(`SELECT pg_current_xact_id()::text::bigint, pg_postmaster_start_time()`).QueryRow(func(row pgx.Row) error {
		return row.Scan(&xid, &started)
	})
	if err := tx.CommitWith(ctx, b); err != nil {
		err = describeGap(err)
		if errors.Is(err, errPollTxOver) {
			return writer{}, err
		}
		return writer{}, tx.Abort(ctx, err)
	}
	if res != nil {
		res.count(h.st)
	}
	return writer{xid: uint32(xid), started: started}, nil
}

// applyBatch applies a batch and releases its savepoint (one more round trip), leaving the
// transaction open for the next; the subscriber moves the checkpoint and commits.
func (h *handler) applyBatch(ctx context.Context, tx pollBatchTx, batch []logEvent) error {
	b := &pgx.Batch{}
	res, err := h.queueBatch(b, batch, true)
	if err != nil {
		return err
	}
	b.Queue("RELEASE SAVEPOINT projection_batch")
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		err = describeGap(err)
		if _, rbErr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT projection_batch"); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rbErr))
		}
		return err
	}
	res.count(h.st)
	return nil
}

// asyncCommit lets the poll transaction commit without waiting for its WAL to reach the disk.
// The read models are derived from the log and move with their checkpoint in one transaction:
// a crash can only lose their last few milliseconds, which the projector applies again from
// the (equally rolled back) checkpoint. Appends keep synchronous commit.
const asyncCommit = "SET LOCAL synchronous_commit = off"

// guardResult is what the version guard reports of a batch.
type guardResult struct{ stale, applied int64 }

func (r *guardResult) count(st *projectorState) {
	st.applied.Add(uint64(r.applied))
	st.skipped.Add(uint64(r.stale)) // redeliveries of events already applied: the guard kept them out
}

// queueBatch queues on b the statements that apply batch in one statement; with savepoint,
// inside a savepoint, so that a failed attempt leaves nothing behind and the transaction open.
func (h *handler) queueBatch(b *pgx.Batch, batch []logEvent, savepoint bool) (*guardResult, error) {
	envs := make([]Envelope, len(batch))
	for i, le := range batch {
		env, err := le.envelope()
		if err != nil {
			return nil, fmt.Errorf("event %s at %d: %w", le.ID, le.Position, err)
		}
		if h.r.cfg.BeforeApply != nil {
			if err := h.r.cfg.BeforeApply(h.p.Group(), env); err != nil {
				return nil, err
			}
		}
		envs[i] = env
	}
	args, err := h.p.args(envs)
	if err != nil {
		return nil, err
	}
	res := &guardResult{}
	b.Queue(asyncCommit)
	// A generic plan, which the server switches to after a few executions of a prepared
	// statement, cannot see how many records a batch holds and plans the joins for a
	// hundred: fine for the small batches of live traffic, poor for catch-up batches, which
	// are planned for what they hold (well under a millisecond, once per large batch).
	if len(batch) > customPlanBatch {
		b.Queue("SET LOCAL plan_cache_mode = force_custom_plan")
	}
	if savepoint {
		b.Queue("SAVEPOINT projection_batch")
	}
	b.Queue(h.sql, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&res.stale, &res.applied, nil) })
	return res, nil
}

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

type failure struct {
	position string // from message metadata; may be empty for a message that did not decode
	eventID  string
	err      error
}
