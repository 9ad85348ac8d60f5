package app

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// fakeReads records the statements a readGroup runs.
type fakeReads struct {
	mu    sync.Mutex
	calls [][]uuid.UUID
	err   error
}

func (f *fakeReads) run(_ context.Context, ids []uuid.UUID) (map[uuid.UUID]*readModels, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, slices.Clone(ids))
	if f.err != nil {
		return nil, f.err
	}
	out := make(map[uuid.UUID]*readModels, len(ids))
	for i, id := range ids {
		out[id] = &readModels{head: int64(i + 1), coins: int64(id[15])}
	}
	return out, nil
}

// holdSlots takes every statement slot of g, so that reads queue up; the returned func
// gives them back.
func holdSlots(g *readGroup) func() { return g.batch.Hold() }

func waitQueued(t *testing.T, g *readGroup, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		queued := g.batch.Queued()
		if queued == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reads queued, want %d", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReadGroupSharesOneStatement(t *testing.T) {
	f := &fakeReads{}
	g := newReadGroup(2, 64, f.run)
	release := holdSlots(g)

	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	asked := []uuid.UUID{ids[0], ids[1], ids[2], ids[0], ids[1]} // two accounts read twice
	got := make([]*readModels, len(asked))
	errs := make([]error, len(asked))
	var wg sync.WaitGroup
	for i, id := range asked {
		wg.Go(func() { got[i], errs[i] = g.read(context.Background(), id) })
	}
	waitQueued(t, g, len(asked))
	release()
	wg.Wait()

	if len(f.calls) != 1 {
		t.Fatalf("%d statements for reads that waited together, want 1: %v", len(f.calls), f.calls)
	}
	read := slices.SortedFunc(slices.Values(f.calls[0]), uuidOrder)
	if want := slices.SortedFunc(slices.Values(ids), uuidOrder); !slices.Equal(read, want) {
		t.Errorf("statement read %v, want each account once: %v", read, want)
	}
	for i, id := range asked {
		if errs[i] != nil {
			t.Fatalf("read %d: %v", i, errs[i])
		}
		if got[i].coins != int64(id[15]) {
			t.Errorf("read %d of %s got the row of another account: %+v", i, id, got[i])
		}
	}
	if got[0] == got[3] {
		t.Error("two readers of one account share one row value; each must get its own copy")
	}
	if s, n := g.batch.Stats(); s != 1 || n != 5 {
		t.Errorf("counted %d statements carrying %d reads, want 1 and 5", s, n)
	}
}

func uuidOrder(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) }

func TestReadGroupAloneReadsAtOnce(t *testing.T) {
	f := &fakeReads{}
	g := newReadGroup(1, 64, f.run)
	for i := range 3 {
		if _, err := g.read(context.Background(), uuid.New()); err != nil {
			t.Fatal(err)
		}
		if len(f.calls) != i+1 {
			t.Fatalf("read %d: %d statements, want one per read when reads do not overlap", i, len(f.calls))
		}
	}
}

func TestReadGroupBoundsItsSize(t *testing.T) {
	f := &fakeReads{}
	g := newReadGroup(1, 2, f.run)
	release := holdSlots(g)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := g.read(context.Background(), uuid.New()); err != nil {
				t.Error(err)
			}
		})
	}
	waitQueued(t, g, 5)
	release()
	wg.Wait()
	for _, c := range f.calls {
		if len(c) > 2 {
			t.Errorf("a statement read %d accounts, bound is 2", len(c))
		}
	}
	if len(f.calls) != 3 {
		t.Errorf("%d statements for 5 reads of at most 2, want 3", len(f.calls))
	}
}

func TestReadGroupErrorsReachEveryReader(t *testing.T) {
	boom := errors.New("database went away")
	f := &fakeReads{err: boom}
	g := newReadGroup(1, 64, f.run)
	release := holdSlots(g)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = g.read(context.Background(), uuid.New()) })
	}
	waitQueued(t, g, 3)
	release()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("reader %d: %v, want the statement's error", i, err)
		}
	}
}

func TestReadGroupCallerThatLeavesDoesNotStopTheOthers(t *testing.T) {
	f := &fakeReads{}
	g := newReadGroup(1, 64, f.run)
	release := holdSlots(g)
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := g.read(ctx, uuid.New())
		gone <- err
	}()
	stay := uuid.New()
	var got *readModels
	var err error
	var wg sync.WaitGroup
	wg.Go(func() { got, err = g.read(context.Background(), stay) })
	waitQueued(t, g, 2)
	cancel()
	if e := <-gone; !errors.Is(e, context.Canceled) {
		t.Fatalf("cancelled reader: %v, want context.Canceled", e)
	}
	release()
	wg.Wait()
	if err != nil || got == nil || got.coins != int64(stay[15]) {
		t.Fatalf("remaining reader: %+v, %v", got, err)
	}
	for _, c := range f.calls {
		if len(c) != 1 || c[0] != stay {
			t.Errorf("statement read %v: the cancelled read should have been dropped", c)
		}
	}
}
