package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/pgtest"
)

func TestLagPollWait(t *testing.T) {
	for _, tc := range []struct{ lag, want time.Duration }{
		{0, time.Millisecond},
		{5 * time.Millisecond, time.Millisecond},
		{30 * time.Millisecond, 3 * time.Millisecond},
		{200 * time.Millisecond, 20 * time.Millisecond},
		{10 * time.Second, 50 * time.Millisecond},
	} {
		if got := lagPollWait(tc.lag); got != tc.want {
			t.Errorf("lagPollWait(%s) = %s, want %s", tc.lag, got, tc.want)
		}
	}
}

// fakeWorld is a database and a clock for the poller: the test sets the heads and the time;
// every look reads both at once, and the poller's clock reads the time of the latest look, so
// a lag is exactly the time of the look that saw a sample applied less the sample's 200.
type fakeWorld struct {
	mu    sync.Mutex
	state map[uuid.UUID]accountHeads
	at    time.Time // what the next look sees
	seen  time.Time // what the latest look saw
	looks int
	asked [][]uuid.UUID
	err   error
}

func (w *fakeWorld) heads(ctx context.Context, accounts []uuid.UUID) ([]accountHeads, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.looks++
	w.seen = w.at
	w.asked = append(w.asked, append([]uuid.UUID(nil), accounts...))
	if w.err != nil {
		return nil, w.err
	}
	out := make([]accountHeads, len(accounts))
	for i, a := range accounts {
		h, ok := w.state[a]
		if !ok {
			h = accountHeads{stream: -1, applied: -1}
		}
		out[i] = h
	}
	return out, nil
}

func (w *fakeWorld) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// set changes the world at once: the time and some accounts' heads.
func (w *fakeWorld) set(at time.Time, heads map[uuid.UUID]accountHeads) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.at = at
	for a, h := range heads {
		w.state[a] = h
	}
}

// settle waits until the poller has begun two looks after the call: the first of them saw
// everything set and committed before the call, and had finished when the second began (the
// poller looks one look at a time).
func (w *fakeWorld) settle(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	want := w.looks + 2
	w.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		n := w.looks
		w.mu.Unlock()
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the poller made %d looks in 5 s, want %d", n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func newFakeProber(every int, accounts ...uuid.UUID) (*lagProber, *fakeWorld) {
	w := &fakeWorld{state: map[uuid.UUID]accountHeads{}}
	p := &lagProber{source: w, groups: []string{"balance_v1", "history_v2"}, every: int64(every), accounts: accounts, now: w.now}
	return p, w
}

// TestLagEachSampleFromItsOwn200: two samples in flight together, resolved by different looks
// of the one poller, the later one first: each lag runs from that sample's own 200 to the look
// that found it applied. The target is the stream version of the first look, not a later one:
// commands after the sampled one do not lengthen its lag. A sendCoin sample waits for both its
// accounts.
func TestLagEachSampleFromItsOwn200(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	p, w := newFakeProber(1, a, b, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

	w.set(t0.Add(time.Millisecond), map[uuid.UUID]accountHeads{
		a: {stream: 3, applied: 2},
		b: {stream: 7, applied: 6},
		c: {stream: 4, applied: 3},
	})
	ph := p.startPhase(ctx)
	ph.committed(t0, 0) // a buy by employee 0, answered at t0: target a@3
	w.settle(t)

	// Employee 0 buys again (stream 5) before the first buy is applied; a sendCoin from 1 to 2
	// is answered 5 ms after the first buy: target b@7, c@4.
	w.set(t0.Add(6*time.Millisecond), map[uuid.UUID]accountHeads{a: {stream: 5, applied: 2}})
	ph.committed(t0.Add(5*time.Millisecond), 1, 2)
	w.settle(t)

	// The sendCoin's sender is applied, its recipient not yet.
	w.set(t0.Add(20*time.Millisecond), map[uuid.UUID]accountHeads{b: {stream: 7, applied: 7}})
	w.settle(t)
	// Now the recipient too: the sendCoin is done, 35 ms after its 200.
	w.set(t0.Add(40*time.Millisecond), map[uuid.UUID]accountHeads{c: {stream: 4, applied: 4}})
	w.settle(t)
	// The first buy is applied (3, not yet the second buy's 5): 65 ms after its 200.
	w.set(t0.Add(65*time.Millisecond), map[uuid.UUID]accountHeads{a: {stream: 5, applied: 3}})

	rep := ph.report()
	if rep.Count != 2 || rep.Failed != 0 || rep.TimedOut != 0 || rep.Skipped != 0 {
		t.Fatalf("report %+v, want 2 samples measured", rep)
	}
	// Nearest rank over {35, 65}: p50 is the sendCoin's lag, max the first buy's.
	if rep.P50Ms != 35 || rep.MaxMs != 65 {
		t.Fatalf("lags p50 %g ms, max %g ms; want 35 (t0+40ms - t0+5ms) and 65 (t0+65ms - t0)", rep.P50Ms, rep.MaxMs)
	}
	// Both samples were read by the same looks while both were in flight.
	w.mu.Lock()
	defer w.mu.Unlock()
	together := false
	for _, ids := range w.asked {
		if len(ids) == 3 {
			together = true
		}
	}
	if !together {
		t.Errorf("no look asked for both samples' accounts at once: %v", w.asked)
	}
}

// TestLagSampling: one in every commands is sampled, across phases; commands by employees the
// database does not know are not.
func TestLagSampling(t *testing.T) {
	a := uuid.New()
	p, w := newFakeProber(3, a, uuid.Nil)
	w.set(time.Unix(100, 0), map[uuid.UUID]accountHeads{a: {stream: 1, applied: 1}})
	ph := p.startPhase(context.Background())
	for range 7 {
		ph.committed(time.Unix(99, 0), 0)
	}
	if rep := ph.report(); rep.Count != 2 {
		t.Fatalf("7 commands, 1 in 3 sampled: %d samples, want 2", rep.Count)
	}
	ph = p.startPhase(context.Background())
	for range 4 { // the 8th to the 11th command of the run: the 9th is sampled
		ph.committed(time.Unix(99, 0), 0)
	}
	ph.committed(time.Unix(99, 0), 1) // the 12th, sampled, by an employee without an account
	if rep := ph.report(); rep.Count != 1 {
		t.Fatalf("second phase: %d samples, want 1", rep.Count)
	}
}

// TestLagOutcomes: a sample not applied within lagProbeWithin times out, one whose account has
// no stream fails, more than lagMaxPending in flight are skipped, and an interrupt fails what
// is left.
func TestLagOutcomes(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		a := uuid.New()
		p, w := newFakeProber(1, a)
		t0 := time.Unix(1000, 0)
		w.set(t0, map[uuid.UUID]accountHeads{a: {stream: 2, applied: 1}})
		ph := p.startPhase(context.Background())
		ph.committed(t0, 0)
		w.settle(t)
		w.set(t0.Add(lagProbeWithin), nil)
		if rep := ph.report(); rep.TimedOut != 1 || rep.Count != 0 || rep.Failed != 0 {
			t.Fatalf("report %+v, want one timed out", rep)
		}
	})
	t.Run("no stream", func(t *testing.T) {
		p, _ := newFakeProber(1, uuid.New())
		ph := p.startPhase(context.Background())
		ph.committed(time.Unix(1000, 0), 0)
		if rep := ph.report(); rep.Failed != 1 || !strings.Contains(rep.LastErr, "no stream") {
			t.Fatalf("report %+v, want one failed for want of a stream", rep)
		}
	})
	t.Run("source fails", func(t *testing.T) {
		a := uuid.New()
		p, w := newFakeProber(1, a)
		w.err = errors.New("connection lost")
		ph := p.startPhase(context.Background())
		ph.committed(time.Unix(1000, 0), 0)
		if rep := ph.report(); rep.Failed != 1 || rep.LastErr != "connection lost" {
			t.Fatalf("report %+v, want one failed", rep)
		}
	})
	t.Run("skipped and interrupted", func(t *testing.T) {
		a := uuid.New()
		p, w := newFakeProber(1, a)
		w.set(time.Unix(1000, 0), map[uuid.UUID]accountHeads{a: {stream: 2, applied: 1}})
		ctx, cancel := context.WithCancel(context.Background())
		ph := p.startPhase(ctx)
		for range lagMaxPending + 5 {
			ph.committed(time.Unix(1000, 0), 0)
		}
		w.settle(t)
		cancel()
		rep := ph.report()
		if rep.Skipped != 5 || rep.Failed != lagMaxPending || rep.Count != 0 || rep.LastErr != context.Canceled.Error() {
			t.Fatalf("report %+v, want %d failed by the interrupt and 5 skipped", rep, lagMaxPending)
		}
	})
}

// TestPgLagSourceHeads reads heads from a real database: the stream version, the lowest version
// over the consumer groups, and -1 where a stream or a group's head is missing.
func TestPgLagSourceHeads(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.New(t, "loadtest_lag")
	done, behind, partial, missing := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	for id, v := range map[uuid.UUID]int64{done: 4, behind: 9, partial: 2} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO streams (stream_id, version) VALUES ($1, $2)`, domain.StreamID(id), v); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []struct {
		group string
		id    uuid.UUID
		v     int64
	}{
		{"g1", done, 4}, {"g2", done, 4}, {"other", done, 1},
		{"g1", behind, 9}, {"g2", behind, 7},
		{"g1", partial, 2},
	} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO projection_heads (consumer_group, account_id, version) VALUES ($1, $2, $3)`, h.group, h.id, h.v); err != nil {
			t.Fatal(err)
		}
	}
	src := &pgLagSource{pool: db.Pool, groups: []string{"g1", "g2"}}
	got, err := src.heads(ctx, []uuid.UUID{behind, missing, done, partial, done})
	if err != nil {
		t.Fatal(err)
	}
	want := []accountHeads{{9, 7}, {-1, -1}, {4, 4}, {2, -1}, {4, 4}}
	if len(got) != len(want) {
		t.Fatalf("heads = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("heads = %v, want %v", got, want)
		}
	}
}
