package group

import (
	"context"
	"sync"
	"testing"
	"time"
)

type req struct {
	n    int
	ctx  context.Context
	done chan struct{}
	err  error
}

func newReq(n int) *req { return &req{n: n, ctx: context.Background(), done: make(chan struct{})} }

func (r *req) Context() context.Context { return r.ctx }
func (r *req) Done() <-chan struct{}    { return r.done }
func (r *req) Abandon(err error)        { r.err = err; close(r.done) }

func waitQueued(t *testing.T, b *Batcher[*req], n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); b.Queued() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d queued, want %d", b.Queued(), n)
		}
	}
}

func TestRequestsThatWaitTogetherAreHandledTogether(t *testing.T) {
	b := New[*req](2, 3)
	var mu sync.Mutex
	var groups [][]int
	handle := func(g []*req) {
		mu.Lock()
		var ns []int
		for _, r := range g {
			ns = append(ns, r.n)
		}
		groups = append(groups, ns)
		mu.Unlock()
		for _, r := range g {
			close(r.done)
		}
	}
	release := b.Hold()
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			r := newReq(i)
			if !b.Do(r, nil, handle) {
				t.Error("Do returned false without a stop")
			}
		})
	}
	waitQueued(t, b, 5)
	release()
	wg.Wait()
	total := 0
	for _, g := range groups {
		if len(g) > 3 {
			t.Errorf("a group of %d, bound is 3", len(g))
		}
		total += len(g)
	}
	if total != 5 || len(groups) != 2 {
		t.Errorf("groups %v: want the 5 queued requests in 2 groups", groups)
	}

	// Alone, a request is handled at once, in a group of its own.
	groups = nil
	r := newReq(9)
	b.Do(r, nil, handle)
	if len(groups) != 1 || len(groups[0]) != 1 {
		t.Errorf("a lone request was handled as %v", groups)
	}
}

func TestStopEndsTheWait(t *testing.T) {
	b := New[*req](1, 8)
	release := b.Hold()
	defer release()
	stop := make(chan struct{})
	r := newReq(0)
	got := make(chan bool)
	go func() { got <- b.Do(r, stop, func([]*req) { t.Error("handled while every slot was held") }) }()
	waitQueued(t, b, 1)
	close(stop)
	if <-got {
		t.Error("Do reported its request done after stop")
	}
	if b.Queued() != 1 {
		t.Error("a stopped request must stay queued for whoever handles it next")
	}
}

func TestRequestsWhoseCallerHasGoneAreAbandoned(t *testing.T) {
	b := New[*req](1, 8)
	release := b.Hold()
	gone := newReq(1)
	ctx, cancel := context.WithCancel(context.Background())
	gone.ctx = ctx
	stop := make(chan struct{})
	go b.Do(gone, stop, nil)
	waitQueued(t, b, 1)
	close(stop) // its caller stops waiting, and its context ends
	cancel()
	release()
	var handled []int
	r := newReq(2)
	b.Do(r, nil, func(g []*req) {
		for _, q := range g {
			handled = append(handled, q.n)
			close(q.done)
		}
	})
	<-gone.done
	if gone.err != context.Canceled {
		t.Errorf("the gone request finished with %v, want context.Canceled", gone.err)
	}
	if len(handled) != 1 || handled[0] != 2 {
		t.Errorf("handled %v, want only the live request", handled)
	}
	if groups, requests := b.Stats(); groups != 1 || requests != 1 {
		t.Errorf("stats %d groups, %d requests; want 1 and 1 (the abandoned one is not counted)", groups, requests)
	}
}

// A group's context ends at its members' first or last deadline, or after the limit when that
// comes sooner (or no member has a deadline), and a member that goes away does not end it.
func TestContextEndsAtTheChosenDeadline(t *testing.T) {
	now := time.Now()
	in := func(d time.Duration) *req {
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(d))
		t.Cleanup(cancel)
		r := newReq(0)
		r.ctx = ctx
		return r
	}
	const limit = 10 * time.Second
	for _, tc := range []struct {
		name   string
		group  []*req
		ending Ending
		want   time.Duration
	}{
		{"first", []*req{in(2 * time.Second), in(time.Second), in(3 * time.Second)}, FirstDeadline, time.Second},
		{"last", []*req{in(2 * time.Second), in(time.Second), in(3 * time.Second)}, LastDeadline, 3 * time.Second},
		{"first, one without", []*req{newReq(0), in(2 * time.Second)}, FirstDeadline, 2 * time.Second},
		{"last, one without", []*req{in(2 * time.Second), newReq(0)}, LastDeadline, limit},
		{"none", []*req{newReq(0)}, FirstDeadline, limit},
		{"beyond the limit", []*req{in(time.Minute)}, FirstDeadline, limit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := Context(tc.group, tc.ending, limit)
			defer cancel()
			d, ok := ctx.Deadline()
			if want := now.Add(tc.want); !ok || d.Sub(want).Abs() > 100*time.Millisecond {
				t.Errorf("deadline %v (%v), want about %v", d.Sub(now), ok, tc.want)
			}
		})
	}
	parent, cancelParent := context.WithCancel(context.Background())
	r := newReq(0)
	r.ctx = parent
	ctx, cancel := Context([]*req{r}, FirstDeadline, limit)
	defer cancel()
	cancelParent()
	if ctx.Err() != nil {
		t.Errorf("a member that went away ended the group's context: %v", ctx.Err())
	}
}
