package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ledger/ledger/domain"
)

// Projection lag is how long after a command's 200 its effect reaches every read model. The
// prober samples one in every successful commands and hands each sample to one poller per
// phase, which looks at all the samples in flight with a single query: the first look at a
// sample takes the stream version of each account the command touched (the event store's
// head, which already includes the command) as its target, and the sample is done at the first
// look that finds every consumer group has applied its target for every such account; its lag
// runs from its own 200 to that look. A new sample is looked at as soon as the poller has it;
// after that the poller looks again at a tenth of the youngest sample's lag so far (at least
// every lagPollMin, at most every lagPollMax), so every sample is looked at at least as often
// as its own lag asks: about a millisecond of resolution where lag is short, about a tenth of
// it where lag is long. However many samples are in flight, the database answers one query per
// look, which is what keeps the prober cheap for the generator and for PostgreSQL.
const (
	lagPollMin     = time.Millisecond
	lagPollMax     = 50 * time.Millisecond
	lagProbeWithin = 30 * time.Second // a sample not applied by then counts as timed out
	lagMaxPending  = 256              // samples in flight; more are skipped
	lagPoolConns   = 6                // the poller holds one connection while it looks
)

// lagPollWait is how long the poller waits before its next look at a sample lag after its 200.
func lagPollWait(lag time.Duration) time.Duration {
	return min(max(lag/10, lagPollMin), lagPollMax)
}

// accountHeads is what the poller compares for one account: the version of its stream, and the
// lowest version any consumer group has applied to its read models; -1 for a stream that does
// not exist or a group that has applied nothing.
type accountHeads struct {
	stream, applied int64
}

// lagSource reads the heads of accounts, one accountHeads per account, in order.
type lagSource interface {
	heads(ctx context.Context, accounts []uuid.UUID) ([]accountHeads, error)
}

// pgLagSource reads heads from the ledger's database.
type pgLagSource struct {
	pool   *pgxpool.Pool
	groups []string
}

var _ lagSource = (*pgLagSource)(nil)

// headsSQL reads, from one snapshot, each account's stream version and the lowest version the
// consumer groups $4 (all $3 of them) have applied for it. The stream id is built here from the
// account id ($2 is the prefix, as in behindSQL) so that only one array is sent per look.
const headsSQL = `SELECT coalesce(s.version, -1),
       coalesce((SELECT CASE WHEN count(*) = $3 THEN min(h.version) END FROM projection_heads h
                 WHERE h.account_id = q.account_id AND h.consumer_group = ANY($4)), -1)
FROM unnest($1::uuid[]) WITH ORDINALITY AS q(account_id, n)
LEFT JOIN streams s ON s.stream_id = $2 || q.account_id::text
ORDER BY q.n`

func (s *pgLagSource) heads(ctx context.Context, accounts []uuid.UUID) ([]accountHeads, error) {
	// pgtype.UUID encodes without the reflection and text round trip a []uuid.UUID takes.
	ids := make([]pgtype.UUID, len(accounts))
	for i, id := range accounts {
		ids[i] = pgtype.UUID{Bytes: id, Valid: true}
	}
	rows, err := s.pool.Query(ctx, headsSQL, ids, domain.StreamPrefix, int64(len(s.groups)), s.groups)
	if err != nil {
		return nil, fmt.Errorf("read stream and projection heads: %w", err)
	}
	defer rows.Close()
	out := make([]accountHeads, 0, len(accounts))
	for rows.Next() {
		var h accountHeads
		if err := rows.Scan(&h.stream, &h.applied); err != nil {
			return nil, fmt.Errorf("read stream and projection heads: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stream and projection heads: %w", err)
	}
	return out, nil
}

// lagProber measures projection lag on sampled commands, phase by phase.
type lagProber struct {
	source   lagSource
	groups   []string
	every    int64
	accounts []uuid.UUID      // by employee index
	now      func() time.Time // time.Now; tests fix it

	seen atomic.Int64
}

// newLagProber samples one in every successful commands and reads their progress from source.
func newLagProber(source lagSource, groups []string, every int, accounts []uuid.UUID) *lagProber {
	return &lagProber{source: source, groups: groups, every: int64(every), accounts: accounts, now: time.Now}
}

// LagReport is a phase's projection lag.
type LagReport struct {
	Groups      []string `json:"groups"`
	SampleEvery int      `json:"sample_every"`
	Latency
	Skipped  int64  `json:"skipped"`
	TimedOut int64  `json:"timed_out"`
	Failed   int64  `json:"failed"`
	LastErr  string `json:"last_error,omitempty"`
}

// lagSample is one sampled command.
type lagSample struct {
	answered time.Time // when its 200 arrived
	accounts []uuid.UUID
	target   []int64 // by account; nil until the first look
}

// lagPhase is one phase's measurement: committed hands samples to the poller goroutine, which
// alone owns them and the results until report.
type lagPhase struct {
	p        *lagProber
	in       chan *lagSample
	inFlight atomic.Int64 // handed over and not yet done
	skipped  atomic.Int64
	done     chan struct{}

	// The poller's, read by report once it has ended.
	lags     []time.Duration
	timedOut int64
	failed   int64
	lastErr  string
}

// startPhase starts the poller of a phase; ctx ending (an interrupt) fails the samples still
// in flight and every later one. A nil prober measures nothing: its phase is nil.
func (p *lagProber) startPhase(ctx context.Context) *lagPhase {
	if p == nil {
		return nil
	}
	l := &lagPhase{p: p, in: make(chan *lagSample, lagMaxPending), done: make(chan struct{})}
	go l.run(ctx)
	return l
}

// committed is called after every successful command (200) with the time the answer arrived
// and the employees whose accounts it wrote; every p.every-th call is sampled. It never
// blocks, and must not be called after report. On a nil phase it does nothing.
func (l *lagPhase) committed(answered time.Time, users ...int) {
	if l == nil {
		return
	}
	p := l.p
	if p.seen.Add(1)%p.every != 0 {
		return
	}
	ids := make([]uuid.UUID, 0, len(users))
	for _, u := range users {
		if p.accounts[u] != uuid.Nil {
			ids = append(ids, p.accounts[u])
		}
	}
	if len(ids) == 0 {
		return
	}
	if l.inFlight.Add(1) > lagMaxPending {
		l.inFlight.Add(-1)
		l.skipped.Add(1)
		return
	}
	l.in <- &lagSample{answered: answered, accounts: ids} // room for every sample in flight
}

// report waits until every sample handed over is done and reports the phase (nil: nil).
func (l *lagPhase) report() *LagReport {
	if l == nil {
		return nil
	}
	close(l.in)
	<-l.done
	return &LagReport{Groups: l.p.groups, SampleEvery: int(l.p.every), Latency: summarize(l.lags),
		Skipped: l.skipped.Load(), TimedOut: l.timedOut, Failed: l.failed, LastErr: l.lastErr}
}

// run is the poller: it looks whenever a new sample arrives or the next look is due, until
// the input is closed and no sample is left.
func (l *lagPhase) run(ctx context.Context) {
	defer close(l.done)
	in := l.in
	var pending []*lagSample
	var next time.Time // the next look, while samples are pending
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for in != nil || len(pending) > 0 {
		if len(pending) == 0 || l.p.now().Before(next) {
			var tick <-chan time.Time
			if len(pending) > 0 {
				timer.Reset(next.Sub(l.p.now()))
				tick = timer.C
			}
			select {
			case s, ok := <-in:
				if !ok {
					in = nil
					continue
				}
				pending = append(pending, s)
			case <-tick:
			case <-ctx.Done():
				l.drainFailed(in, pending, ctx.Err())
				return
			}
		}
		// Take every sample already waiting into this look.
		for more := true; more && in != nil; {
			select {
			case s, ok := <-in:
				if !ok {
					in = nil
				} else {
					pending = append(pending, s)
				}
			default:
				more = false
			}
		}
		pending, next = l.look(ctx, pending)
	}
}

// drainFailed fails the pending samples and every one still to come, until the input closes.
func (l *lagPhase) drainFailed(in <-chan *lagSample, pending []*lagSample, err error) {
	l.failAll(len(pending), err)
	if in != nil {
		for range in {
			l.failAll(1, err)
		}
	}
}

func (l *lagPhase) failAll(n int, err error) {
	if n == 0 {
		return
	}
	l.failed += int64(n)
	l.lastErr = err.Error()
	l.inFlight.Add(-int64(n))
}

// look reads the heads of every pending sample's accounts at once and settles the samples
// that are done, failed or out of time. It returns the rest and when to look at them next.
func (l *lagPhase) look(ctx context.Context, pending []*lagSample) ([]*lagSample, time.Time) {
	var accounts []uuid.UUID
	for _, s := range pending {
		accounts = append(accounts, s.accounts...)
	}
	qctx, cancel := context.WithTimeout(ctx, lagProbeWithin)
	heads, err := l.p.source.heads(qctx, accounts)
	cancel()
	if err == nil && len(heads) != len(accounts) {
		err = fmt.Errorf("read heads: %d rows for %d accounts", len(heads), len(accounts))
	}
	seen := l.p.now()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			l.timedOut += int64(len(pending))
			l.inFlight.Add(-int64(len(pending)))
		} else {
			l.failAll(len(pending), err)
		}
		return pending[:0], time.Time{}
	}
	var next time.Time
	kept := pending[:0]
	for _, s := range pending {
		h := heads[:len(s.accounts)]
		heads = heads[len(s.accounts):]
		lag := seen.Sub(s.answered)
		applied, err := s.applied(h)
		switch {
		case err != nil:
			l.failAll(1, err)
		case applied:
			l.lags = append(l.lags, lag)
			l.inFlight.Add(-1)
		case lag >= lagProbeWithin:
			l.timedOut++
			l.inFlight.Add(-1)
		default:
			kept = append(kept, s)
			if due := seen.Add(lagPollWait(lag)); next.IsZero() || due.Before(next) {
				next = due
			}
		}
	}
	clear(pending[len(kept):])
	return kept, next
}

// applied reports whether every account of s has been applied by every consumer group up to
// s's target, which the first look takes from the stream versions it reads.
func (s *lagSample) applied(heads []accountHeads) (bool, error) {
	if s.target == nil {
		s.target = make([]int64, len(heads))
		for i, h := range heads {
			if h.stream < 0 {
				return false, fmt.Errorf("no stream for an account that just answered 200: %v", s.accounts[i])
			}
			s.target[i] = h.stream
		}
	}
	for i, h := range heads {
		if h.applied < s.target[i] {
			return false, nil
		}
	}
	return true, nil
}
