package relay_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/relay"
)

// BenchmarkCatchUp publishes a backlog of LEDGER_BENCH_EVENTS events (default 100,000; 1,000
// accounts) into a fresh JetStream stream, for each number of lanes, and reports events/s.
// Run: make bench-relay RELAY_EVENTS=1000000 (or go test -run '^$' -bench CatchUp -benchtime 1x ./internal/relay/).
func BenchmarkCatchUp(b *testing.B) {
	total := 100_000
	if n, err := strconv.Atoi(os.Getenv("LEDGER_BENCH_EVENTS")); err == nil && n > 0 {
		total = n
	}
	for _, lanes := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("lanes=%d", lanes), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				h := newHarness(b, "", func(c *relay.Config) { c.Lanes = lanes; c.PageSize = 5000 })
				backlog(b, h.store, total)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				began := time.Now()
				go func() { done <- h.relay.Run(ctx) }()
				waitPublished(b, h.store)
				elapsed := time.Since(began)
				b.StopTimer()
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
			}
		})
	}
}

// backlog appends total events over 1,000 streams, 100 events per append.
func backlog(b *testing.B, store *eventstore.Store, total int) {
	b.Helper()
	streams := 1000
	per := total / streams
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for range streams {
		id := "bench-" + uuid.NewString()
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for v := 0; v < per; v += 100 {
				n := min(100, per-v)
				evs := make([]eventstore.EventData, n)
				for i := range evs {
					evs[i] = eventstore.EventData{Type: "CoinsSent", SchemaVersion: 1,
						Payload: map[string]any{"amount": 5, "toUser": "someone", "transferId": uuid.NewString()}}
				}
				exp := eventstore.Exactly(int64(v))
				if v == 0 {
					exp = eventstore.NoStream()
				}
				if _, err := store.Append(context.Background(), []eventstore.StreamAppend{{StreamID: id, Expected: exp, Events: evs}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
