package app_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/notify"
)

// asOfStreamLength is the length of the account stream BenchmarkInfoAsOf reads.
const asOfStreamLength = 1_000

// BenchmarkInfoAsOf answers /api/info?asOf for an account of asOfStreamLength events (grants,
// purchases, transfers both ways) scattered through a log of about 100 times as many, at random
// points of its history, by position and by time, and reports the latency percentiles.
//
//	go test -run '^$' -bench InfoAsOf -benchtime 2000x ./internal/app/
func BenchmarkInfoAsOf(b *testing.B) {
	db.Reset(b)
	wake := notify.NewSignal()
	store := eventstore.New(db.Pool)
	a := app.New(store, wake, app.Config{})
	ctx := context.Background()
	id, points := writeLongStream(b, store, asOfStreamLength)
	if _, err := db.Pool.Exec(ctx, `ANALYZE events`); err != nil { // as autovacuum keeps a live table
		b.Fatal(err)
	}

	r := rand.New(rand.NewPCG(3, 4))
	var latencies []time.Duration
	for i := 0; b.Loop(); i++ {
		p := points[r.IntN(len(points))]
		at := app.AtPosition(p.position)
		if i%2 == 1 {
			at = app.AtTime(p.at)
		}
		began := time.Now()
		in, err := a.InfoAsOf(ctx, id, at)
		latencies = append(latencies, time.Since(began))
		if err != nil {
			b.Fatal(err)
		}
		if in.Version < p.version {
			b.Fatalf("as of %s: version %d, want at least %d", at, in.Version, p.version)
		}
	}
	slices.Sort(latencies)
	pct := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}

// streamPoint is a place in the benchmark account's history.
type streamPoint struct {
	version, position int64
	at                time.Time
}

// writeLongStream appends, straight through the store, an account of n events, one command
// (one or two events) per append as live traffic writes them, with a counterpart it trades
// with, and between every two of its appends 100 events of other accounts, so that its events
// lie scattered through the log as they would in production. It returns the account and the
// point after each of its appends.
func writeLongStream(b *testing.B, store *eventstore.Store, n int) (uuid.UUID, []streamPoint) {
	b.Helper()
	ctx := context.Background()
	write := func(appends ...eventstore.StreamAppend) eventstore.AppendResult {
		res, err := store.Append(ctx, appends)
		if err != nil {
			b.Fatal(err)
		}
		return res
	}
	// stream decides nothing: it folds events into acc and describes their append.
	stream := func(acc *domain.Account, events ...domain.Event) eventstore.StreamAppend {
		before := acc.Version
		if err := acc.ApplyAll(events); err != nil {
			b.Fatal(err)
		}
		data := make([]eventstore.EventData, len(events))
		for i, e := range events {
			data[i] = eventstore.EventData{Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Payload: e,
				Metadata: eventstore.Metadata{Actor: acc.Username, RequestID: uuid.NewString()}}
		}
		return eventstore.StreamAppend{StreamID: domain.StreamID(acc.ID), Expected: eventstore.Exactly(before), Events: data}
	}
	open := func(name string) (*domain.Account, []domain.Event) {
		evs, err := domain.OpenAccount(uuid.Must(uuid.NewV7()), name)
		if err != nil {
			b.Fatal(err)
		}
		return &domain.Account{}, evs
	}
	me, opened := open("timetraveller")
	other, otherOpened := open("counterpart")
	res := write(stream(me, opened...), stream(other, otherOpened...))
	points := []streamPoint{{version: me.Version, position: res.Checkpoint.Position, at: time.Now()}}
	noise := make([]*domain.Account, 20)
	for i := range noise {
		acc, evs := open(fmt.Sprintf("bystander%d", i))
		write(stream(acc, evs...))
		noise[i] = acc
	}
	r := rand.New(rand.NewPCG(1, 2))
	catalog := domain.Catalog{"pen": 10, "cup": 20, "book": 50}
	for int(me.Version) < n {
		var appends []eventstore.StreamAppend
		switch k := r.IntN(10); {
		case k < 5:
			if evs, err := me.Buy([]string{"pen", "cup", "book"}[r.IntN(3)], catalog); err == nil {
				appends = append(appends, stream(me, evs...))
			}
		case k < 7:
			if sent, received, err := me.Send(other.Ref(), domain.Coins(1+r.IntN(30)), uuid.Must(uuid.NewV7())); err == nil {
				appends = append(appends, stream(me, sent), stream(other, received))
			}
		case k < 9:
			if sent, received, err := other.Send(me.Ref(), domain.Coins(1+r.IntN(30)), uuid.Must(uuid.NewV7())); err == nil {
				appends = append(appends, stream(other, sent), stream(me, received))
			}
		default:
			if evs, err := me.Grant(domain.Coins(100+r.IntN(200)), "bench bonus", "admin"); err == nil {
				appends = append(appends, stream(me, evs...))
			}
		}
		if len(appends) == 0 {
			continue
		}
		res := write(appends...)
		points = append(points, streamPoint{version: me.Version, position: res.Checkpoint.Position, at: time.Now()})
		bystander := noise[r.IntN(len(noise))]
		grants := make([]domain.Event, 100)
		for i := range grants {
			grants[i] = domain.CoinsGranted{Amount: 1, Reason: "noise"}
		}
		write(stream(bystander, grants...))
	}
	return me.ID, points
}
