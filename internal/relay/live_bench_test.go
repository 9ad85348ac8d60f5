package relay_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/relay"
)

// BenchmarkLiveLatency appends events at 2,000 a second (each its own append, from 16
// writers) for 5 s per b.N, with the relay running, and reports how long after each append
// returned its event was read back from JetStream by a consumer (p50, p99, max). The appends
// stand for commands' 200s; the HTTP layer is not in it.
func BenchmarkLiveLatency(b *testing.B) {
	h := newHarness(b, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = h.relay.Run(ctx) }()
	nc := h.nats.Connect()
	js, _ := nc.JetStream()
	for _, err := js.StreamInfo(relay.DefaultStream); err != nil; _, err = js.StreamInfo(relay.DefaultStream) {
		time.Sleep(10 * time.Millisecond) // the relay creates the stream when it connects
	}
	var mu sync.Mutex
	appended, received := map[string]time.Time{}, map[string]time.Time{}
	consumer := make(chan struct{})
	go func() {
		close(consumer)
		err := relay.Read(ctx, nc, relay.ReadOptions{New: true}, func(m relay.Message) error {
			now := time.Now()
			mu.Lock()
			received[m.ID] = now
			mu.Unlock()
			return nil
		})
		if err != nil && ctx.Err() == nil {
			b.Error(err)
		}
	}()
	<-consumer
	time.Sleep(500 * time.Millisecond)
	const rate, writers = 2000, 16
	b.ResetTimer()
	for range b.N {
		stop := time.Now().Add(5 * time.Second)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				tick := time.NewTicker(time.Second * writers / rate)
				defer tick.Stop()
				stream := "live-" + uuid.NewString()
				for v := int64(0); time.Now().Before(stop); v++ {
					<-tick.C
					id := uuid.New()
					exp := eventstore.Exactly(v)
					if v == 0 {
						exp = eventstore.NoStream()
					}
					if _, err := h.store.Append(context.Background(), []eventstore.StreamAppend{{StreamID: stream, Expected: exp,
						Events: []eventstore.EventData{{ID: id, Type: "CoinsSent", SchemaVersion: 1, Payload: map[string]int{"w": w}}}}}); err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					appended[id.String()] = time.Now()
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	time.Sleep(time.Second)
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for id, at := range appended {
		if got, ok := received[id]; ok {
			lat = append(lat, max(0, got.Sub(at)))
		}
	}
	if len(lat) == 0 {
		b.Fatal("no event read back")
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50_ms")
	b.ReportMetric(q(0.99), "p99_ms")
	b.ReportMetric(q(1), "max_ms")
	b.ReportMetric(float64(len(lat))/float64(len(appended)), "read_back")
}
