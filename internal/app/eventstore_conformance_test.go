package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/pgtest"
)

// The conformance suite of app.EventStore: what the application relies on of an event store.
// The PostgreSQL store passes it; so must any other.

func TestPostgresEventStoreConforms(t *testing.T) {
	for name, conform := range map[string]func(*testing.T, app.EventStore){
		"round trip and contiguous versions":          conformRoundTripAndContiguousVersions,
		"expected version rules":                      conformExpectedVersionRules,
		"concurrent appends to one stream":            conformConcurrentAppendsToOneStream,
		"multi-stream append is atomic":               conformMultiStreamAppendIsAtomic,
		"log reader waits for an out-of-order commit": conformReadLogWaitsForOutOfOrderCommit,
		"log pages": conformReadLogPages,
		"log walks": conformWalkLog,
		"snapshots": conformSnapshots,
	} {
		t.Run(name, func(t *testing.T) {
			db.Reset(t)
			conform(t, eventstore.New(db.Pool))
		})
	}
}

type amount struct {
	Amount int64  `json:"amount"`
	Note   string `json:"note,omitempty"`
}

func ev(typ string, n int64) eventstore.EventData {
	return eventstore.EventData{Type: typ, SchemaVersion: 1, Payload: amount{Amount: n},
		Metadata: eventstore.Metadata{Actor: "test", CorrelationID: fmt.Sprint("c", n)}}
}

func appendOne(t *testing.T, s app.EventStore, stream string, exp eventstore.ExpectedVersion, events ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), []eventstore.StreamAppend{{StreamID: stream, Expected: exp, Events: events}})
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}

// headOf returns the stream's version, 0 when it does not exist.
func headOf(ctx context.Context, s app.EventStore, stream string) (int64, error) {
	st, err := s.LoadState(ctx, stream)
	return st.Version, err
}

// eventsIn counts the stream's events.
func eventsIn(t *testing.T, s app.EventStore, stream string) int64 {
	t.Helper()
	evs, err := s.Load(context.Background(), stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(evs))
}

func sameJSON(a []byte, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

func conformRoundTripAndContiguousVersions(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	r1 := appendOne(t, s, "acc-1", eventstore.NoStream(), ev("Opened", 1), ev("Granted", 2))
	r2 := appendOne(t, s, "acc-1", eventstore.Exactly(2), ev("Granted", 3))
	if r1.Version("acc-1") != 2 || r2.Version("acc-1") != 3 {
		t.Fatalf("versions %d, %d; want 2, 3", r1.Version("acc-1"), r2.Version("acc-1"))
	}
	if !r1.Checkpoint.Before(r2.Checkpoint) {
		t.Fatalf("checkpoint %v not before %v", r1.Checkpoint, r2.Checkpoint)
	}
	evs, err := s.Load(ctx, "acc-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("loaded %d events, want 3", len(evs))
	}
	for i, e := range evs {
		if e.Version != int64(i+1) {
			t.Fatalf("event %d has version %d", i, e.Version)
		}
		var p amount
		if err := json.Unmarshal(e.Payload, &p); err != nil || p.Amount != int64(i+1) {
			t.Fatalf("payload %s: %v", e.Payload, err)
		}
		if md, err := e.MetadataOf(); err != nil || md.Actor != "test" {
			t.Fatalf("event %d metadata %s: %v", i, e.RawMetadata, err)
		}
		if e.SchemaVersion != 1 || e.ID == uuid.Nil || e.TransactionID == 0 || len(e.Hash) != 32 {
			t.Fatalf("event fields not recorded: %+v", e)
		}
		if e.ID.Version() != 7 {
			t.Fatalf("event id %s is not a UUIDv7", e.ID)
		}
	}
	tail, err := s.Load(ctx, "acc-1", 2)
	if err != nil || len(tail) != 1 || tail[0].Version != 3 {
		t.Fatalf("load after 2: %v %v", tail, err)
	}
	head, err := headOf(ctx, s, "acc-1")
	if err != nil || head != 3 {
		t.Fatalf("head = %d, %v; want 3", head, err)
	}
	if head, _ := headOf(ctx, s, "nobody"); head != 0 {
		t.Fatalf("head of a missing stream = %d", head)
	}
	// An explicit event id is kept.
	id := uuid.New()
	e := ev("Granted", 4)
	e.ID = id
	appendOne(t, s, "acc-1", eventstore.Any(), e)
	evs, _ = s.Load(ctx, "acc-1", 3)
	if evs[0].ID != id {
		t.Fatalf("event id %s, want %s", evs[0].ID, id)
	}
}

func conformExpectedVersionRules(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	appendOne(t, s, "a", eventstore.NoStream(), ev("E", 1))

	cases := []struct {
		name     string
		exp      eventstore.ExpectedVersion
		wantErr  bool
		wantActl int64
	}{
		{"no stream on an existing stream", eventstore.NoStream(), true, 1},
		{"exact but stale", eventstore.Exactly(0), true, 1},
		{"exact but ahead", eventstore.Exactly(5), true, 1},
		{"exact and right", eventstore.Exactly(1), false, 0},
		{"any", eventstore.Any(), false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, _ := headOf(ctx, s, "a")
			_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "a", Expected: c.exp, Events: []eventstore.EventData{ev("E", 9)}}})
			var ce *eventstore.ConcurrencyError
			if c.wantErr {
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v, want *ConcurrencyError", err)
				}
				if ce.StreamID != "a" || ce.Actual != before || ce.Expected != c.exp {
					t.Fatalf("error names %+v; want stream a, actual %d, expected %v", ce, before, c.exp)
				}
				if after, _ := headOf(ctx, s, "a"); after != before {
					t.Fatalf("refused append changed the head from %d to %d", before, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("append: %v", err)
			}
		})
	}
	// Any and NoStream both create a missing stream.
	appendOne(t, s, "fresh-any", eventstore.Any(), ev("E", 1))
	if h, _ := headOf(ctx, s, "fresh-any"); h != 1 {
		t.Fatalf("any on a new stream: head %d", h)
	}
	// Exactly(3) on a missing stream is a conflict naming actual 0, and leaves no head row.
	_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "ghost", Expected: eventstore.Exactly(3), Events: []eventstore.EventData{ev("E", 1)}}})
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) || ce.Actual != 0 {
		t.Fatalf("err = %v", err)
	}
	if h, _ := headOf(ctx, s, "ghost"); h != 0 {
		t.Fatal("a refused append created the stream")
	}
}

// 32 writers race on one stream with the same expected version: exactly one wins.
func conformConcurrentAppendsToOneStream(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	appendOne(t, s, "hot", eventstore.NoStream(), ev("E", 0))
	const writers = 32
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = s.Append(ctx, []eventstore.StreamAppend{{StreamID: "hot", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{ev("E", int64(i))}}})
		}()
	}
	close(start)
	wg.Wait()
	ok, conflicts := 0, 0
	for _, err := range errs {
		var ce *eventstore.ConcurrencyError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &ce):
			if ce.Actual != 2 || ce.StreamID != "hot" {
				t.Errorf("conflict names %+v, want actual 2", ce)
			}
			conflicts++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || conflicts != writers-1 {
		t.Fatalf("%d succeeded and %d conflicted; want 1 and %d", ok, conflicts, writers-1)
	}
	if n := eventsIn(t, s, "hot"); n != 2 {
		t.Fatalf("stream has %d events, want 2", n)
	}
}

func conformMultiStreamAppendIsAtomic(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	appendOne(t, s, "first", eventstore.NoStream(), ev("E", 1))
	appendOne(t, s, "second", eventstore.NoStream(), ev("E", 1), ev("E", 2))
	_, err := s.Append(ctx, []eventstore.StreamAppend{
		{StreamID: "first", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{ev("E", 2)}},
		{StreamID: "second", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{ev("E", 3)}},
	})
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) || ce.StreamID != "second" || ce.Actual != 2 {
		t.Fatalf("err = %v, want a conflict on second at 2", err)
	}
	if h, _ := headOf(ctx, s, "first"); h != 1 {
		t.Fatalf("first moved to %d", h)
	}
	if n := eventsIn(t, s, "first"); n != 1 {
		t.Fatalf("first has %d events", n)
	}
	// A failing in-transaction hook also leaves nothing behind.
	boom := errors.New("boom")
	_, err = s.Append(ctx, []eventstore.StreamAppend{{StreamID: "first", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{ev("E", 2)}}},
		eventstore.InTransaction(func(context.Context, pgx.Tx) error { return boom }))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if h, _ := headOf(ctx, s, "first"); h != 1 {
		t.Fatalf("first moved to %d after a failed hook", h)
	}
}

// A reader of the global log must wait for a transaction that started earlier and commits
// later, instead of reading past it and skipping its events.
func conformReadLogWaitsForOutOfOrderCommit(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	base := appendOne(t, s, "warmup", eventstore.NoStream(), ev("E", 0))
	page := pgtest.ReadLogUntil(t, s, eventstore.Checkpoint{}, 100, 1)
	cp := page[0].Checkpoint()

	inT1 := make(chan struct{})
	releaseT1 := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(releaseT1) }) }
	// The fence is server-wide: a transaction left open by a failing test would stall every
	// reader of every test database, so it is released whatever happens.
	t.Cleanup(release)
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
	t2 := appendOne(t, s, "t2", eventstore.NoStream(), ev("T2", 2))
	if t2.Checkpoint.Position <= base.Checkpoint.Position {
		t.Fatal("positions out of order")
	}

	// T2 has committed, but T1 (older transaction) is open: the reader sees nothing.
	for range 3 {
		page, err := s.ReadLog(ctx, cp, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != 0 {
			t.Fatalf("read %d events past an open older transaction: first %s", len(page), page[0].Type)
		}
	}
	if walked := walk(t, s, eventstore.LogRange{After: cp, Until: eventstore.EndOfLog}, 100); len(walked) != 0 {
		t.Fatalf("walked %d events past an open older transaction", len(walked))
	}
	release()
	if err := <-t1Done; err != nil {
		t.Fatal(err)
	}
	page = pgtest.ReadLogUntil(t, s, cp, 100, 2)
	if len(page) != 2 || page[0].Type != "T1" || page[1].Type != "T2" {
		types := []string{}
		for _, e := range page {
			types = append(types, e.Type)
		}
		t.Fatalf("after T1 committed the reader saw %v, want [T1 T2]", types)
	}
	// T1 holds the smaller position yet committed last: a reader ordered by position alone
	// would have read T2, moved its checkpoint past T1 and never seen it.
	if !(page[0].Position < page[1].Position) {
		t.Fatalf("T1's position %d, T2's %d: the test did not commit out of order", page[0].Position, page[1].Position)
	}
	if walked := walk(t, s, eventstore.LogRange{After: cp, Until: eventstore.EndOfLog}, 1); len(walked) != 2 || walked[0].ID != page[0].ID || walked[1].ID != page[1].ID {
		t.Fatalf("after T1 committed a walk gave %d events, want T1 then T2", len(walked))
	}
	// And from T1's checkpoint only T2 remains.
	page = pgtest.ReadLogUntil(t, s, page[0].Checkpoint(), 100, 1)
	if len(page) != 1 || page[0].Type != "T2" {
		t.Fatalf("resume from T1: %v", page)
	}
}

func conformReadLogPages(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	for i := range 25 {
		appendOne(t, s, fmt.Sprint("s", i%4), eventstore.Any(), ev("E", int64(i)))
	}
	var cp eventstore.Checkpoint
	var seen []int64
	for _, e := range pgtest.ReadLogUntil(t, s, cp, 7, 25) {
		var p amount
		_ = json.Unmarshal(e.Payload, &p)
		seen = append(seen, p.Amount)
		cp = e.Checkpoint()
	}
	if page, _ := s.ReadLog(ctx, cp, 7); len(page) != 0 {
		t.Fatalf("%d events after the last one", len(page))
	}
	if len(seen) != 25 {
		t.Fatalf("read %d events, want 25", len(seen))
	}
	for i, a := range seen {
		if a != int64(i) {
			t.Fatalf("event %d has amount %d: log order broken", i, a)
		}
	}
	if _, err := s.ReadLog(ctx, cp, 0); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("limit 0: %v", err)
	}
	back, err := eventstore.ParseCheckpoint(cp.String())
	if err != nil || back != cp {
		t.Fatalf("checkpoint round trip: %v %v", back, err)
	}
	for _, bad := range []string{"", "1", "a:b", "1:-2", ":"} {
		if _, err := eventstore.ParseCheckpoint(bad); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("ParseCheckpoint(%q) = %v", bad, err)
		}
	}
}

// walk returns the events of a walk of r in pages of pageSize, failing the test if a page
// is empty, longer than pageSize or out of order, or if the walk's last checkpoint is not
// that of its last event.
func walk(t *testing.T, s app.EventStore, r eventstore.LogRange, pageSize int) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	last, err := s.WalkLog(context.Background(), r, pageSize, func(page []eventstore.RecordedEvent) error {
		if len(page) == 0 || len(page) > pageSize {
			t.Fatalf("a page of %d events, page size %d", len(page), pageSize)
		}
		out = append(out, page...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := r.After
	if len(out) > 0 {
		want = out[len(out)-1].Checkpoint()
	}
	if last != want {
		t.Fatalf("the walk ended at %s, its last event at %s", last, want)
	}
	for i := 1; i < len(out); i++ {
		if !out[i-1].Checkpoint().Before(out[i].Checkpoint()) {
			t.Fatalf("event %d of the walk comes after event %d", i-1, i)
		}
	}
	return out
}

// A walk reads a part of the log in order, each event once, up to its end, Until or Max,
// and stops at its function's first error.
func conformWalkLog(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	for i := range 25 {
		appendOne(t, s, fmt.Sprint("s", i%4), eventstore.Any(), ev("E", int64(i)))
	}
	all := pgtest.ReadLogUntil(t, s, eventstore.Checkpoint{}, 100, 25) // readable from now on
	same := func(name string, got, want []eventstore.RecordedEvent) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d events, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i].ID != want[i].ID {
				t.Fatalf("%s: event %d is %s, want %s", name, i, got[i].ID, want[i].ID)
			}
		}
	}
	same("whole log", walk(t, s, eventstore.LogRange{Until: eventstore.EndOfLog}, 7), all)
	same("a page that ends the log", walk(t, s, eventstore.LogRange{Until: eventstore.EndOfLog}, 25), all)
	same("after the 5th", walk(t, s, eventstore.LogRange{After: all[4].Checkpoint(), Until: eventstore.EndOfLog}, 7), all[5:])
	same("until the 10th", walk(t, s, eventstore.LogRange{Until: all[9].Checkpoint()}, 7), all[:10])
	same("from the 3rd until the 17th", walk(t, s, eventstore.LogRange{After: all[2].Checkpoint(), Until: all[16].Checkpoint()}, 4), all[3:17])
	same("at most 9", walk(t, s, eventstore.LogRange{Until: eventstore.EndOfLog, Max: 9}, 7), all[:9])
	same("at most 9 after the 20th", walk(t, s, eventstore.LogRange{After: all[19].Checkpoint(), Until: eventstore.EndOfLog, Max: 9}, 7), all[20:])
	same("up to the start (an empty log's head)", walk(t, s, eventstore.LogRange{}, 7), nil)
	same("after the last", walk(t, s, eventstore.LogRange{After: all[24].Checkpoint(), Until: eventstore.EndOfLog}, 7), nil)

	stop := errors.New("stop")
	pages := 0
	last, err := s.WalkLog(ctx, eventstore.LogRange{Until: eventstore.EndOfLog}, 7, func([]eventstore.RecordedEvent) error {
		if pages++; pages == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || pages != 2 || last != all[6].Checkpoint() {
		t.Fatalf("a walk stopped in its 2nd page: %d pages, err %v, last %s (want %s)", pages, err, last, all[6].Checkpoint())
	}
	if _, err := s.WalkLog(ctx, eventstore.LogRange{Until: eventstore.EndOfLog}, 0, nil); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("page size 0: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.WalkLog(cancelled, eventstore.LogRange{Until: eventstore.EndOfLog}, 7, func([]eventstore.RecordedEvent) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled walk: %v", err)
	}
}

func conformSnapshots(t *testing.T, s app.EventStore) {
	ctx := context.Background()
	type state struct {
		Sum int64 `json:"sum"`
	}
	_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "snap", Expected: eventstore.NoStream(),
		Events: []eventstore.EventData{ev("E", 1), ev("E", 2)}, Snapshot: &eventstore.Snapshot{State: state{3}}}})
	if err != nil {
		t.Fatal(err)
	}
	appendOne(t, s, "snap", eventstore.Any(), ev("E", 4)) // no snapshot: state folded elsewhere
	st, err := s.LoadState(ctx, "snap")
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 3 || st.SnapshotVersion != 2 || !sameJSON(st.Snapshot, `{"sum":3}`) || len(st.Events) != 1 || st.Events[0].Version != 3 {
		t.Fatalf("state = %+v", st)
	}
	_, err = s.Append(ctx, []eventstore.StreamAppend{{StreamID: "snap", Expected: eventstore.Exactly(3),
		Events: []eventstore.EventData{ev("E", 8)}, Snapshot: &eventstore.Snapshot{State: state{15}}}})
	if err != nil {
		t.Fatal(err)
	}
	st, _ = s.LoadState(ctx, "snap")
	if st.Version != 4 || st.SnapshotVersion != 4 || len(st.Events) != 0 || !sameJSON(st.Snapshot, `{"sum":15}`) {
		t.Fatalf("state = %+v", st)
	}
	st, err = s.LoadState(ctx, "missing")
	if err != nil || st.Version != 0 || st.Snapshot != nil || len(st.Events) != 0 {
		t.Fatalf("missing stream: %+v %v", st, err)
	}
	appendOne(t, s, "plain", eventstore.NoStream(), ev("E", 1))
	st, _ = s.LoadState(ctx, "plain")
	if st.Version != 1 || st.Snapshot != nil || len(st.Events) != 1 {
		t.Fatalf("stream without snapshot: %+v", st)
	}
}
