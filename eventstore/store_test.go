package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/pgtest"
)

var db *pgtest.Database

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "eventstore", &db)) }

func newStore(t *testing.T, opts ...eventstore.Option) *eventstore.Store {
	t.Helper()
	db.Reset(t)
	return eventstore.New(db.Pool, opts...)
}

type amount struct {
	Amount int64  `json:"amount"`
	Note   string `json:"note,omitempty"`
}

func ev(typ string, n int64) eventstore.EventData {
	return eventstore.EventData{Type: typ, SchemaVersion: 1, Payload: amount{Amount: n},
		Metadata: eventstore.Metadata{Actor: "test", CorrelationID: fmt.Sprint("c", n)}}
}

func appendOne(t *testing.T, s *eventstore.Store, stream string, exp eventstore.ExpectedVersion, events ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), []eventstore.StreamAppend{{StreamID: stream, Expected: exp, Events: events}})
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}

// readUntil reads the log after cp until it has returned want events. The fence is
// cluster-wide: any transaction on the server (another test's, in another database) holds it
// back for a moment, so an empty page means "nothing readable yet", not "end of log".
func readUntil(t *testing.T, s *eventstore.Store, cp eventstore.Checkpoint, pageSize, want int) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < want {
		page, err := s.ReadLog(context.Background(), cp, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("read %d events of %d", len(out), want)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		out = append(out, page...)
		cp = page[len(page)-1].Checkpoint()
	}
	return out
}

func count(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRoundTripAndContiguousVersions(t *testing.T) {
	s := newStore(t)
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
		if e.Metadata.Actor != "test" || e.SchemaVersion != 1 || e.ID == uuid.Nil || e.TransactionID == 0 || len(e.Hash) != 32 {
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
	head, err := s.Head(ctx, "acc-1")
	if err != nil || head != 3 {
		t.Fatalf("head = %d, %v; want 3", head, err)
	}
	if head, _ := s.Head(ctx, "nobody"); head != 0 {
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

func TestExpectedVersionRules(t *testing.T) {
	s := newStore(t)
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
			before, _ := s.Head(ctx, "a")
			_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "a", Expected: c.exp, Events: []eventstore.EventData{ev("E", 9)}}})
			var ce *eventstore.ConcurrencyError
			if c.wantErr {
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v, want *ConcurrencyError", err)
				}
				if ce.StreamID != "a" || ce.Actual != before || ce.Expected != c.exp {
					t.Fatalf("error names %+v; want stream a, actual %d, expected %v", ce, before, c.exp)
				}
				if after, _ := s.Head(ctx, "a"); after != before {
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
	if h, _ := s.Head(ctx, "fresh-any"); h != 1 {
		t.Fatalf("any on a new stream: head %d", h)
	}
	// Exactly(3) on a missing stream is a conflict naming actual 0, and leaves no head row.
	_, err := s.Append(ctx, []eventstore.StreamAppend{{StreamID: "ghost", Expected: eventstore.Exactly(3), Events: []eventstore.EventData{ev("E", 1)}}})
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) || ce.Actual != 0 {
		t.Fatalf("err = %v", err)
	}
	if n := count(t, `SELECT count(*) FROM streams WHERE stream_id = 'ghost'`); n != 0 {
		t.Fatal("a refused append left a head row")
	}
	if got := s.Stats().Conflicts; got == 0 {
		t.Fatal("conflicts not counted")
	}
}

func TestBadInputIsRefusedBeforeTheDatabase(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dup := uuid.New()
	withID := func(e eventstore.EventData, id uuid.UUID) eventstore.EventData { e.ID = id; return e }
	cases := map[string][]eventstore.StreamAppend{
		"nothing":          nil,
		"empty stream id":  {{StreamID: "", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("E", 1)}}},
		"no events":        {{StreamID: "x", Expected: eventstore.Any()}},
		"no type":          {{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{{Payload: 1}}}},
		"unmarshalable":    {{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{{Type: "E", Payload: make(chan int)}}}},
		"invalid raw JSON": {{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{{Type: "E", Payload: json.RawMessage(`{"a":`)}}}},
		"raw not UTF-8":    {{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{{Type: "E", Payload: []byte("\"\xff\"")}}}},
		"NaN payload":      {{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{{Type: "E", Payload: math.NaN()}}}},
		"negative version": {{StreamID: "x", Expected: eventstore.Exactly(-1), Events: []eventstore.EventData{ev("E", 1)}}},
		"stream twice": {
			{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("E", 1)}},
			{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("E", 2)}},
		},
		"duplicate event id": {
			{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{withID(ev("E", 1), dup)}},
			{StreamID: "y", Expected: eventstore.Any(), Events: []eventstore.EventData{withID(ev("E", 2), dup)}},
		},
		"snapshot without exact version": {{StreamID: "x", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("E", 1)}, Snapshot: &eventstore.Snapshot{State: 1}}},
	}
	for name, appends := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := s.Append(ctx, appends)
			if !errors.Is(err, eventstore.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if n := count(t, `SELECT count(*) FROM events`) + count(t, `SELECT count(*) FROM streams`); n != 0 {
		t.Fatalf("refused appends wrote %d rows", n)
	}

	// A duplicate of an event id already in the log fails the whole append.
	e := ev("E", 1)
	e.ID = uuid.New()
	appendOne(t, s, "x", eventstore.NoStream(), e)
	_, err := s.Append(ctx, []eventstore.StreamAppend{
		{StreamID: "a-first", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("E", 1)}},
		{StreamID: "z-second", Expected: eventstore.NoStream(), Events: []eventstore.EventData{e}},
	})
	if !errors.Is(err, eventstore.ErrDuplicateEvent) {
		t.Fatalf("err = %v, want ErrDuplicateEvent", err)
	}
	if n := count(t, `SELECT count(*) FROM streams WHERE stream_id IN ('a-first', 'z-second')`); n != 0 {
		t.Fatal("a failed append left head rows behind")
	}
}

// Text columns cannot hold a NUL character nor, from a Go string, bytes that are not UTF-8. An
// append holding one is bad input, refused before any transaction begins, not a database
// error that would fail the whole group it was written in. (JSON documents are stored as bytes
// and may hold anything JSON can: see TestDocumentsAreStoredAsGiven.)
func TestTextPostgreSQLCannotStoreIsRefusedBeforeTheDatabase(t *testing.T) {
	var writes atomic.Int64
	s := newStore(t, eventstore.WithWriteObserver(func(eventstore.Write) { writes.Add(1) }))
	ctx := context.Background()
	with := func(change func(*eventstore.StreamAppend)) []eventstore.StreamAppend {
		a := eventstore.StreamAppend{StreamID: "x", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("E", 1)}}
		change(&a)
		return []eventstore.StreamAppend{{StreamID: "fine", Expected: eventstore.Any(), Events: []eventstore.EventData{ev("E", 2)}}, a}
	}
	cases := map[string][]eventstore.StreamAppend{
		"NUL in a stream id":   with(func(a *eventstore.StreamAppend) { a.StreamID = "x\x00" }),
		"stream id not UTF-8":  with(func(a *eventstore.StreamAppend) { a.StreamID = "x\xff" }),
		"NUL in an event type": with(func(a *eventstore.StreamAppend) { a.Events[0].Type = "E\x00" }),
		"event type not UTF-8": with(func(a *eventstore.StreamAppend) { a.Events[0].Type = "E\xc3" }),
	}
	for name, appends := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := s.Append(ctx, appends)
			if !errors.Is(err, eventstore.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if n := writes.Load(); n != 0 {
		t.Fatalf("refused appends began %d transactions", n)
	}
	if n := count(t, `SELECT count(*) FROM events`) + count(t, `SELECT count(*) FROM streams`); n != 0 {
		t.Fatalf("refused appends wrote %d rows", n)
	}
}

// 32 writers race on one stream with the same expected version: exactly one wins.
func TestConcurrentAppendsToOneStream(t *testing.T) {
	s := newStore(t)
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
	if n := count(t, `SELECT count(*) FROM events WHERE stream_id = 'hot'`); n != 2 {
		t.Fatalf("stream has %d events, want 2", n)
	}
}

// Opposite two-stream appends at the same moment must neither deadlock nor half-write.
func TestOppositeTransfersNeverDeadlock(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	appendOne(t, s, "acc-A", eventstore.NoStream(), ev("Opened", 0))
	appendOne(t, s, "acc-B", eventstore.NoStream(), ev("Opened", 0))
	const pairs = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 2*pairs)
	transfer := func(from, to string, i int) {
		defer wg.Done()
		<-start
		corr := fmt.Sprintf("%s->%s-%d", from, to, i)
		md := eventstore.Metadata{CorrelationID: corr}
		_, err := s.Append(ctx, []eventstore.StreamAppend{
			{StreamID: from, Expected: eventstore.Any(), Events: []eventstore.EventData{{Type: "Sent", SchemaVersion: 1, Payload: amount{Amount: 1}, Metadata: md}}},
			{StreamID: to, Expected: eventstore.Any(), Events: []eventstore.EventData{{Type: "Received", SchemaVersion: 1, Payload: amount{Amount: 1}, Metadata: md}}},
		})
		if err != nil {
			errs <- err
		}
	}
	for i := range pairs {
		wg.Add(2)
		go transfer("acc-A", "acc-B", i)
		go transfer("acc-B", "acc-A", i)
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("append failed: %v", err)
	}
	if r := s.Stats().TxRetries; r != 0 {
		t.Errorf("%d appends were retried after a deadlock; locking order is broken", r)
	}
	// Every transfer wrote both of its halves.
	if n := count(t, `SELECT count(*) FROM (SELECT convert_from(metadata_bytes, 'UTF8')::jsonb->>'correlationId' FROM events WHERE event_type IN ('Sent','Received')
		GROUP BY 1 HAVING count(*) <> 2) half`); n != 0 {
		t.Fatalf("%d half-written transfers", n)
	}
	if n := count(t, `SELECT count(*) FROM events WHERE event_type = 'Sent'`); n != 2*pairs {
		t.Fatalf("%d transfers written, want %d", n, 2*pairs)
	}
	for _, id := range []string{"acc-A", "acc-B"} {
		if h, _ := s.Head(ctx, id); h != 1+2*pairs {
			t.Fatalf("%s head %d, want %d", id, h, 1+2*pairs)
		}
	}
}

func TestMultiStreamAppendIsAtomic(t *testing.T) {
	s := newStore(t)
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
	if h, _ := s.Head(ctx, "first"); h != 1 {
		t.Fatalf("first moved to %d", h)
	}
	if n := count(t, `SELECT count(*) FROM events WHERE stream_id = 'first'`); n != 1 {
		t.Fatalf("first has %d events", n)
	}
	// A failing in-transaction hook also leaves nothing behind.
	boom := errors.New("boom")
	_, err = s.Append(ctx, []eventstore.StreamAppend{{StreamID: "first", Expected: eventstore.Exactly(1), Events: []eventstore.EventData{ev("E", 2)}}},
		eventstore.InTransaction(func(context.Context, pgx.Tx) error { return boom }))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if h, _ := s.Head(ctx, "first"); h != 1 {
		t.Fatalf("first moved to %d after a failed hook", h)
	}
}

// A reader of the global log must wait for a transaction that started earlier and commits
// later, instead of reading past it and skipping its events.
func TestReadLogWaitsForOutOfOrderCommit(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	base := appendOne(t, s, "warmup", eventstore.NoStream(), ev("E", 0))
	page := readUntil(t, s, eventstore.Checkpoint{}, 100, 1)
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
	release()
	if err := <-t1Done; err != nil {
		t.Fatal(err)
	}
	page = readUntil(t, s, cp, 100, 2)
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
	// And from T1's checkpoint only T2 remains.
	page = readUntil(t, s, page[0].Checkpoint(), 100, 1)
	if len(page) != 1 || page[0].Type != "T2" {
		t.Fatalf("resume from T1: %v", page)
	}
}

func TestReadLogPages(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for i := range 25 {
		appendOne(t, s, fmt.Sprint("s", i%4), eventstore.Any(), ev("E", int64(i)))
	}
	var cp eventstore.Checkpoint
	var seen []int64
	for _, e := range readUntil(t, s, cp, 7, 25) {
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

func TestSnapshots(t *testing.T) {
	s := newStore(t)
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

func TestAfterCommitHookSeesEveryAppend(t *testing.T) {
	var mu sync.Mutex
	var got []eventstore.AppendResult
	s := newStore(t, eventstore.WithAfterCommit(func(r eventstore.AppendResult) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	}), eventstore.WithClock(func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC) }))
	appendOne(t, s, "h", eventstore.NoStream(), ev("E", 1))
	_, _ = s.Append(context.Background(), []eventstore.StreamAppend{{StreamID: "h", Expected: eventstore.NoStream(), Events: []eventstore.EventData{ev("E", 2)}}})
	if len(got) != 1 || got[0].Version("h") != 1 {
		t.Fatalf("after-commit calls: %+v", got)
	}
	evs, _ := s.Load(context.Background(), "h", 0)
	if want := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC); !evs[0].RecordedAt.Equal(want) {
		t.Fatalf("recorded at %v, want %v", evs[0].RecordedAt, want)
	}
}

// sameJSON reports whether got and want are the same JSON value.
func sameJSON(got []byte, want string) bool {
	var a, b any
	return json.Unmarshal(got, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && reflect.DeepEqual(a, b)
}

// In log order every stream's versions must come ascending: a reader that applies a stream's
// events in log order (every projector) depends on it. Transactions get their xid at their
// first write or row lock, possibly before they wait for another stream's lock, so this only
// holds because appends take their stream locks before they have an xid.
func TestLogOrderKeepsEveryStreamInVersionOrder(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const accounts = 6
	for i := range accounts {
		appendOne(t, s, fmt.Sprint("acc-", i), eventstore.NoStream(), ev("Opened", 0))
	}
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				a, b := (w+i)%accounts, (w+2*i+1)%accounts
				if a == b {
					b = (b + 1) % accounts
				}
				_, err := s.Append(ctx, []eventstore.StreamAppend{
					{StreamID: fmt.Sprint("acc-", a), Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Sent", 1)}},
					{StreamID: fmt.Sprint("acc-", b), Expected: eventstore.Any(), Events: []eventstore.EventData{ev("Received", 1)}},
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	last := map[string]int64{}
	for _, e := range readUntil(t, s, eventstore.Checkpoint{}, 500, accounts+24*60*2) {
		if e.Version != last[e.StreamID]+1 {
			t.Fatalf("log order has %s version %d after version %d", e.StreamID, e.Version, last[e.StreamID])
		}
		last[e.StreamID] = e.Version
	}
	if n := len(last); n != accounts {
		t.Fatalf("read %d streams", n)
	}
}
