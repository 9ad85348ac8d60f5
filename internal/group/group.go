// Package group lets concurrent callers share one round trip to the database: group commit for
// appends, grouped reads for the read models. A caller queues its request, and whichever
// caller gets one of a few slots takes the queue's head and handles it as one group. There is
// no background goroutine and no waiting for company: under low load a group is one request
// and costs what the request cost alone; under high load the requests that arrive while the
// slots are busy all go into the next group, so the round trips per request fall as the load
// rises.
package group

import (
	"slices"
	"sync"
)

// Batcher groups requests of type R.
type Batcher[R any] struct {
	slots chan struct{}
	size  int

	mu    sync.Mutex
	queue []R
}

// New returns a Batcher with slots groups in flight at once and at most size requests in one.
func New[R any](slots, size int) *Batcher[R] {
	return &Batcher[R]{slots: make(chan struct{}, max(1, slots)), size: max(1, size)}
}

// Do queues r and returns true once done is closed, or false as soon as stop is (nil: never).
// While r waits, the caller may get a slot and then hands the queue's head to handle, which
// must close the done channel of every request it is given (its own included, when it is
// there). A caller that stops leaves r queued or in a group: handle must cope with requests
// whose caller has gone.
func (b *Batcher[R]) Do(r R, done, stop <-chan struct{}, handle func(group []R)) bool {
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
				handle(group)
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
