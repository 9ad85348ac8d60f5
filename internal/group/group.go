// Package group lets concurrent callers share one round trip to the database: group commit for
// appends, grouped reads for the read models. A caller queues its request, and whichever
// caller gets one of a few slots takes the queue's head and handles it as one group. There is
// no background goroutine and no waiting for company: under low load a group is one request
// and costs what the request cost alone; under high load the requests that arrive while the
// slots are busy all go into the next group, so the round trips per request fall as the load
// rises.
package group

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Request is what a Batcher groups.
type Request interface {
	// Context is the caller's; a request whose context has ended is abandoned, not handled.
	Context() context.Context
	// Done is closed once the request is finished, handled or abandoned.
	Done() <-chan struct{}
	// Abandon finishes the request with err without handling it.
	Abandon(err error)
}

// Batcher groups requests of type R.
type Batcher[R Request] struct {
	slots chan struct{}
	size  int

	mu    sync.Mutex
	queue []R

	groups, handled atomic.Uint64
}

// New returns a Batcher with slots groups in flight at once and at most size requests in one.
func New[R Request](slots, size int) *Batcher[R] {
	return &Batcher[R]{slots: make(chan struct{}, max(1, slots)), size: max(1, size)}
}

// Do queues r and returns true once r is finished, or false as soon as stop is closed (nil:
// never). While r waits, the caller may get a slot and then hands the queue's head to handle,
// which must finish every request it is given (its own included, when it is there). Requests
// whose caller has gone meanwhile are abandoned with their context's error instead; a caller
// that stops leaves r queued or in a group, to be abandoned or handled unseen.
func (b *Batcher[R]) Do(r R, stop <-chan struct{}, handle func(group []R)) bool {
	done := r.Done()
	b.mu.Lock()
	b.queue = append(b.queue, r)
	b.mu.Unlock()
	for {
		select {
		case <-done:
			return true
		default:
		}
		select {
		case <-done:
			return true
		case <-stop:
			return false
		case b.slots <- struct{}{}:
			group := b.take()
			if len(group) > 0 {
				b.handle(group, handle)
			}
			<-b.slots
			if len(group) == 0 {
				// The queue was empty, so r is in a group being handled right now.
				select {
				case <-done:
					return true
				case <-stop:
					return false
				}
			}
		}
	}
}

// handle abandons the requests whose caller has gone and hands the others to fn as one group.
func (b *Batcher[R]) handle(taken []R, fn func(group []R)) {
	group := taken[:0]
	for _, r := range taken {
		if err := r.Context().Err(); err != nil {
			r.Abandon(err)
			continue
		}
		group = append(group, r)
	}
	if len(group) == 0 {
		return
	}
	b.groups.Add(1)
	b.handled.Add(uint64(len(group)))
	fn(group)
}

// Ending says which of its requests' deadlines a group's work ends at.
type Ending int

const (
	// FirstDeadline ends the work when the earliest deadline passes: work whose effect no
	// caller may get after it has given up, such as a commit.
	FirstDeadline Ending = iota
	// LastDeadline ends the work when the latest deadline passes: work that serves whoever
	// still waits, such as a read.
	LastDeadline
)

// Context returns the context to handle group in: with the values of the first request's
// context, not cancelled when a caller goes away (that must not fail the others), and ending
// at the group's first or last deadline, and at the latest after limit.
func Context[R Request](group []R, ending Ending, limit time.Duration) (context.Context, context.CancelFunc) {
	end := time.Now().Add(limit)
	var chosen time.Time
	for _, r := range group {
		d, ok := r.Context().Deadline()
		switch {
		case !ok && ending == LastDeadline:
			d = end // a caller without a deadline waits as long as limit allows
		case !ok:
			continue
		}
		if chosen.IsZero() || (ending == FirstDeadline && d.Before(chosen)) || (ending == LastDeadline && d.After(chosen)) {
			chosen = d
		}
	}
	if !chosen.IsZero() && chosen.Before(end) {
		end = chosen
	}
	return context.WithDeadline(context.WithoutCancel(group[0].Context()), end)
}

// Stats returns how many groups were handled and how many requests they held.
func (b *Batcher[R]) Stats() (groups, requests uint64) {
	return b.groups.Load(), b.handled.Load()
}

// take removes up to size requests from the head of the queue.
func (b *Batcher[R]) take() []R {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.queue), b.size)
	group := slices.Clone(b.queue[:n])
	b.queue = slices.Delete(b.queue, 0, n)
	return group
}

// Queued returns how many requests wait for a slot.
func (b *Batcher[R]) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// Hold takes every slot, so that requests queue up until release is called. Tests use it to
// make a group of a known size.
func (b *Batcher[R]) Hold() (release func()) {
	for range cap(b.slots) {
		b.slots <- struct{}{}
	}
	return func() {
		for range cap(b.slots) {
			<-b.slots
		}
	}
}
