package projections

import (
	"context"
	"encoding/json"
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
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config tunes the runner; zero values take the defaults.
type Config struct {
	// BatchSize is the most events one poll transaction applies, in one statement per
	// projection (default 1000).
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
	// Follow makes the runner run, of its projections, the version of each that
	// projection_versions names, and follow that table as rebuilds switch it. Without it the
	// runner runs exactly the projections it was given.
	Follow bool
	// FollowInterval is how often a following runner reads projection_versions (default 1s).
	FollowInterval time.Duration
	// LeaseRetry is how often a standby tries to take a projection's lease (default 500ms):
	// the longest a projection stays without a process after its process died.
	LeaseRetry time.Duration
	// LeaseCheck is how often a held lease's session is checked (default 1s).
	LeaseCheck time.Duration
	// BeforeApply, when set, runs before each event is applied; an error fails that attempt.
	// It is for fault drills and tests: it lets them make a projector fail on chosen events.
	BeforeApply func(group string, e Envelope) error
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
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
	if c.FollowInterval <= 0 {
		c.FollowInterval = time.Second
	}
	if c.LeaseRetry <= 0 {
		c.LeaseRetry = 500 * time.Millisecond
	}
	if c.LeaseCheck <= 0 {
		c.LeaseCheck = time.Second
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
	// active is the set of groups the runner runs now.
	active atomic.Pointer[map[string]bool]
}

// projectorState is the in-memory state of one projection version.
type projectorState struct {
	running  atomic.Bool
	standby  atomic.Bool // another process holds the lease
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
	all := make(map[string]bool, len(projections))
	for _, p := range projections {
		r.states[p.Group()] = &projectorState{}
		all[p.Group()] = !cfg.Follow
	}
	r.active.Store(&all)
	return r
}

// Wake returns the signal notified whenever the log or the read models move.
func (r *Runner) Wake() *Signal { return r.wake }

// Running reports whether every projector that should run is running here or stands by while
// another process runs it, and none has failed.
func (r *Runner) Running() bool {
	n := 0
	for g, on := range *r.active.Load() {
		if !on {
			continue
		}
		n++
		if st := r.states[g]; !(st.running.Load() || st.standby.Load()) || st.failed.Load() {
			return false
		}
	}
	return n > 0
}

// Counters are one projection version's in-memory counters since start.
type Counters struct {
	Applied, Redelivered, Failures uint64
	Running, Standby, Failed       bool
}

// Counters returns the counters of the projection version group.
func (r *Runner) Counters(group string) Counters {
	st, ok := r.states[group]
	if !ok {
		return Counters{}
	}
	return Counters{Applied: st.applied.Load(), Redelivered: st.skipped.Load(), Failures: st.failures.Load(),
		Running: st.running.Load(), Standby: st.standby.Load(), Failed: st.failed.Load()}
}

// Run runs the projectors until ctx ends; a projector that fails is restarted with backoff.
func (r *Runner) Run(ctx context.Context) error {
	if r.cfg.Follow {
		return r.follow(ctx)
	}
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

// follow runs the active version of each projection, reading projection_versions every
// FollowInterval: a switch starts the new version's projector and stops the old one's (it
// drains its batch first).
func (r *Runner) follow(ctx context.Context) error {
	var wg sync.WaitGroup
	running := make(map[string]context.CancelFunc)
	defer func() {
		for _, stop := range running {
			stop()
		}
		wg.Wait()
	}()
	tick := time.NewTicker(r.cfg.FollowInterval)
	defer tick.Stop()
	for {
		active, err := r.activeGroups(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("projection versions not read; keeping the projectors as they are", "err", err)
		}
		if err == nil {
			for _, p := range r.projections {
				g := p.Group()
				switch {
				case active[g] && running[g] == nil:
					pctx, stop := context.WithCancel(ctx)
					running[g] = stop
					wg.Go(func() { r.supervise(pctx, p) })
				case !active[g] && running[g] != nil:
					r.log.Info("projection version retired here", "projection", g)
					running[g]()
					delete(running, g)
				}
			}
			r.active.Store(&active)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// activeGroups returns, for each of the runner's projections, whether its version is the
// active one.
func (r *Runner) activeGroups(ctx context.Context) (map[string]bool, error) {
	versions, err := ActiveVersions(ctx, r.pool)
	if err != nil {
		return nil, err
	}
	active := make(map[string]bool, len(r.projections))
	for _, p := range r.projections {
		active[p.Group()] = p.Version == versions.Of(p.Name)
	}
	return active, nil
}

func (r *Runner) supervise(ctx context.Context, p Projection) {
	st := r.states[p.Group()]
	backoff := r.cfg.RestartBackoff
	for ctx.Err() == nil {
		l, err := r.acquireLease(ctx, p.Group(), st)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("projection lease not taken; trying again", "projection", p.Group(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.cfg.LeaseRetry):
			}
			continue
		}
		leaseCtx, lost := context.WithCancelCause(ctx)
		watched := make(chan struct{})
		go func() { defer close(watched); l.watch(leaseCtx, lost, r.cfg.LeaseCheck) }()
		err = r.runOnce(leaseCtx, p, st)
		cause := context.Cause(leaseCtx)
		lost(nil)
		<-watched
		l.release()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(cause, errLeaseLost) {
			r.log.Warn("projection lease lost; this process stands by", "projection", p.Group())
			continue
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

// leaseClass keeps the projection leases apart from other advisory locks ("LEDP").
const leaseClass = 1279607891

var errLeaseLost = errors.New("projection lease lost")

// lease is a projection version's advisory lock, held by a session of its own: one process
// at a time runs a projection, and the lock goes with the session when the process dies, so a
// standby takes over within LeaseRetry.
type lease struct {
	conn  *pgxpool.Conn
	group string
}

// acquireLease waits until this process holds the group's lease; meanwhile the projection
// stands by.
func (r *Runner) acquireLease(ctx context.Context, group string, st *projectorState) (*lease, error) {
	for {
		conn, err := r.pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		var held bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, leaseClass, group).Scan(&held); err != nil {
			conn.Release()
			return nil, err
		}
		if held {
			st.standby.Store(false)
			return &lease{conn: conn, group: group}, nil
		}
		conn.Release()
		if !st.standby.Swap(true) {
			r.log.Info("projection runs in another process; standing by", "projection", group)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(r.cfg.LeaseRetry):
		}
	}
}

// watch checks the lease's session every interval and reports it lost when the session is.
func (l *lease) watch(ctx context.Context, lost context.CancelCauseFunc, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*interval)
		_, err := l.conn.Exec(pctx, "SELECT 1")
		cancel()
		if err != nil && ctx.Err() == nil {
			lost(errLeaseLost)
			return
		}
	}
}

func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, leaseClass, l.group); err != nil {
		// A session that cannot unlock is broken; closing it releases the lock.
		_ = l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
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
	h := newHandler(r, schema, p, st, cancel)
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

func pollTx(ctx context.Context) (pgx.Tx, error) {
	wtx, ok := wsql.TxFromContext(ctx)
	if !ok {
		return nil, errors.New("no subscriber transaction in the message context")
	}
	ptx, ok := wtx.(*wsql.PgxTx)
	if !ok {
		return nil, fmt.Errorf("subscriber transaction is %T, want pgx", wtx)
	}
	return ptx.Tx, nil
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
func (h *handler) applyBatch(ctx context.Context, tx pgx.Tx, batch []logEvent, release bool) error {
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

func (r *Runner) setState(ctx context.Context, group, state string, f *failure) error {
	return recordState(ctx, r.pool, group, state, f)
}

// execer runs a statement: a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// recordState records a projection version's state in projection_status; a failure also
// records where and why, and counts it.
func recordState(ctx context.Context, q execer, group, state string, f *failure) error {
	var pos, id, msg any
	if f != nil {
		id, msg = f.eventID, f.err.Error()
		if p, err := strconv.ParseInt(f.position, 10, 64); err == nil {
			pos = p
		}
	}
	_, err := q.Exec(ctx, `
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
