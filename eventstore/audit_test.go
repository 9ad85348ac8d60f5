package eventstore_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/eventstore"
)

func recordedVersions(evs []eventstore.RecordedEvent) []int64 {
	var vs []int64
	for _, e := range evs {
		vs = append(vs, e.Version)
	}
	return vs
}

func payloadVersions(evs []eventstore.PayloadEvent) []int64 {
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

// TestLogHeadStopsAtTheFence: the head is the last readable event, never one behind a
// transaction that is still open.
func TestLogHeadStopsAtTheFence(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if head, err := s.LogHead(ctx); err != nil || head != (eventstore.Checkpoint{}) {
		t.Fatalf("empty log: head %s, %v", head, err)
	}
	first := appendOne(t, s, "x", eventstore.NoStream(), ev("E", 1))
	readUntil(t, s, eventstore.Checkpoint{}, 10, 1)
	if head, err := s.LogHead(ctx); err != nil || head != first.Checkpoint {
		t.Fatalf("head %s, %v; want %s", head, err, first.Checkpoint)
	}

	inT1 := make(chan struct{})
	releaseT1 := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(releaseT1) }) }
	t.Cleanup(release) // an open transaction stalls every reader on the server: always end it
	t1Done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "t1", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("T1", 1)}}},
			eventstore.InTransaction(func(context.Context, pgx.Tx) error {
				close(inT1)
				<-releaseT1
				return nil
			}))
		t1Done <- err
	}()
	<-inT1
	later := appendOne(t, s, "t2", eventstore.NoStream(), ev("T2", 2))
	if head, err := s.LogHead(ctx); err != nil || later.Checkpoint.Before(head) || head == later.Checkpoint {
		t.Fatalf("head %s, %v, with an older transaction still open: it must stay before %s", head, err, later.Checkpoint)
	}
	release()
	if err := <-t1Done; err != nil {
		t.Fatal(err)
	}
	readUntil(t, s, first.Checkpoint, 10, 2)
	if head, err := s.LogHead(ctx); err != nil || head != later.Checkpoint {
		t.Fatalf("head %s, %v; want %s", head, err, later.Checkpoint)
	}
}

// TestVerifyLinkIsVerifyChain: checking a stream link by link finds what VerifyChain finds.
func TestVerifyLinkIsVerifyChain(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	withNote := ev("E", 3)
	withNote.Payload = amount{Amount: 3, Note: "<b>ünïcode & \"quotes\"\n</b>"}
	appendOne(t, s, "chain", eventstore.NoStream(), ev("E", 1), ev("E", 2), withNote, ev("E", 4))
	evs, err := s.Load(ctx, "chain", 0)
	if err != nil {
		t.Fatal(err)
	}
	links := func(evs []eventstore.RecordedEvent) *eventstore.ChainBreak {
		var prev []byte
		for _, e := range evs {
			if brk := eventstore.VerifyLink(prev, e); brk != nil {
				return brk
			}
			prev = e.Hash
		}
		return nil
	}
	if brk := links(evs); brk != nil {
		t.Fatalf("untouched chain broken at %+v", brk)
	}
	for i := range evs {
		bad := append([]eventstore.RecordedEvent(nil), evs...)
		bad[i].Payload = []byte(`{"amount": 300}`)
		got, want := links(bad), eventstore.VerifyChain(bad)
		if got == nil || want == nil || *got != *want || got.Version != int64(i+1) {
			t.Fatalf("edited event %d: VerifyLink says %+v, VerifyChain %+v", i+1, got, want)
		}
	}
	bad := append([]eventstore.RecordedEvent(nil), evs...)
	bad[1].RawMetadata = []byte(`{"actor": 1.5}`)
	if brk := links(bad); brk == nil || brk.Version != 2 {
		t.Fatalf("metadata with a fraction: %+v", brk)
	}
}

// WaitSettled waits for every transaction below the given id to end, and no longer.
func TestWaitSettledWaitsForOlderTransactions(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var held uint64
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitSettled(ctx, held); err != nil {
		t.Fatalf("waiting for the transactions below the held one: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := s.WaitSettled(short, held+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSettled past a running transaction returned %v, want the deadline", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitSettled(ctx, held+1); err != nil {
		t.Fatalf("after the transaction ended: %v", err)
	}
}
