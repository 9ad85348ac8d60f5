package app

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Opposite pairs (A,B) and (B,A) locked by many goroutines at once never deadlock, and no two
// holders of one account's stripe ever overlap.
func TestAccountLocksExcludeAndNeverDeadlock(t *testing.T) {
	l := newAccountLocks()
	ids := make([]uuid.UUID, 6)
	for i := range ids {
		ids[i] = uuid.New()
	}
	inside := make([]atomic.Int32, len(ids))
	var wg sync.WaitGroup
	done := make(chan struct{})
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				a, b := (g+i)%len(ids), (g+2*i+1)%len(ids)
				unlock, err := l.lock(context.Background(), ids[a], ids[b])
				if err != nil {
					t.Error(err)
					return
				}
				for _, k := range []int{a, b} {
					if k == b && a == b {
						break
					}
					if inside[k].Add(1) != 1 {
						t.Error("two holders inside one account's lock")
					}
				}
				for _, k := range []int{a, b} {
					if k == b && a == b {
						break
					}
					inside[k].Add(-1)
				}
				unlock()
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("deadlock: lockers did not finish")
	}
}

func TestAccountLockGivesUpWithContextAndReleasesWhatItTook(t *testing.T) {
	l := newAccountLocks()
	a, b := uuid.New(), uuid.New()
	for l.stripe(b) == l.stripe(a) { // one stripe would be no test of releasing a's (and hang)
		b = uuid.New()
	}
	unlockB, err := l.lock(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.lock(ctx, a, b); err == nil {
		t.Fatal("took a lock that is held")
	}
	// a's stripe must have been released by the failed attempt.
	unlockA, err := l.lock(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	unlockA()
	unlockB()
}
