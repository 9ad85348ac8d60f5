package app

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Read grouping defaults: how many statements reading read models may run at once, and the
// most accounts one of them reads.
const (
	defaultReadSlots = 4
	defaultReadSize  = 64
	// readGroupTimeout bounds one group's statement. A group is not tied to any one caller's
	// context: a caller that goes away must not fail the reads of the others.
	readGroupTimeout = 10 * time.Second
)

// readGroup lets concurrent reads of the read models share one statement, as group commit
// lets appends share a transaction: a read queues its account, and whichever reader gets a
// statement slot reads every queued account at once. Under low load a group holds one read and
// nobody waits for anybody; under high load the reads that arrive while the slots are busy
// go into the next statement together, so the round trips per read fall as the load rises.
// Every read still runs its statement after it was called, so it sees every command that
// returned before.
type readGroup struct {
	run   func(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*readModels, error)
	slots chan struct{}
	size  int

	mu    sync.Mutex
	queue []*readRequest

	groups, grouped atomic.Uint64
}

func newReadGroup(slots, size int, run func(context.Context, []uuid.UUID) (map[uuid.UUID]*readModels, error)) *readGroup {
	return &readGroup{run: run, slots: make(chan struct{}, max(1, slots)), size: max(1, size)}
}

// readRequest is one read on its way through a group.
type readRequest struct {
	ctx  context.Context
	id   uuid.UUID
	res  *readModels
	err  error
	done chan struct{} // closed once res or err is set
}

// read returns the account's row, read by a statement that started after read was called.
func (g *readGroup) read(ctx context.Context, id uuid.UUID) (*readModels, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &readRequest{ctx: ctx, id: id, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, r)
	g.mu.Unlock()
	for {
		select {
		case <-r.done:
			return r.res, r.err
		default:
		}
		select {
		case <-r.done:
			return r.res, r.err
		case <-ctx.Done():
			// The request stays queued or in flight; whoever reads it finishes it unseen.
			return nil, ctx.Err()
		case g.slots <- struct{}{}:
			group := g.take()
			if len(group) > 0 {
				g.readAll(group)
			}
			<-g.slots
			if len(group) == 0 {
				// The queue was empty, so ours is in a group being read right now.
				select {
				case <-r.done:
					return r.res, r.err
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		}
	}
}

// take removes up to size requests from the queue, finishing those whose caller has gone.
func (g *readGroup) take() []*readRequest {
	g.mu.Lock()
	n := min(len(g.queue), g.size)
	taken := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	g.mu.Unlock()
	group := taken[:0]
	for _, r := range taken {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		group = append(group, r)
	}
	return group
}

// readAll reads the accounts of group in one statement and finishes every request.
func (g *readGroup) readAll(group []*readRequest) {
	g.groups.Add(1)
	g.grouped.Add(uint64(len(group)))
	ids := make([]uuid.UUID, 0, len(group))
	seen := make(map[uuid.UUID]bool, len(group))
	for _, r := range group {
		if !seen[r.id] {
			seen[r.id] = true
			ids = append(ids, r.id)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(group[0].ctx), readGroupTimeout)
	defer cancel()
	rows, err := g.run(ctx, ids)
	for _, r := range group {
		if err != nil {
			r.err = err
		} else {
			row := *rows[r.id] // each caller gets its own copy
			r.res = &row
		}
		close(r.done)
	}
}
