package eventstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/ledger/ledger/eventstore"
)

// benchStreams is the number of streams the append benchmarks pick from at random.
const benchStreams = 10_000

// BenchmarkAppend measures appends/s with 16 concurrent writers on random streams; compare with
// pgbench running the same SQL (make bench runs both in one go).
func BenchmarkAppend(b *testing.B) {
	for _, streams := range []int{1, 2} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			db.Reset(b)
			s := eventstore.New(db.Pool)
			ctx := context.Background()
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					a := rand.IntN(benchStreams)
					apps := []eventstore.StreamAppend{{StreamID: fmt.Sprint("bench-", a), Expected: eventstore.Any(),
						Events: []eventstore.EventData{{Type: "CoinsSent", SchemaVersion: 1, Payload: amount{Amount: 1}}}}}
					if streams == 2 {
						c := (a + 1 + rand.IntN(benchStreams-1)) % benchStreams
						apps = append(apps, eventstore.StreamAppend{StreamID: fmt.Sprint("bench-", c), Expected: eventstore.Any(),
							Events: []eventstore.EventData{{Type: "CoinsReceived", SchemaVersion: 1, Payload: amount{Amount: 1}}}})
					}
					if _, err := s.Append(ctx, apps); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// BenchmarkReadLog measures reading the global log in pages of 1,000.
func BenchmarkReadLog(b *testing.B) {
	db.Reset(b)
	ctx := context.Background()
	const total = 200_000
	// Rows written directly: the read path does not care how they got there.
	_, err := db.Pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload_bytes, metadata_bytes, recorded_at, hash, hash_version)
		SELECT 'r-' || (g % 1000), g / 1000 + 1, gen_random_uuid(), 'CoinsSent', 1,
		       convert_to(jsonb_build_object('amount', g, 'toUser', 'someone')::text, 'UTF8'), '{"actor":"bench"}', now(), sha256(g::text::bytea), 2
		FROM generate_series(0, $1 - 1) g`, total)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	s := eventstore.New(db.Pool)
	b.ResetTimer()
	read := 0
	for range b.N {
		var cp eventstore.Checkpoint
		for {
			page, err := s.ReadLog(ctx, cp, 1000)
			if err != nil {
				b.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			read += len(page)
			cp = page[len(page)-1].Checkpoint()
		}
	}
	b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "events/s")
}
