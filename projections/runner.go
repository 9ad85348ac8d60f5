package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/lease"
	"github.com/ledger/ledger/internal/notify"
)

// Config tunes the runner; zero values take the defaults.
type Config struct {
	// BatchSize is the most events one poll transaction applies, in one statement per
	// projection (default 5,000). Live traffic polls a few events at a time; the bound
	// matters when a projector catches up, where each poll transaction costs five round
	// trips whatever it holds (ADR 8).
	BatchSize int
	// PollInterval is the fallback poll when no wake-up arrives (default 1s).
	PollInterval time.Duration
	// PollSpacing is the least time between the starts of two polls of one projector
	// (default 10ms; negative: none). Every poll transaction costs round trips whatever it
	// carries, so under load the events that commit meanwhile gather into fewer, larger
	// batches; it adds at most this much to the projection lag.
	PollSpacing time.Duration
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
	BeforeApply func(group string, e eventstore.RecordedEvent) error
}

// DefaultPollSpacing is Config.PollSpacing's default.
const DefaultPollSpacing = 10 * time.Millisecond

func (c *Config) defaults() {
	orDefault(&c.BatchSize, 5000)
	orDefault(&c.PollInterval, time.Second)
	orDefault(&c.MaxAttempts, 5)
	orDefault(&c.RetryInterval, 50*time.Millisecond)
	orDefault(&c.RestartBackoff, time.Second)
	orDefault(&c.FollowInterval, time.Second)
	orDefault(&c.LeaseRetry, 500*time.Millisecond)
	orDefault(&c.LeaseCheck, time.Second)
	if c.PollSpacing == 0 {
		c.PollSpacing = DefaultPollSpacing
	}
}

// orDefault sets *v to d unless it is positive.
func orDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
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
	wake *notify.Signal

	states map[string]*projectorState
	// active is the set of groups the runner runs now.
	active atomic.Pointer[map[string]bool]
	// workers are the log readers that run like projectors (see AddWorker).
	workers []worker
}

// worker is a reader of the log other than a projector, run under a lease of its own.
type worker struct {
	group string
	run   func(ctx context.Context) error
}

// AddWorker makes the runner run fn as it runs a projector: in one process at a time across
// all processes sharing the database (the lease named group), restarted with backoff when it
// returns an error, and counted in Running and Counters(group). fn runs until its context
// ends, which happens when the runner stops or the lease is lost. Call it before Run.
func (r *Runner) AddWorker(group string, fn func(ctx context.Context) error) {
	r.states[group] = &projectorState{}
	r.workers = append(r.workers, worker{group: group, run: fn})
	all := maps.Clone(*r.active.Load())
	all[group] = true
	r.active.Store(&all)
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
func NewRunner(pool *pgxpool.Pool, wake *notify.Signal, log *slog.Logger, cfg Config, projections ...Projection) *Runner {
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
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, w := range r.workers {
		wg.Go(func() { r.supervise(ctx, w.group, w.run) })
	}
	if r.cfg.Follow {
		return r.follow(ctx)
	}
	for _, p := range r.projections {
		wg.Go(func() { r.supervise(ctx, p.Group(), r.projector(p)) })
	}
	return nil
}

// projector returns the run function of p's projector.
func (r *Runner) projector(p Projection) func(ctx context.Context) error {
	return func(ctx context.Context) error { return r.runOnce(ctx, p, r.states[p.Group()]) }
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
		versions, err := ActiveVersions(ctx, r.pool)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("projection versions not read; keeping the projectors as they are", "err", err)
		}
		if err == nil {
			active := make(map[string]bool, len(r.projections)+len(r.workers))
			for _, p := range r.projections {
				g := p.Group()
				active[g] = p.Version == versions.Of(p.Name)
				switch {
				case active[g] && running[g] == nil:
					pctx, stop := context.WithCancel(ctx)
					running[g] = stop
					wg.Go(func() { r.supervise(pctx, g, r.projector(p)) })
				case !active[g] && running[g] != nil:
					r.log.Info("projection version retired here", "projection", g)
					running[g]()
					delete(running, g)
				}
			}
			for _, w := range r.workers {
				active[w.group] = true
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

// supervise runs run under group's lease until ctx ends, restarting it with backoff.
func (r *Runner) supervise(ctx context.Context, group string, run func(ctx context.Context) error) {
	st := r.states[group]
	backoff := r.cfg.RestartBackoff
	standby := func(waiting bool) {
		if !st.standby.Swap(waiting) && waiting {
			r.log.Info("projection runs in another process; standing by", "projection", group)
		}
	}
	for ctx.Err() == nil {
		ran := false
		err := lease.Run(ctx, r.pool, group, lease.Options{Retry: r.cfg.LeaseRetry, Check: r.cfg.LeaseCheck, Standby: standby},
			func(ctx context.Context) error {
				ran = true
				st.running.Store(true)
				defer st.running.Store(false)
				return run(ctx)
			})
		wait := backoff
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, lease.ErrLost):
			r.log.Warn("projection lease lost; this process stands by", "projection", group)
			continue
		case ran:
			r.log.Error("projector stopped; restarting", "projection", group, "err", err, "after", backoff)
			backoff = min(2*backoff, time.Minute)
		default:
			r.log.Warn("projection lease not taken; trying again", "projection", group, "err", err)
			wait = r.cfg.LeaseRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// batchTimeout bounds one attempt at a batch.
const batchTimeout = 30 * time.Second

// ackDeadline bounds the handling of one batch, its retries included. The handler's own
// timeouts end every attempt well before it, so the subscriber never gives up on a handler
// that is still running (it would end the transaction under it).
func (r *Runner) ackDeadline() time.Duration {
	return time.Duration(r.cfg.MaxAttempts)*(batchTimeout+r.cfg.RetryInterval<<r.cfg.MaxAttempts) + time.Minute
}

// errGaveUp stops a projector after an event failed MaxAttempts times.
var errGaveUp = errors.New("projection failed")

// runOnce runs p's projector until ctx ends or it gives up on an event: a watermill Router
// whose one handler is fed by a watermill-sql subscriber over the events table.
func (r *Runner) runOnce(ctx context.Context, p Projection, st *projectorState) error {
	runCtx, giveUp := context.WithCancelCause(ctx)
	defer giveUp(nil)
	wmLog := watermill.NewSlogLoggerWithLevelMapping(r.log.With("projection", p.Group()), map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug, // watermill's per-handler chatter
	})
	ackDeadline := r.ackDeadline()
	// The backoff manager waits on the wake-up the poll took (see pollWake).
	wake := &pollWake{signal: r.wake, pollInterval: r.cfg.PollInterval,
		spacing: r.cfg.PollSpacing, stop: runCtx.Done(), idle: make(chan struct{})}
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(r.pool), wsql.SubscriberConfig{
		ConsumerGroup:  p.Group(),
		SchemaAdapter:  &eventsSchema{batchSize: r.cfg.BatchSize, wake: wake},
		OffsetsAdapter: checkpoints{},
		AckDeadline:    &ackDeadline,
		// A nacked batch is handled again in the same poll transaction after this pause.
		ResendInterval: r.cfg.RetryInterval,
		// The backoff manager decides how long to wait between polls (the subscriber's poll
		// and retry intervals are only its default one's).
		BackoffManager: wake,
	}, wmLog)
	if err != nil {
		return fmt.Errorf("projections: subscriber %s: %w", p.Group(), err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wmLog)
	if err != nil {
		return fmt.Errorf("projections: router %s: %w", p.Group(), err)
	}
	// gaveUp is closed when the handler gives up on a batch, also while the projector drains.
	gaveUp := make(chan struct{})
	var gaveUpOnce sync.Once
	stop := func(cause error) {
		gaveUpOnce.Do(func() {
			giveUp(cause)
			close(gaveUp)
		})
	}
	h := &handler{r: r, p: p, sql: p.batchSQL(), st: st}
	router.AddConsumerHandler(p.Group(), topic, sub, h.handle)
	router.AddMiddleware(
		r.stopOnFailure(p.Group(), st, gaveUp, stop),
		middleware.Retry{MaxRetries: r.cfg.MaxAttempts - 1, InitialInterval: r.cfg.RetryInterval, Logger: wmLog}.Middleware,
	)
	if err := recordState(ctx, r.pool, p.Group(), "live", nil); err != nil {
		return err
	}
	r.log.Info("projector started", "projection", p.Group())
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.WithoutCancel(runCtx)) }()
	select {
	case err = <-runErr:
	case <-runCtx.Done():
		// Drain (see pollWake), unless the projector gave up, before or while draining: its
		// handler then touches the poll transaction no more (it refuses the batch, which the
		// drain would wait for in vain), and closing ends the transaction at once.
		if cause := context.Cause(runCtx); !errors.Is(cause, errGaveUp) {
			wake.stopping.Store(true)
			select {
			case <-wake.idle:
			case <-gaveUp:
			case err = <-runErr:
				runErr <- err
			}
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

// stopOnFailure is the outermost middleware of a projector: when a batch still fails after
// its retries, it records the projection as failed at the event that failed and stops the
// projector, whose supervisor starts it again after a backoff, from its checkpoint: a failing
// event is never skipped. (watermill's poison queue, which acks a message it cannot handle,
// would skip it.) When a batch succeeds after a failure, it records the projection as live.
func (r *Runner) stopOnFailure(group string, st *projectorState, gaveUp <-chan struct{}, giveUp func(cause error)) message.HandlerMiddleware {
	return func(next message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			select {
			case <-gaveUp:
				// The projector is closing: the batch stays unapplied and unacked.
				return nil, errGaveUp
			default:
			}
			out, err := next(msg)
			ctx := context.WithoutCancel(msg.Context())
			if err == nil {
				if st.failed.Swap(false) {
					if serr := recordState(ctx, r.pool, group, "live", nil); serr != nil {
						r.log.Error("projection status not recorded", "projection", group, "err", serr)
					}
					r.log.Info("projection recovered", "projection", group)
				}
				return out, nil
			}
			if msg.Context().Err() != nil {
				return nil, err // stopping, not failing
			}
			st.failed.Store(true)
			if serr := recordState(ctx, r.pool, group, "failed", err); serr != nil {
				r.log.Error("projection status not recorded", "projection", group, "err", serr)
			}
			r.log.Error("projection failed; it stops at this event and retries later, never skipping it",
				"projection", group, "err", err)
			giveUp(fmt.Errorf("%w: %w", errGaveUp, err))
			return nil, err
		}
	}
}

// execer runs a statement: a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// recordState records a projection version's state in projection_status; a failure also
// records why, and at which event when it is one event's, and counts it.
func recordState(ctx context.Context, q execer, group, state string, failure error) error {
	var pos, id, msg any
	if failure != nil {
		msg = failure.Error()
	}
	if at := (*eventError)(nil); errors.As(failure, &at) {
		pos, id = at.event.Position, at.event.ID
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
