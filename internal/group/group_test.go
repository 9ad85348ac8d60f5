package group

import (
	"sync"
	"testing"
	"time"
)

type req struct {
	n    int
	done chan struct{}
}

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
			r := &req{n: i, done: make(chan struct{})}
			if !b.Do(r, r.done, nil, handle) {
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
	r := &req{n: 9, done: make(chan struct{})}
	b.Do(r, r.done, nil, handle)
	if len(groups) != 1 || len(groups[0]) != 1 {
		t.Errorf("a lone request was handled as %v", groups)
	}
}

func TestStopEndsTheWait(t *testing.T) {
	b := New[*req](1, 8)
	release := b.Hold()
	defer release()
	stop := make(chan struct{})
	r := &req{done: make(chan struct{})}
	got := make(chan bool)
	go func() { got <- b.Do(r, r.done, stop, func([]*req) { t.Error("handled while every slot was held") }) }()
	waitQueued(t, b, 1)
	close(stop)
	if <-got {
		t.Error("Do reported its request done after stop")
	}
	if b.Queued() != 1 {
		t.Error("a stopped request must stay queued for whoever handles it next")
	}
}
