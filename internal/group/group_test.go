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
