package eventstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
)

// appendOutcome is what one append came to.
type appendOutcome struct {
	res eventstore.AppendResult
	err error
}

// appendTogether runs the appends at once while the store's group writers are held, and lets
// the writers go only when every append is queued, so that they take them up together. It
// returns each append's outcome by name, and the store's stats from just before the release.
func appendTogether(t *testing.T, s *eventstore.Store, appends map[string][]eventstore.StreamAppend) (map[string]appendOutcome, eventstore.Stats) {
	t.Helper()
	release := eventstore.HoldGroupWriters(s)
	got := make(map[string]appendOutcome, len(appends))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, a := range appends {
		wg.Go(func() {
			res, err := s.Append(context.Background(), a)
			mu.Lock()
			got[name] = appendOutcome{res, err}
			mu.Unlock()
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for eventstore.QueuedAppends(s) < len(appends) {
		if time.Now().After(deadline) {
			release()
			t.Fatalf("%d appends queued, want %d", eventstore.QueuedAppends(s), len(appends))
		}
		time.Sleep(time.Millisecond)
	}
	before := s.Stats()
	release()
	wg.Wait()
	return got, before
}

// One group transaction carries appends with different outcomes: each append keeps its own.
// Two appends to one stream chain onto each other, a stale expectation is refused alone, and
// an append that breaks a constraint (an event id already in the log) fails alone, without
// taking the group's other appends with it.
func TestGroupCommitKeepsEachAppendsOutcome(t *testing.T) {
	s := newStore(t, eventstore.WithGroupCommit(1, 64))
	ctx := context.Background()
	appendOne(t, s, "shared", eventstore.NoStream(), ev("Opened", 1))
	appendOne(t, s, "dup-source", eventstore.NoStream(), ev("Opened", 2))
	dupID := uuid.New()
	if _, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "dup-source", Expected: eventstore.Exactly(1),
		Events: []eventstore.EventData{{ID: dupID, Type: "Moved", SchemaVersion: 1, Payload: amount{Amount: 3}}}}}); err != nil {
		t.Fatal(err)
	}

	appends := map[string][]eventstore.StreamAppend{
		"any-1":    {{StreamID: "shared", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Moved", 10)}}},
		"any-2":    {{StreamID: "shared", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Moved", 11), ev("Moved", 12)}}},
		"stale":    {{StreamID: "shared", Expected: eventstore.Exactly(0), Events: []eventstore.EventData{ev("Moved", 13)}}},
		"two":      {{StreamID: "a", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 14)}}, {StreamID: "b", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 15)}}},
		"dup":      {{StreamID: "c", Expected: eventstore.NoStream(), Events: []eventstore.EventData{{ID: dupID, Type: "Opened", SchemaVersion: 1, Payload: amount{Amount: 16}}}}},
		"new-solo": {{StreamID: "d", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 17)}}},
	}
	got, before := appendTogether(t, s, appends)
	for _, name := range []string{"any-1", "any-2", "two", "new-solo"} {
		if got[name].err != nil {
			t.Errorf("%s: %v", name, got[name].err)
		}
	}
	var ce *eventstore.ConcurrencyError
	if err := got["stale"].err; !errors.As(err, &ce) || ce.StreamID != "shared" {
		t.Errorf("stale: %v, want a concurrency error on shared", err)
	}
	if err := got["dup"].err; !errors.Is(err, eventstore.ErrDuplicateEvent) {
		t.Errorf("dup: %v, want ErrDuplicateEvent", err)
	}
	// The two appends to "shared" chained in some order: versions 2 and 3..4.
	v1, v2 := got["any-1"].res.Version("shared"), got["any-2"].res.Version("shared")
	if !(v1 == 2 && v2 == 4) && !(v1 == 4 && v2 == 3) {
		t.Errorf("shared versions after the two appends: %d and %d", v1, v2)
	}
	if got["two"].res.Version("a") != 1 || got["two"].res.Version("b") != 1 {
		t.Errorf("two streams: %+v", got["two"].res)
	}
	if st := s.Stats(); st.Groups == before.Groups || st.GroupedAppends-before.GroupedAppends < uint64(len(appends)) {
		t.Errorf("the appends were not written as one group: before %+v, after %+v", before, st)
	}
	for _, stream := range []string{"shared", "a", "b", "d", "dup-source"} {
		evs, err := s.Load(ctx, stream, 0)
		if err != nil {
			t.Fatal(err)
		}
		if br := verifyChain(evs); br != nil {
			t.Errorf("%s: chain broken: %+v", stream, br)
		}
		for i, e := range evs {
			if e.Version != int64(i+1) {
				t.Errorf("%s: event %d has version %d", stream, i, e.Version)
			}
		}
	}
	if evs, _ := s.Load(ctx, "c", 0); len(evs) != 0 {
		t.Errorf("the refused append wrote %d events to c", len(evs))
	}
	// Each append's checkpoint is its own last event's place in the log.
	for _, name := range []string{"any-1", "any-2", "two", "new-solo"} {
		cp := got[name].res.Checkpoint
		if cp.Position == 0 || cp.TransactionID == 0 {
			t.Errorf("%s: no checkpoint: %+v", name, cp)
		}
	}
	if got["any-1"].res.Checkpoint == got["new-solo"].res.Checkpoint {
		t.Error("two appends of one group report the same checkpoint")
	}
}

// A caller's deadline bounds its append, however long the group it is in is held up, and its
// group's transaction ends at its members' earliest deadline, so that nothing is committed for
// a caller that has given up. The stream lock held elsewhere stands for a stalled database:
// the append to the locked stream returns at its deadline and leaves nothing behind, while the
// other append of its group, with time left, is written alone and does not wait for the lock.
func TestGroupCommitEndsAtTheFirstDeadline(t *testing.T) {
	s := newStore(t, eventstore.WithGroupCommit(1, 64))
	ctx := context.Background()
	appendOne(t, s, "stalled", eventstore.NoStream(), ev("Opened", 1))
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(1279607885, hashtext('stalled'))`); err != nil {
		t.Fatal(err)
	}
	var unlockOnce sync.Once
	unlock := func() { unlockOnce.Do(func() { _ = tx.Rollback(ctx) }) }
	defer unlock()
	// Without the bound the stalled append would wait for the lock: let go of it in the end.
	defer time.AfterFunc(5*time.Second, unlock).Stop()

	const short = 300 * time.Millisecond
	type outcome struct {
		err  error
		took time.Duration
	}
	run := func(stream string, timeout time.Duration, out chan<- outcome) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		began := time.Now()
		_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: stream, Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Moved", 2)}}})
		out <- outcome{err, time.Since(began)}
	}
	release := eventstore.HoldGroupWriters(s)
	stalled, free := make(chan outcome, 1), make(chan outcome, 1)
	go run("stalled", short, stalled)
	go run("free", time.Minute, free)
	for eventstore.QueuedAppends(s) != 2 {
		time.Sleep(time.Millisecond)
	}
	release()
	st := <-stalled
	if !errors.Is(st.err, context.DeadlineExceeded) || st.took > short+500*time.Millisecond {
		t.Errorf("append to the stalled stream: %v after %v; want its deadline's error at %v", st.err, st.took, short)
	}
	fr := <-free
	if fr.err != nil || fr.took > short+2*time.Second {
		t.Errorf("append to the free stream: %v after %v; want it written alone once its group failed", fr.err, fr.took)
	}
	unlock()
	if v, err := head(ctx, s, "stalled"); err != nil || v != 1 {
		t.Errorf("stalled stream at version %d (%v) after the lock was let go; want 1: nothing of the late append", v, err)
	}
}

// A caller that waits for a group writer leaves at its deadline, and its append, abandoned,
// is never written.
func TestGroupCommitCallerLeavesTheQueueAtItsDeadline(t *testing.T) {
	s := newStore(t, eventstore.WithGroupCommit(1, 64))
	release := eventstore.HoldGroupWriters(s)
	var releaseOnce sync.Once
	defer releaseOnce.Do(release)
	defer time.AfterFunc(5*time.Second, func() { releaseOnce.Do(release) }).Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "queued", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 1)}}})
	if took := time.Since(began); !errors.Is(err, context.DeadlineExceeded) || took > time.Second {
		t.Errorf("append queued behind busy writers: %v after %v; want its deadline's error at 200ms", err, took)
	}
	releaseOnce.Do(release)
	// The next append takes the queue's head, the abandoned one, and drops it.
	appendOne(t, s, "other", eventstore.NoStream(), ev("Opened", 2))
	if v, err := head(context.Background(), s, "queued"); err != nil || v != 0 {
		t.Errorf("abandoned append's stream at version %d (%v), want none", v, err)
	}
}
