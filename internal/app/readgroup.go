package app

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/internal/group"
)

// Read grouping defaults: how many statements reading read models may run at once, and the
// most accounts one of them reads.
const (
	defaultReadSlots = 4
	defaultReadSize  = 64
	// readGroupTimeout bounds the statement of a group whose callers have no deadline. A group
	// is not tied to any one caller's context: a caller that goes away must not fail the reads
	// of the others. It ends at its callers' latest deadline: then nobody waits for it.
	readGroupTimeout = 10 * time.Second
)

// readGroup lets concurrent reads of the read models share one statement, as group commit
// lets appends share a transaction (see package group): a read queues its account, and
// whichever reader gets a statement slot reads every queued account at once. Every read still
// runs in a statement that started after it was called, so it sees every command that returned
// before.
type readGroup struct {
	run   func(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*readModels, error)
	batch *group.Batcher[*readRequest]
}

func newReadGroup(slots, size int, run func(context.Context, []uuid.UUID) (map[uuid.UUID]*readModels, error)) *readGroup {
	return &readGroup{run: run, batch: group.New[*readRequest](slots, size)}
}

// readRequest is one read on its way through a group.
type readRequest struct {
	ctx  context.Context
	id   uuid.UUID
	res  *readModels
	err  error
	done chan struct{} // closed once res or err is set
}

// The request as a group.Request.
func (r *readRequest) Context() context.Context { return r.ctx }
func (r *readRequest) Done() <-chan struct{}    { return r.done }
func (r *readRequest) Abandon(err error)        { r.err = err; close(r.done) }

// read returns the account's row, read by a statement that started after read was called.
func (g *readGroup) read(ctx context.Context, id uuid.UUID) (*readModels, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &readRequest{ctx: ctx, id: id, done: make(chan struct{})}
	if !g.batch.Do(r, ctx.Done(), g.readAll) {
		// The request stays queued or in flight; whoever reads it finishes it unseen.
		return nil, ctx.Err()
	}
	return r.res, r.err
}

// readAll reads the accounts of a group in one statement and finishes every request.
func (g *readGroup) readAll(reads []*readRequest) {
	ids := make([]uuid.UUID, 0, len(reads))
	seen := make(map[uuid.UUID]bool, len(reads))
	for _, r := range reads {
		if !seen[r.id] {
			seen[r.id] = true
			ids = append(ids, r.id)
		}
	}
	ctx, cancel := group.Context(reads, group.LastDeadline, readGroupTimeout)
	defer cancel()
	rows, err := g.run(ctx, ids)
	for _, r := range reads {
		if err != nil {
			r.err = err
		} else {
			row := *rows[r.id] // each caller gets its own copy
			r.res = &row
		}
		close(r.done)
	}
}
