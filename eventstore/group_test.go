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

	type outcome struct {
		name string
		res  eventstore.AppendResult
		err  error
	}
	appends := map[string][]eventstore.StreamAppend{
		"any-1":    {{StreamID: "shared", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Moved", 10)}}},
		"any-2":    {{StreamID: "shared", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Moved", 11), ev("Moved", 12)}}},
		"stale":    {{StreamID: "shared", Expected: eventstore.Exactly(0), Events: []eventstore.EventData{ev("Moved", 13)}}},
		"two":      {{StreamID: "a", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 14)}}, {StreamID: "b", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 15)}}},
		"dup":      {{StreamID: "c", Expected: eventstore.NoStream(), Events: []eventstore.EventData{{ID: dupID, Type: "Opened", SchemaVersion: 1, Payload: amount{Amount: 16}}}}},
		"new-solo": {{StreamID: "d", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("Opened", 17)}}},
	}
	release := eventstore.HoldGroupWriters(s)
	out := make(chan outcome, len(appends))
	var wg sync.WaitGroup
	for name, a := range appends {
		wg.Go(func() {
			res, err := s.Append(ctx, a)
			out <- outcome{name, res, err}
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
	close(out)
	got := map[string]outcome{}
	for o := range out {
		got[o.name] = o
	}
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
