package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config tunes the runner; zero values take the defaults.
type Config struct {
	// BatchSize is how many events one poll transaction applies (default 500).
	BatchSize int
	// PollInterval is the fallback poll when no wake-up arrives (default 1s).
	PollInterval time.Duration
	// MaxAttempts is how often one event is tried before the projection is marked failed
	// (default 5).
	MaxAttempts int
	// RetryInterval is the pause between attempts at a failing event (default 50ms).
	RetryInterval time.Duration
	// RestartBackoff is the first pause before a failed projection tries again; it doubles up
	// to a minute (default 1s).
	RestartBackoff time.Duration
	// BeforeApply, when set, runs before each event is applied; an error fails that attempt.
	// It is for fault drills and tests: it lets them make a projector fail on chosen events.
	BeforeApply func(group string, e Envelope) error
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 50 * time.Millisecond
	}
	if c.RestartBackoff <= 0 {
		c.RestartBackoff = time.Second
	}
}

// Runner runs projectors until its context ends.
type Runner struct {
	pool        *pgxpool.Pool
	projections []Projection
	cfg         Config
	log         *slog.Logger
	// wake is signalled after every committed append and every projector batch; projectors
	// and read-your-writes readers wait on it.
	wake *Signal

	states map[string]*projectorState
}

// projectorState is the in-memory state of one projection version.
type projectorState struct {
	running  atomic.Bool
	failed   atomic.Bool
	applied  atomic.Uint64
	skipped  atomic.Uint64 // redeliveries the version guard recognised as already applied
	failures atomic.Uint64
}

// NewRunner returns a runner for the given projections. wake must be the signal the event
// store notifies after each committed append.
func NewRunner(pool *pgxpool.Pool, wake *Signal, log *slog.Logger, cfg Config, projections ...Projection) *Runner {
	cfg.defaults()
	r := &Runner{pool: pool, projections: projections, cfg: cfg, log: log, wake: wake,
		states: make(map[string]*projectorState)}
	for _, p := range projections {
		r.states[p.Group()] = &projectorState{}
	}
	return r
}

// Wake returns the signal notified whenever the log or the read models move.
func (r *Runner) Wake() *Signal { return r.wake }

// Running reports whether every projector is running and none has failed.
func (r *Runner) Running() bool {
	for _, st := range r.states {
		if !st.running.Load() || st.failed.Load() {
			return false
		}
	}
	return len(r.states) > 0
}

// Counters are one projection version's in-memory counters since start.
type Counters struct {
	Applied, Redelivered, Failures uint64
	Running, Failed                bool
}

// Counters returns the counters of the projection version group.
func (r *Runner) Counters(group string) Counters {
	st, ok := r.states[group]
	if !ok {
		return Counters{}
	}
	return Counters{Applied: st.applied.Load(), Redelivered: st.skipped.Load(), Failures: st.failures.Load(),
		Running: st.running.Load(), Failed: st.failed.Load()}
}

// Run runs every projector until ctx ends; a projector that fails is restarted with backoff.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, p := range r.projections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.supervise(ctx, p)
		}()
	}
	wg.Wait()
	return nil
}

func (r *Runner) supervise(ctx context.Context, p Projection) {
	st := r.states[p.Group()]
	backoff := r.cfg.RestartBackoff
	for ctx.Err() == nil {
		err := r.runOnce(ctx, p, st)
		if ctx.Err() != nil {
			return
		}
		r.log.Error("projector stopped; restarting", "projection", p.Group(), "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// ackDeadline bounds one event's handling including its retries; it is also how long a
// projection that gave up on an event holds its poll transaction before committing the rest.
func (r *Runner) ackDeadline() time.Duration {
	return time.Duration(r.cfg.MaxAttempts)*r.cfg.RetryInterval + 5*time.Second
}

// errGaveUp stops a projector after an event failed MaxAttempts times.
var errGaveUp = errors.New("projection failed")

func (r *Runner) runOnce(ctx context.Context, p Projection, st *projectorState) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wmLog := watermill.NewSlogLoggerWithLevelMapping(r.log.With("projection", p.Group()), map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug, // watermill's per-handler chatter
	})
	schema := &eventsSchema{batchSize: r.cfg.BatchSize, wake: r.wake}
	backoff := &wakeBackoff{
		schema: schema, pollInterval: r.cfg.PollInterval, retryInterval: r.cfg.PollInterval,
		stop: runCtx.Done(), onBatch: r.wake.Notify, idle: make(chan struct{}),
	}
	ackDeadline := r.ackDeadline()
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(r.pool), wsql.SubscriberConfig{
		ConsumerGroup:  p.Group(),
		SchemaAdapter:  schema,
		OffsetsAdapter: checkpoints{},
		PollInterval:   r.cfg.PollInterval,
		ResendInterval: r.cfg.RetryInterval,
		RetryInterval:  r.cfg.PollInterval,
		AckDeadline:    &ackDeadline,
		BackoffManager: backoff,
	}, wmLog)
	if err != nil {
		return fmt.Errorf("projections: subscriber %s: %w", p.Group(), err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wmLog)
	if err != nil {
		return fmt.Errorf("projections: router %s: %w", p.Group(), err)
	}
	h := &handler{r: r, p: p, st: st, giveUp: cancel, attempts: make(map[string]int)}
	router.AddConsumerHandler(p.Group(), topic, sub, h.handle)

	if err := r.setState(ctx, p.Group(), "live", nil); err != nil {
		return err
	}
	st.running.Store(true)
	defer st.running.Store(false)
	r.log.Info("projector started", "projection", p.Group())
	// The router runs on a context of its own: closing the router cancels the subscription's
	// context, and with it the commit of the poll transaction in flight. So a stop first drains:
	// polls read nothing more, the batch in flight commits, then the router closes.
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.WithoutCancel(runCtx)) }()
	select {
	case err = <-runErr:
	case <-runCtx.Done():
		schema.stopping.Store(true)
		select {
		case <-backoff.idle:
		case <-time.After(ackDeadline + 5*time.Second):
			r.log.Warn("projector did not drain in time; its last batch rolls back", "projection", p.Group())
		}
		if cerr := router.Close(); cerr != nil {
			r.log.Warn("projector did not close cleanly", "projection", p.Group(), "err", cerr)
		}
		err = <-runErr
	}
	if cause := context.Cause(runCtx); errors.Is(cause, errGaveUp) {
		return cause
	}
	return err
}

// handler applies one projection's events.
type handler struct {
	r        *Runner
	p        Projection
	st       *projectorState
	giveUp   context.CancelCauseFunc
	attempts map[string]int // by event id; the subscriber delivers one message at a time
}

func (h *handler) handle(msg *message.Message) error {
	ctx := msg.Context()
	if err := ctx.Err(); err != nil {
		// The subscriber has stopped waiting for this message (deadline or stop) and may be
		// committing its transaction right now: touching the transaction would race it.
		return err
	}
	env, err := decodeEnvelope(msg)
	if err == nil {
		err = h.apply(ctx, env)
	}
	if err == nil {
		if len(h.attempts) > 0 {
			clear(h.attempts)
		}
		if h.st.failed.Load() {
			h.st.failed.Store(false)
			if err := h.r.setState(context.WithoutCancel(ctx), h.p.Group(), "live", nil); err != nil {
				h.r.log.Error("projection status not recorded", "projection", h.p.Group(), "err", err)
			}
			h.r.log.Info("projection recovered", "projection", h.p.Group(), "position", env.Position)
		}
		return nil
	}
	h.attempts[msg.UUID]++
	h.st.failures.Add(1)
	n := h.attempts[msg.UUID]
	h.r.log.Warn("projection could not apply event", "projection", h.p.Group(), "event_id", msg.UUID,
		"position", msg.Metadata.Get(mdPosition), "attempt", n, "err", err)
	if n >= h.r.cfg.MaxAttempts {
		h.st.failed.Store(true)
		id := msg.UUID
		if serr := h.r.setState(context.WithoutCancel(ctx), h.p.Group(), "failed", &failure{position: msg.Metadata.Get(mdPosition), eventID: id, err: err}); serr != nil {
			h.r.log.Error("projection status not recorded", "projection", h.p.Group(), "err", serr)
		}
		h.r.log.Error("projection failed; it stops at this event and retries later, never skipping it",
			"projection", h.p.Group(), "event_id", id, "err", err)
		clear(h.attempts)
		h.giveUp(fmt.Errorf("%w at event %s: %v", errGaveUp, id, err))
		// Park until the subscriber's ack deadline: it then stops redelivering this event
		// and commits the events of the batch before it; the next poll reads nothing.
		<-ctx.Done()
	}
	return err
}

// apply writes one event through the subscriber's transaction, inside a savepoint, so a failed
// attempt leaves nothing behind and the other events of the batch stay applied.
func (h *handler) apply(ctx context.Context, env Envelope) error {
	wtx, ok := wsql.TxFromContext(ctx)
	if !ok {
		return errors.New("no subscriber transaction in the message context")
	}
	ptx, ok := wtx.(*wsql.PgxTx)
	if !ok {
		return fmt.Errorf("subscriber transaction is %T, want pgx", wtx)
	}
	tx := ptx.Tx
	if h.r.cfg.BeforeApply != nil {
		if err := h.r.cfg.BeforeApply(h.p.Group(), env); err != nil {
			return err
		}
	}
	sqlText, args := h.p.statement(env)
	var applied bool
	var prior int64
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT projection_event")
	b.Queue(sqlText, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&applied, &prior) })
	b.Queue("RELEASE SAVEPOINT projection_event")
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		if _, rbErr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT projection_event"); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rbErr))
		}
		return err
	}
	switch {
	case applied:
		h.st.applied.Add(1)
	case prior >= env.Version:
		h.st.skipped.Add(1) // a redelivery of an event already applied: the guard kept it out
	default:
		return fmt.Errorf("account %s: event version %d arrived but version %d is applied: an event is missing",
			env.AccountID, env.Version, prior)
	}
	return nil
}

type failure struct {
	position string // from message metadata; may be empty for a message that did not decode
	eventID  string
	err      error
}

func (r *Runner) setState(ctx context.Context, group, state string, f *failure) error {
	var pos, id, msg any
	if f != nil {
		id, msg = f.eventID, f.err.Error()
		if p, err := strconv.ParseInt(f.position, 10, 64); err == nil {
			pos = p
		}
	}
	_, err := r.pool.Exec(ctx, `
		INSERT INTO projection_status AS s (consumer_group, state, failures, failed_position, failed_event_id, last_error, updated_at)
		VALUES ($1, $2, CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END, $3::bigint, $4::uuid, $5, now())
		ON CONFLICT (consumer_group) DO UPDATE SET
			state = excluded.state,
			failures = CASE WHEN excluded.state = 'failed' THEN s.failures + 1 ELSE s.failures END,
			failed_position = CASE WHEN excluded.state = 'failed' THEN excluded.failed_position ELSE s.failed_position END,
			failed_event_id = CASE WHEN excluded.state = 'failed' THEN excluded.failed_event_id ELSE s.failed_event_id END,
			last_error = CASE WHEN excluded.state = 'failed' THEN excluded.last_error ELSE s.last_error END,
			updated_at = now()`, group, state, pos, id, msg)
	if err != nil {
		return fmt.Errorf("projections: record %s as %s: %w", group, state, err)
	}
	return nil
}
