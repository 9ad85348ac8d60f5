package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"
)

// Phase is one stretch of constant-rate load and what it measured.
type Phase struct {
	Number     int     `json:"number"`
	TargetRate float64 `json:"target_rate"`
	DurationS  float64 `json:"duration_s"`
	// ElapsedS runs from the first scheduled request until the last answer arrived.
	ElapsedS  float64 `json:"elapsed_s"`
	Scheduled int64   `json:"scheduled"`
	Sent      int64   `json:"sent"`
	// Dropped requests were due while max-in-flight requests were outstanding; they count
	// as errors.
	Dropped int64      `json:"dropped"`
	Ops     []OpReport `json:"ops"`
	Total   OpReport   `json:"total"`
	// ErrorRate is (errors + dropped) / scheduled.
	ErrorRate float64 `json:"error_rate"`
	// StartDelay is how late the generator sent requests after their scheduled time: large
	// values mean the load tool itself was short of CPU (the latency includes this delay).
	StartDelay Latency     `json:"start_delay"`
	Lag        *LagReport  `json:"projection_lag,omitempty"`
	RelayLag   *LagReport  `json:"jetstream_lag,omitempty"`
	Server     *ProcReport `json:"server,omitempty"`
	Generator  *ProcReport `json:"generator"`
	// Machine is the whole machine's CPU, which the generator, the server and PostgreSQL
	// share when they run on one host.
	Machine *MachineReport `json:"machine"`
	Held    bool           `json:"held"`
	Verdict string         `json:"verdict"`
}

// phaseRecorder collects a phase's results from the request goroutines.
type phaseRecorder struct {
	ops        [numOps]opRecorder
	startDelay durations
	dropped    atomic.Int64
	done       atomic.Int64
	failed     atomic.Int64
	// slow counts the answers later than the SLO's p99 bound, so the progress lines show
	// when in a phase the slow ones came.
	slow atomic.Int64
}

// due is a request and the time it was due.
type due struct {
	q  request
	at time.Time
}

// runner holds what every phase of a run shares.
type runner struct {
	api       *api
	workload  workload
	rng       *rand.Rand
	lag       *lagProber // nil: not measured
	relayLag  *lagProber // 200 → readable from JetStream; nil: not measured
	serverPID int        // 0: not watched
	maxFlight int
	timeout   time.Duration
	p99       time.Duration
	maxErr    float64
	progress  io.Writer
}

// runPhase drives rate requests per second for d on an open-loop schedule and reports.
func (r *runner) runPhase(ctx context.Context, number int, rate float64, d time.Duration) Phase {
	s := newSchedule(rate, d)
	rec := &phaseRecorder{}
	var server *procWatch
	if r.serverPID > 0 {
		server = watchProc(r.serverPID)
	}
	self := watchProc(os.Getpid())
	machine := watchMachine()
	lag, relayLag := r.lag.startPhase(ctx), r.relayLag.startPhase(ctx) // nil: not measured
	var inFlight, sent atomic.Int64

	fmt.Fprintf(r.progress, "phase %d: %g req/s for %s (%d requests)\n", number, rate, d, s.total)
	stopProgress := r.reportProgress(number, &sent, rec, &inFlight)
	send := newWorkers(func(t due) {
		defer inFlight.Add(-1)
		q, at := t.q, t.at
		rec.startDelay.add(time.Since(at))
		// Requests outlive an interrupt by at most the timeout, so that what was sent is
		// accounted for.
		status, message, err := r.api.do(time.Now().Add(r.timeout), q)
		answered := time.Now()
		o, key := classify(q.op, status, message, err)
		rec.ops[q.op].record(o, answered.Sub(at), key)
		if answered.Sub(at) > r.p99 {
			rec.slow.Add(1)
		}
		rec.done.Add(1)
		if o == outError {
			rec.failed.Add(1)
		}
		if o == outOK && q.op != opInfo {
			users := []int{q.user}
			if q.op == opSend {
				users = append(users, q.to)
			}
			lag.committed(answered, users...)
			relayLag.committed(answered, users...)
		}
	})
	start := time.Now()
	fire := func(_ int64, at time.Time) {
		q := r.workload.next(r.rng) // drawn even when dropped: the sequence stays reproducible
		if inFlight.Load() >= int64(r.maxFlight) {
			rec.dropped.Add(1)
			return
		}
		inFlight.Add(1)
		sent.Add(1)
		send.start(due{q: q, at: at})
	}
	dispatch(ctx, newTimerClock(), start, s, fire)
	send.wait()
	elapsed := time.Since(start)
	stopProgress()

	ph := Phase{
		Number: number, TargetRate: rate, DurationS: d.Seconds(), ElapsedS: round2(elapsed.Seconds()),
		Scheduled: s.total, Sent: sent.Load(), Dropped: rec.dropped.Load(),
		StartDelay: rec.startDelay.summary(),
	}
	all := make([]*opRecorder, numOps)
	for o := range numOps {
		all[o] = &rec.ops[o]
		ph.Ops = append(ph.Ops, reportOps(o.String(), elapsed, &rec.ops[o]))
	}
	ph.Total = reportOps("all", elapsed, all...)
	if ph.Scheduled > 0 {
		ph.ErrorRate = float64(ph.Total.Errors+ph.Dropped) / float64(ph.Scheduled)
	}
	ph.Lag, ph.RelayLag = lag.report(), relayLag.report()
	if server != nil {
		ph.Server = server.stop()
	}
	ph.Generator = self.stop()
	ph.Machine = machine.stop(ph.Server, ph.Generator)
	ph.Held, ph.Verdict = verdict(ph, r.p99, r.maxErr, ctx.Err() != nil)
	return ph
}

// verdict decides whether a phase held the service-level objective: every scheduled request
// sent, p99 latency (from the scheduled time) at most p99, and at most maxErr of the requests
// failed.
func verdict(ph Phase, p99 time.Duration, maxErr float64, interrupted bool) (bool, string) {
	limit := ms(p99)
	switch {
	case interrupted:
		return false, "interrupted"
	case ph.Total.Requests == 0:
		return false, "no request answered"
	case ph.ErrorRate > maxErr:
		return false, fmt.Sprintf("missed: %s of requests failed, above %s", percent(ph.ErrorRate), percent(maxErr))
	case ph.Total.Latency.P99Ms > limit:
		return false, fmt.Sprintf("missed: p99 %.1f ms, above %.0f ms", ph.Total.Latency.P99Ms, limit)
	}
	return true, fmt.Sprintf("held: p99 %.1f ms ≤ %.0f ms, %s failed ≤ %s", ph.Total.Latency.P99Ms, limit, percent(ph.ErrorRate), percent(maxErr))
}

func percent(f float64) string {
	return fmt.Sprintf("%.3f%%", math.Round(f*1e5)/1e3)
}

// reportProgress prints a line every ten seconds while a phase runs; the returned function
// stops it.
func (r *runner) reportProgress(number int, sent *atomic.Int64, rec *phaseRecorder, inFlight *atomic.Int64) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		var slowBefore int64
		for (realClock{}).Sleep(ctx, 10*time.Second) {
			slow := rec.slow.Load()
			fmt.Fprintf(r.progress, "phase %d: %4.0fs sent %d, answered %d, failed %d, in flight %d, dropped %d, slower than %s in these 10 s: %d\n",
				number, time.Since(start).Seconds(), sent.Load(), rec.done.Load(), rec.failed.Load(), inFlight.Load(), rec.dropped.Load(),
				r.p99, slow-slowBefore)
			slowBefore = slow
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
