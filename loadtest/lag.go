package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
)

// Projection lag is how long after a command's 200 its effect reaches every read model. The
// prober samples one in every successful commands: right after the 200 it reads the stream
// version of each account the command touched from streams (the event store's head, which
// already includes the command), then polls projection_heads until every consumer group has
// applied that version for every such account. It polls at a tenth of the lag so far (at least
// every lagPollMin, at most every lagPollMax): about a millisecond of resolution where lag is
// short, about a tenth of it where lag is long, and little cost to the database either way.
const (
	lagPollMin     = time.Millisecond
	lagPollMax     = 50 * time.Millisecond
	lagProbeWithin = 30 * time.Second
	lagMaxProbes   = 32
	lagPoolConns   = 6 // probes hold a connection only while they query
)

// lagPollWait is how long a probe waits before its next look, lag after the 200.
func lagPollWait(lag time.Duration) time.Duration {
	return min(max(lag/10, lagPollMin), lagPollMax)
}

// lagProber measures projection lag on sampled commands.
type lagProber struct {
	pool     *pgxpool.Pool
	groups   []string
	every    int64
	accounts []uuid.UUID // by employee index

	seen atomic.Int64
	sem  chan struct{}
}

func newLagProber(pool *pgxpool.Pool, groups []string, every int, accounts []uuid.UUID) *lagProber {
	return &lagProber{pool: pool, groups: groups, every: int64(every), accounts: accounts, sem: make(chan struct{}, lagMaxProbes)}
}

// lagRecorder is one phase's lag results.
type lagRecorder struct {
	lags     durations
	probes   sync.WaitGroup
	skipped  atomic.Int64 // sampled while lagMaxProbes probes ran: not measured
	timedOut atomic.Int64
	failed   atomic.Int64
	lastErr  atomic.Value // string
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

func (r *lagRecorder) report(p *lagProber) *LagReport {
	r.probes.Wait()
	rep := &LagReport{Groups: p.groups, SampleEvery: int(p.every), Latency: r.lags.summary(),
		Skipped: r.skipped.Load(), TimedOut: r.timedOut.Load(), Failed: r.failed.Load()}
	if s, ok := r.lastErr.Load().(string); ok {
		rep.LastErr = s
	}
	return rep
}

// committed is called after every successful command (200) with the time the answer arrived
// and the employees whose accounts it wrote; every p.every-th call starts a probe.
func (p *lagProber) committed(ctx context.Context, rec *lagRecorder, answered time.Time, users ...int) {
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
	select {
	case p.sem <- struct{}{}:
	default:
		rec.skipped.Add(1)
		return
	}
	rec.probes.Add(1)
	go func() {
		defer rec.probes.Done()
		defer func() { <-p.sem }()
		lag, err := p.probe(ctx, answered, ids)
		switch {
		case err == nil:
			rec.lags.add(lag)
		case errors.Is(err, context.DeadlineExceeded):
			rec.timedOut.Add(1)
		default:
			rec.failed.Add(1)
			rec.lastErr.Store(err.Error())
		}
	}()
}

const streamVersionsSQL = `SELECT s.version FROM unnest($1::text[]) WITH ORDINALITY AS q(stream_id, n)
LEFT JOIN streams s USING (stream_id) ORDER BY q.n`

// appliedSQL counts the (account, group) pairs whose read model has applied the target version.
const appliedSQL = `SELECT count(*) FROM projection_heads h
JOIN unnest($1::uuid[], $2::bigint[]) AS t(account_id, version) USING (account_id)
WHERE h.consumer_group = ANY($3) AND h.version >= t.version`

func (p *lagProber) probe(ctx context.Context, answered time.Time, ids []uuid.UUID) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, lagProbeWithin)
	defer cancel()
	streams := make([]string, len(ids))
	for i, id := range ids {
		streams[i] = domain.StreamID(id)
	}
	rows, err := p.pool.Query(ctx, streamVersionsSQL, streams)
	if err != nil {
		return 0, fmt.Errorf("read stream heads: %w", err)
	}
	var versions []int64
	for rows.Next() {
		var v *int64
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read stream heads: %w", err)
		}
		if v == nil {
			rows.Close()
			return 0, fmt.Errorf("no stream for an account that just answered 200: %v", ids)
		}
		versions = append(versions, *v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read stream heads: %w", err)
	}
	want := int64(len(ids) * len(p.groups))
	for {
		var n int64
		if err := p.pool.QueryRow(ctx, appliedSQL, ids, versions, p.groups).Scan(&n); err != nil {
			return 0, fmt.Errorf("read projection heads: %w", err)
		}
		if n >= want {
			return time.Since(answered), nil
		}
		if !(realClock{}).Sleep(ctx, lagPollWait(time.Since(answered))) {
			return 0, ctx.Err()
		}
	}
}
