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
// accounts) into a fresh JetStream stream, for each window of unacknowledged events, and reports events/s. The
// backlog comes in two shapes: "runs", where each append is 100 events of one account (the
// log holds runs of 100 events of an account, which leave one after another), and
// "interleaved", where each append is one event for each of 100 accounts, as commands leave
// the log. Run: make bench-relay RELAY_EVENTS=1000000 (or go test -run '^$' -bench CatchUp
// -benchtime 1x ./internal/relay/).
func BenchmarkCatchUp(b *testing.B) {
	total := 100_000
	if n, err := strconv.Atoi(os.Getenv("LEDGER_BENCH_EVENTS")); err == nil && n > 0 {
		total = n
	}
	for _, shape := range []string{"runs", "interleaved"} {
		for _, window := range []int{1, 16, 128, 1024} {
			b.Run(fmt.Sprintf("shape=%s/window=%d", shape, window), func(b *testing.B) {
				catchUp(b, total, window, shape == "interleaved")
			})
		}
	}
}

// catchUp runs one BenchmarkCatchUp case.
func catchUp(b *testing.B, total, window int, interleaved bool) {
	for range b.N {
		b.StopTimer()
		h := newHarness(b, "", func(c *relay.Config) { c.Window = window; c.PageSize = 5000 })
		backlog(b, h.store, total, interleaved)
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
}

// backlog appends total events over 1,000 streams, 100 events per append: 100 of one stream,
// or (interleaved) one of each of 100 streams. Eight writers append at once, each to streams of
// its own.
func backlog(b *testing.B, store *eventstore.Store, total int, interleaved bool) {
	b.Helper()
	const streams, writers, per = 1000, 8, 100
	ids := make([]string, streams)
	for i := range ids {
		ids[i] = "bench-" + uuid.NewString()
	}
	event := func() eventstore.EventData {
		return eventstore.EventData{Type: "CoinsSent", SchemaVersion: 1,
			Payload: map[string]any{"amount": 5, "toUser": "someone", "transferId": uuid.NewString()}}
	}
	expect := func(v int64) eventstore.ExpectedVersion {
		if v == 0 {
			return eventstore.NoStream()
		}
		return eventstore.Exactly(v)
	}
	var wg sync.WaitGroup
	for w := range writers {
		own := ids[w*streams/writers : (w+1)*streams/writers]
		quota := total / writers
		wg.Go(func() {
			versions := make([]int64, len(own))
			for next, done := 0, 0; done < quota; {
				n := min(per, quota-done)
				var batch []eventstore.StreamAppend
				if interleaved {
					for range n {
						i := next % len(own)
						next++
						batch = append(batch, eventstore.StreamAppend{StreamID: own[i], Expected: expect(versions[i]),
							Events: []eventstore.EventData{event()}})
						versions[i]++
					}
				} else {
					i := next % len(own)
					next++
					evs := make([]eventstore.EventData, n)
					for k := range evs {
						evs[k] = event()
					}
					batch = []eventstore.StreamAppend{{StreamID: own[i], Expected: expect(versions[i]), Events: evs}}
					versions[i] += int64(n)
				}
				if _, err := store.Append(context.Background(), batch); err != nil {
					b.Error(err)
					return
				}
				done += n
			}
		})
	}
	wg.Wait()
}
