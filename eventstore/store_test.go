package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

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

func count(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
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
		if h, _ := head(ctx, s, id); h != 1+2*pairs {
			t.Fatalf("%s head %d, want %d", id, h, 1+2*pairs)
		}
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
	for _, e := range pgtest.ReadLogUntil(t, s, eventstore.Checkpoint{}, 500, accounts+24*60*2) {
		if e.Version != last[e.StreamID]+1 {
			t.Fatalf("log order has %s version %d after version %d", e.StreamID, e.Version, last[e.StreamID])
		}
		last[e.StreamID] = e.Version
	}
	if n := len(last); n != accounts {
		t.Fatalf("read %d streams", n)
	}
}

// A refused append writes nothing, not even the head row of the stream it would have created,
// and is counted (the application's conformance suite checks the rest of the version rules).
func TestRefusedAppendLeavesNoHeadRowAndIsCounted(t *testing.T) {
	s := newStore(t)
	_, err := s.Append(context.Background(), []eventstore.StreamAppend{{StreamID: "ghost", Expected: eventstore.Exactly(3),
		Events: []eventstore.EventData{ev("E", 1)}}})
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

// head returns the stream's version, 0 when it does not exist.
func head(ctx context.Context, s *eventstore.Store, stream string) (int64, error) {
	st, err := s.LoadState(ctx, stream)
	return st.Version, err
}
