package app

import (
	"context"
	"encoding/binary"
	"slices"

	"github.com/google/uuid"
)

// accountLocks queues commands on the same account inside this process, so that they take turns
// instead of racing for the stream version and retrying. Conflicts with other processes are
// still caught by the event store's optimistic versioning and retried. A transfer holds both
// parties' stripes (an incoming credit moves the recipient's stream too, and would make the
// recipient's own purchases retry); stripes are always taken in index order, so they cannot
// deadlock.
type accountLocks struct {
	stripes [1024]chan struct{}
}

func newAccountLocks() *accountLocks {
	l := &accountLocks{}
	for i := range l.stripes {
		l.stripes[i] = make(chan struct{}, 1)
	}
	return l
}

// stripe is the index of id's stripe.
func (l *accountLocks) stripe(id uuid.UUID) int {
	return int(binary.BigEndian.Uint64(id[8:]) % uint64(len(l.stripes)))
}

// lock takes the stripes of ids in index order, or gives up when ctx ends; the returned func
// releases them.
func (l *accountLocks) lock(ctx context.Context, ids ...uuid.UUID) (func(), error) {
	idx := make([]int, 0, len(ids))
	for _, id := range ids {
		if i := l.stripe(id); !slices.Contains(idx, i) {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	release := func(n int) {
		for _, i := range idx[:n] {
			<-l.stripes[i]
		}
	}
	for n, i := range idx {
		select {
		case l.stripes[i] <- struct{}{}:
		case <-ctx.Done():
			release(n)
			return nil, ctx.Err()
		}
	}
	return func() { release(len(idx)) }, nil
}
