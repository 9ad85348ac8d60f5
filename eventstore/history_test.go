package eventstore_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ledger/ledger/eventstore"
)

func recordedVersions(evs []eventstore.RecordedEvent) []int64 {
	var vs []int64
	for _, e := range evs {
		vs = append(vs, e.Version)
	}
	return vs
}

func payloadVersions(evs []eventstore.RecordedEvent) []int64 {
	var vs []int64
	for _, e := range evs {
		vs = append(vs, e.Version)
	}
	return vs
}

// TestAuditReads: a stream by pages, through a global position, and up to a recorded time.
func TestAuditReads(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var mu sync.Mutex
	s := newStore(t, eventstore.WithClock(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Minute)
		return now
	}))
	ctx := context.Background()
	var cps []eventstore.Checkpoint // after each append to "a"
	for i := range 5 {
		res := appendOne(t, s, "a", eventstore.Exactly(int64(2*i)), ev("E", int64(2*i+1)), ev("E", int64(2*i+2)))
		cps = append(cps, res.Checkpoint)
		appendOne(t, s, "b", eventstore.Any(), ev("E", int64(i)))
	}

	var paged []int64
	for after := int64(0); ; {
		page, err := s.LoadPage(ctx, "a", after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 3 {
			t.Fatalf("page of %d events, limit 3", len(page))
		}
		paged = append(paged, recordedVersions(page)...)
		after = page[len(page)-1].Version
	}
	if len(paged) != 10 || paged[0] != 1 || paged[9] != 10 {
		t.Fatalf("pages gave versions %v", paged)
	}
	if _, err := s.LoadPage(ctx, "a", 0, 0); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("limit 0: %v", err)
	}

	for i, cp := range cps {
		evs, err := s.LoadThroughPosition(ctx, "a", cp.Position)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]int64, 2*(i+1))
		for v := range want {
			want[v] = int64(v + 1)
		}
		if got := payloadVersions(evs); !slices.Equal(got, want) {
			t.Fatalf("through position %d: versions %v, want %v", cp.Position, got, want)
		}
	}
	full, err := s.Load(ctx, "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	folded, err := s.LoadThroughPosition(ctx, "a", cps[len(cps)-1].Position)
	if err != nil || len(folded) != len(full) {
		t.Fatalf("%d payloads, %d events, %v", len(folded), len(full), err)
	}
	for i, p := range folded {
		e := full[i]
		if p.Version != e.Version || p.Type != e.Type || p.SchemaVersion != e.SchemaVersion || string(p.Payload) != string(e.Payload) {
			t.Fatalf("payload %+v of event %+v", p, e)
		}
	}
	if evs, _ := s.LoadThroughPosition(ctx, "a", 0); len(evs) != 0 {
		t.Fatalf("through position 0: %v", payloadVersions(evs))
	}

	// Appends to "a" were stamped at minutes 1, 3, 5, 7, 9 after the start ("b" took the others).
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		at   time.Time
		want []int64
	}{
		{start, nil},
		{start.Add(time.Minute - time.Microsecond), nil},
		{start.Add(time.Minute), []int64{1, 2}},
		{start.Add(4 * time.Minute), []int64{1, 2, 3, 4}},
		{start.Add(time.Hour), []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	} {
		evs, err := s.LoadRecordedBy(ctx, "a", tc.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := payloadVersions(evs); !slices.Equal(got, tc.want) {
			t.Errorf("recorded by %s: versions %v, want %v", tc.at, got, tc.want)
		}
	}
}

// TestReadStream: a stream event by event after a version and up to a limit, every field as
// the other reads give it; the event's bytes are the driver's until the callback returns, so a
// reader keeps a Clone; an error from the callback ends the read and comes back as it is.
func TestReadStream(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for i := range 4 {
		appendOne(t, s, "a", eventstore.Exactly(int64(2*i)), ev("E", int64(2*i+1)), ev("F", int64(2*i+2)))
		appendOne(t, s, "b", eventstore.Any(), ev("E", int64(i)))
	}
	full, err := s.Load(ctx, "a", 0)
	if err != nil || len(full) != 8 {
		t.Fatalf("load: %d events, %v", len(full), err)
	}
	for _, tc := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 0, []int64{1, 2, 3, 4, 5, 6, 7, 8}},
		{3, 0, []int64{4, 5, 6, 7, 8}},
		{3, 2, []int64{4, 5}},
		{6, 10, []int64{7, 8}},
		{8, 0, nil},
	} {
		var kept []eventstore.RecordedEvent
		var last *eventstore.RecordedEvent
		err := s.ReadStream(ctx, "a", tc.after, tc.limit, func(e *eventstore.RecordedEvent) error {
			if last != nil && last != e {
				t.Fatal("ReadStream handed out a new event for a row; it reuses one")
			}
			last = e
			kept = append(kept, e.Clone())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := recordedVersions(kept); !slices.Equal(got, tc.want) {
			t.Fatalf("after %d, limit %d: versions %v, want %v", tc.after, tc.limit, got, tc.want)
		}
		for _, e := range kept {
			want := full[e.Version-1]
			if e.Position != want.Position || e.TransactionID != want.TransactionID || e.StreamID != want.StreamID ||
				e.ID != want.ID || e.Type != want.Type || e.SchemaVersion != want.SchemaVersion ||
				string(e.Payload) != string(want.Payload) || string(e.RawMetadata) != string(want.RawMetadata) ||
				!e.RecordedAt.Equal(want.RecordedAt) || string(e.Hash) != string(want.Hash) || e.HashVersion != want.HashVersion {
				t.Fatalf("read %+v, loaded %+v", e, want)
			}
			if brk := eventstore.VerifyLink(prevHash(full, e.Version), e); brk != nil {
				t.Fatalf("v%d as read does not verify: %s", e.Version, brk.Reason)
			}
		}
	}
	stop := errors.New("enough")
	seen := 0
	if err := s.ReadStream(ctx, "a", 0, 0, func(*eventstore.RecordedEvent) error { seen++; return stop }); !errors.Is(err, stop) || seen != 1 {
		t.Fatalf("a callback's error: %v after %d events, want it back after one", err, seen)
	}
}

func prevHash(evs []eventstore.RecordedEvent, version int64) []byte {
	if version == 1 {
		return nil
	}
	return evs[version-2].Hash
}
