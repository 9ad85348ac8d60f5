// Package standby sends reads to PostgreSQL hot standbys without losing read-your-writes (ADR
// 11). Before a read, the Router takes the primary's WAL flush position, one round trip shared
// by the reads that ask at the same time (package group), and picks a standby that has
// replayed that position, waiting a bounded time for one; past the bound, or when no standby
// is usable, the read goes to the primary. Every command the ledger acknowledges has committed
// synchronously, so its commit record is at or before the flush position taken after it
// returned: a standby past that position shows it. Standbys that fail, refuse connections or
// fall behind are skipped and tried again later; none of that turns a read into an error.
package standby

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/internal/group"
)

// Defaults of Config.
const (
	DefaultWait       = 50 * time.Millisecond
	DefaultRetryAfter = time.Second
	DefaultPoll       = 100 * time.Millisecond
)

// Position grouping: how many statements asking for the primary's position (or a standby's
// replay position) may run at once, and the most reads one of them serves.
const (
	positionSlots = 2
	positionSize  = 1024
	// positionTimeout bounds a shared position statement whose callers have no deadline.
	positionTimeout = 5 * time.Second
)

// Config tunes a Router; zero values take the defaults.
type Config struct {
	// Wait bounds how long a read waits for a standby to replay the primary's position before
	// it reads on the primary (default 50ms; negative: never wait, read on a standby only
	// when it is already there).
	Wait time.Duration
	// RetryAfter is how long a standby that failed is skipped (default 1s).
	RetryAfter time.Duration
	// Poll is how often each standby's replay lag is measured; the same measure takes a skipped
	// standby back (default 100ms).
	Poll time.Duration
	// ObserveWait, when set, sees how long each read waited to have a database: the primary's
	// position and the standby replaying it, or the wait that ended on the primary.
	ObserveWait func(target Target, d time.Duration)
	Log         *slog.Logger
}

// Target is where a read ran.
type Target int

// Targets.
const (
	Primary Target = iota
	Standby
)

func (t Target) String() string {
	if t == Standby {
		return "standby"
	}
	return "primary"
}

// Reason says why a read went where it did.
type Reason int

// Reasons. The first two go with Standby, the others with Primary.
const (
	// Replayed: the standby had already replayed the position.
	Replayed Reason = iota
	// AfterWait: the standby replayed the position while the read waited.
	AfterWait
	// WaitTimeout: no standby replayed the position within the bound.
	WaitTimeout
	// Unavailable: every standby was being skipped (down, refusing, or behind).
	Unavailable
	// PositionUnknown: the primary's position could not be read.
	PositionUnknown
	// StandbyFailed: the read failed on the standby and ran again on the primary.
	StandbyFailed
	numReasons
)

var reasonNames = [numReasons]string{"replayed", "after_wait", "wait_timeout", "unavailable", "position_unknown", "standby_failed"}

func (r Reason) String() string { return reasonNames[r] }

// Target returns where reads of this reason ran.
func (r Reason) Target() Target {
	if r == Replayed || r == AfterWait {
		return Standby
	}
	return Primary
}

// Reasons lists every reason, for metrics that export each.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// Router chooses the database each read runs on.
type Router struct {
	primary  *pgxpool.Pool
	standbys []*node
	cfg      Config
	log      *slog.Logger

	positions *group.Batcher[*positionRequest]
	next      atomic.Uint64 // round robin over the standbys
	reads     [numReasons]atomic.Uint64
}

// node is one standby.
type node struct {
	name string
	pool *pgxpool.Pool
	// replayed is the highest replay position any statement has seen on this standby. Replay
	// only moves forward while the server runs, and a connection opened later must show at
	// least this much (see guard): so every open connection shows at least replayed.
	replayed atomic.Uint64
	// skipUntil (unix nanoseconds) is when a standby that failed is tried again.
	skipUntil atomic.Int64
	// behind is set when a read waited past the bound for the standby, to the position it
	// waited for; the monitor clears it once the standby has replayed that position and its
	// replay lag is within the bound again.
	behind   atomic.Bool
	behindAt atomic.Uint64
	// Measured by the monitor: replay lag in seconds (as float64 bits) and whether the last
	// measure succeeded.
	lag atomic.Uint64
	up  atomic.Bool

	checks *group.Batcher[*positionRequest]
}

// New returns a Router reading on primary and on the standbys that configs describe. The
// standbys' pools are created here and connect lazily: a standby that is down at start is
// skipped until it answers.
func New(primary *pgxpool.Pool, configs []*pgxpool.Config, cfg Config) (*Router, error) {
	if cfg.Wait == 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Wait < 0 {
		cfg.Wait = 0
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{primary: primary, cfg: cfg, log: log,
		positions: group.New[*positionRequest](positionSlots, positionSize)}
	for _, pc := range configs {
		n := &node{name: net.JoinHostPort(pc.ConnConfig.Host, fmt.Sprint(pc.ConnConfig.Port)),
			checks: group.New[*positionRequest](positionSlots, positionSize)}
		pc = pc.Copy()
		pc.AfterConnect = n.guard
		pool, err := pgxpool.NewWithConfig(context.Background(), pc)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("standby %s: %w", n.name, err)
		}
		n.pool = pool
		r.standbys = append(r.standbys, n)
	}
	return r, nil
}

// Close closes the standbys' pools.
func (r *Router) Close() {
	for _, n := range r.standbys {
		n.pool.Close()
	}
}

// Standbys returns the standbys' pools, in the order of the configs given to New.
func (r *Router) Standbys() []*pgxpool.Pool {
	out := make([]*pgxpool.Pool, len(r.standbys))
	for i, n := range r.standbys {
		out[i] = n.pool
	}
	return out
}

// errNotStandby refuses a connection to a server that is not replaying WAL.
var errNotStandby = errors.New("not a standby (pg_is_in_recovery() is false)")

// guard refuses a new connection to a standby that shows less than the standby has shown
// before: after a crash, a standby takes connections again once it is consistent, which may be
// at an earlier position than it had replayed. It also refuses servers that are not standbys
// (a primary named by mistake, a promoted standby): their data need not follow the primary's.
func (n *node) guard(ctx context.Context, c *pgx.Conn) error {
	// Only what was seen before this question was asked counts: a check on another connection
	// that answers meanwhile may show a later position than this answer, with no restart.
	seen := n.replayed.Load()
	var recovering bool
	var replayed *int64
	if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0')::bigint`).Scan(&recovering, &replayed); err != nil {
		return err
	}
	if !recovering || replayed == nil {
		return errNotStandby
	}
	if uint64(*replayed) < seen {
		return fmt.Errorf("standby replayed %d, less than the %d it showed before; waiting for it to catch up", *replayed, seen)
	}
	n.saw(uint64(*replayed))
	return nil
}

// saw raises the highest replay position seen.
func (n *node) saw(lsn uint64) {
	for {
		old := n.replayed.Load()
		if lsn <= old || n.replayed.CompareAndSwap(old, lsn) {
			return
		}
	}
}

func (n *node) usable(now time.Time) bool {
	return !n.behind.Load() && now.UnixNano() >= n.skipUntil.Load()
}

// Route returns where a read asked for now is to run: 0 for the primary, i for the standby
// Standbys()[i-1]. A standby it returns has replayed every transaction the primary had
// committed and flushed when Route was called. The error is only ever ctx's: when nothing
// else answers, the answer is the primary.
func (r *Router) Route(ctx context.Context) (int, error) {
	if len(r.standbys) == 0 {
		return 0, nil
	}
	start := time.Now()
	i, reason, err := r.route(ctx, start)
	if err != nil {
		return 0, err
	}
	r.reads[reason].Add(1)
	if r.cfg.ObserveWait != nil {
		r.cfg.ObserveWait(reason.Target(), time.Since(start))
	}
	return i, nil
}

func (r *Router) route(ctx context.Context, start time.Time) (int, Reason, error) {
	candidates := r.candidates(start)
	if len(candidates) == 0 {
		return 0, Unavailable, nil
	}
	pos, err := r.position(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		return 0, PositionUnknown, nil
	}
	for _, i := range candidates {
		if r.standbys[i].replayed.Load() >= pos {
			return i + 1, Replayed, nil
		}
	}
	// Ask the standbys where they are, then again with growing pauses, until one has replayed
	// pos or the bound has passed. Reads waiting together share each question.
	deadline := time.Now().Add(r.cfg.Wait)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	reason := Replayed
	for pause := 500 * time.Microsecond; ; pause = min(2*pause, 8*time.Millisecond) {
		asked := false
		for _, i := range candidates {
			n := r.standbys[i]
			if !n.usable(time.Now()) {
				continue
			}
			asked = true
			lsn, err := n.check(wctx)
			switch {
			case err != nil && ctx.Err() != nil:
				return 0, 0, ctx.Err()
			case err != nil && (wctx.Err() != nil || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded)):
				// Out of time, not broken: a connection being opened, a slow answer.
			case err != nil:
				r.skip(n, err)
			case lsn >= pos:
				return i + 1, reason, nil
			}
		}
		if !asked {
			return 0, Unavailable, nil // every standby failed meanwhile: nothing to wait for
		}
		reason = AfterWait
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(min(pause, left)):
		}
	}
	for _, i := range candidates {
		n := r.standbys[i]
		for {
			at := n.behindAt.Load()
			if pos <= at || n.behindAt.CompareAndSwap(at, pos) {
				break
			}
		}
		if n.behind.CompareAndSwap(false, true) {
			r.log.Warn("standby behind: reads go to the primary until it catches up", "standby", n.name, "wait", r.cfg.Wait)
		}
	}
	return 0, WaitTimeout, nil
}

// candidates returns the indexes of the standbys not being skipped, starting at the next one
// in turn.
func (r *Router) candidates(now time.Time) []int {
	first := int(r.next.Add(1) % uint64(len(r.standbys)))
	var out []int
	for k := range r.standbys {
		i := (first + k) % len(r.standbys)
		if r.standbys[i].usable(now) {
			out = append(out, i)
		}
	}
	return out
}

// Failed reports that a read routed to target failed there (and ran again on the primary):
// the standby is skipped for a while.
func (r *Router) Failed(target int, err error) {
	if target < 1 || target > len(r.standbys) {
		return
	}
	r.reads[StandbyFailed].Add(1)
	r.skip(r.standbys[target-1], err)
}

func (r *Router) skip(n *node, err error) {
	until := time.Now().Add(r.cfg.RetryAfter).UnixNano()
	if old := n.skipUntil.Load(); old < until && n.skipUntil.CompareAndSwap(old, until) && old < time.Now().UnixNano() {
		r.log.Warn("standby skipped: reads go elsewhere until it answers", "standby", n.name, "retry_after", r.cfg.RetryAfter, "err", err)
	}
	n.up.Store(false)
}

// positionRequest is one read waiting for a position: the primary's, or a standby's replay.
type positionRequest struct {
	ctx  context.Context
	lsn  uint64
	err  error
	done chan struct{}
}

func (p *positionRequest) Context() context.Context { return p.ctx }
func (p *positionRequest) Done() <-chan struct{}    { return p.done }
func (p *positionRequest) Abandon(err error)        { p.err = err; close(p.done) }

// ask queues a position request on b; whoever handles its group runs query once for all.
func ask(ctx context.Context, b *group.Batcher[*positionRequest], query func(context.Context) (uint64, error)) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p := &positionRequest{ctx: ctx, done: make(chan struct{})}
	if !b.Do(p, ctx.Done(), func(reqs []*positionRequest) {
		gctx, cancel := group.Context(reqs, group.LastDeadline, positionTimeout)
		defer cancel()
		lsn, err := query(gctx)
		for _, q := range reqs {
			q.lsn, q.err = lsn, err
			close(q.done)
		}
	}) {
		return 0, ctx.Err()
	}
	return p.lsn, p.err
}

// position returns the primary's WAL flush position, read by a statement that started after
// position was called. Flushed, not written: the synchronous commit of every acknowledged
// command is at or before it, and a standby can replay it at once (WAL is sent once flushed).
func (r *Router) position(ctx context.Context) (uint64, error) {
	return ask(ctx, r.positions, func(ctx context.Context) (uint64, error) {
		return lsnOf(ctx, r.primary, `SELECT (pg_current_wal_flush_lsn() - '0/0')::bigint`)
	})
}

// check returns how far the standby has replayed, asked by a statement that started after
// check was called.
func (n *node) check(ctx context.Context) (uint64, error) {
	lsn, err := ask(ctx, n.checks, func(ctx context.Context) (uint64, error) {
		return lsnOf(ctx, n.pool, `SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint`)
	})
	if err == nil {
		n.saw(lsn)
	}
	return lsn, err
}

func lsnOf(ctx context.Context, pool *pgxpool.Pool, query string) (uint64, error) {
	var lsn *int64
	if err := pool.QueryRow(ctx, query).Scan(&lsn); err != nil {
		return 0, err
	}
	if lsn == nil {
		return 0, errNotStandby
	}
	return uint64(*lsn), nil
}

// Run measures each standby's replay lag every Poll until ctx ends, takes back standbys whose
// skip time has passed and that answer, and takes back a standby that was behind once it has
// replayed the position a read gave up on and its replay lag is within the bound (or within
// Poll, when that is longer).
func (r *Router) Run(ctx context.Context) {
	if len(r.standbys) == 0 {
		return
	}
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	var previous uint64
	for {
		previous = r.measure(ctx, previous)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measure measures every standby once; it returns the primary's position it read (or
// previous when it could not).
func (r *Router) measure(ctx context.Context, previous uint64) uint64 {
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.Poll, time.Second))
	defer cancel()
	primary, err := lsnOf(ctx, r.primary, `SELECT (pg_current_wal_flush_lsn() - '0/0')::bigint`)
	if err != nil {
		primary = previous
	}
	var wg sync.WaitGroup
	for _, n := range r.standbys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var replayed *int64
			var lag float64
			err := n.pool.QueryRow(ctx, `SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint,
				CASE WHEN (pg_last_wal_replay_lsn() - '0/0')::bigint >= $1 THEN 0
				     ELSE COALESCE(EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8`,
				int64(primary)).Scan(&replayed, &lag)
			if err == nil && replayed == nil {
				err = errNotStandby
			}
			if err != nil {
				n.up.Store(false)
				if ctx.Err() == nil {
					r.skip(n, err)
				}
				// Out of time is no failure (a busy pool, a slow machine): a standby that
				// keeps failing to answer makes reads wait past the bound, and is passed by
				// as behind until a measure succeeds.
				return
			}
			n.saw(uint64(*replayed))
			n.lag.Store(math.Float64bits(lag))
			n.up.Store(true)
			if uint64(*replayed) >= n.behindAt.Load() && lag <= max(r.cfg.Wait, r.cfg.Poll).Seconds() && n.behind.CompareAndSwap(true, false) {
				r.log.Info("standby caught up: reads go to it again", "standby", n.name)
			}
			if time.Now().UnixNano() >= n.skipUntil.Load() {
				n.skipUntil.Store(0)
			}
		}()
	}
	wg.Wait()
	return primary
}

// Stats are the Router's counters since start.
type Stats struct {
	// Reads counts the routed reads by reason (index Reason).
	Reads [numReasons]uint64
	// Standbys are the standbys' states as last measured.
	Standbys []StandbyStats
}

// StandbyStats is one standby's state.
type StandbyStats struct {
	Name string
	// Up is whether the last measure succeeded; Skipped whether reads pass it by now (it
	// failed, or fell behind the bound).
	Up, Skipped bool
	// ReplayLag is how long ago the primary committed the last transaction the standby has
	// replayed, 0 when it has replayed everything the primary had flushed.
	ReplayLag time.Duration
}

// Stats returns the counters.
func (r *Router) Stats() Stats {
	var s Stats
	for i := range s.Reads {
		s.Reads[i] = r.reads[i].Load()
	}
	now := time.Now()
	for _, n := range r.standbys {
		s.Standbys = append(s.Standbys, StandbyStats{Name: n.name, Up: n.up.Load(), Skipped: !n.usable(now),
			ReplayLag: time.Duration(math.Float64frombits(n.lag.Load()) * float64(time.Second))})
	}
	return s
}
