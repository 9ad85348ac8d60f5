package projections_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/projections"
)

// catchUpEvents is the size of BenchmarkCatchUp's backlog: LEDGER_BENCH_EVENTS, default
// 1,000,000.
func catchUpEvents() int {
	if n, err := strconv.Atoi(os.Getenv("LEDGER_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// backlogSQL writes, for the versions $1..$2 of accounts 1..$3, events that fold into valid
// accounts: AccountOpened at version 1, the welcome CoinsGranted at 2; then per ten versions a
// grant of 100 (v % 10 = 0), a transfer of 5 from each odd account to the next even one
// (v % 10 = 5: CoinsSent and CoinsReceived at the same version, same transfer id) and pens
// bought for 10 at the other versions, so that no balance ever goes below zero. Events are
// interleaved across accounts, version by version, as live traffic would be.
const backlogSQL = `
INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload_bytes, metadata_bytes, recorded_at, hash, hash_version)
SELECT 'account-' || md5('bench' || a)::uuid, v, gen_random_uuid(),
       CASE WHEN v = 1 THEN 'AccountOpened'
            WHEN v = 2 OR v % 10 = 0 THEN 'CoinsGranted'
            WHEN v % 10 = 5 AND a % 2 = 1 THEN 'CoinsSent'
            WHEN v % 10 = 5 THEN 'CoinsReceived'
            ELSE 'ItemPurchased' END,
       1,
       convert_to((CASE WHEN v = 1 THEN jsonb_build_object('accountId', md5('bench' || a)::uuid, 'username', 'bench' || a)
            WHEN v = 2 THEN '{"amount":1000,"reason":"welcome"}'::jsonb
            WHEN v % 10 = 0 THEN '{"amount":100,"reason":"x"}'::jsonb
            WHEN v % 10 = 5 THEN jsonb_build_object(
                'transferId', md5('transfer' || (a - 1 + a % 2) || '-' || v)::uuid,
                'from', jsonb_build_object('id', md5('bench' || (a - 1 + a % 2))::uuid, 'username', 'bench' || (a - 1 + a % 2)),
                'to', jsonb_build_object('id', md5('bench' || (a + a % 2))::uuid, 'username', 'bench' || (a + a % 2)),
                'amount', 5)
            ELSE '{"item":"pen","price":10,"quantity":1}'::jsonb END)::text, 'UTF8'),
       '{}', now(), decode(repeat('ab', 32), 'hex'), 2
FROM generate_series($1::bigint, $2::bigint) v, generate_series(1, $3::int) a
ORDER BY v, a`

// buildBacklog empties the database and writes a backlog of about catchUpEvents() events:
// perAccount events to each of up to 10,000 account streams (an even number, so that every
// transfer has both ends), in transactions of about 100,000 events.
func buildBacklog(b *testing.B) (accounts, perAccount int) {
	b.Helper()
	total := catchUpEvents()
	accounts = max(2, min(10_000, total/10)) &^ 1
	perAccount = max(2, total/accounts)
	ctx := context.Background()
	db.Reset(b)
	began := time.Now()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO streams (stream_id, version, last_hash)
		SELECT 'account-' || md5('bench' || a)::uuid, $2::bigint, decode(repeat('ab', 32), 'hex')
		FROM generate_series(1, $1::int) a`, accounts, perAccount); err != nil {
		b.Fatal(err)
	}
	step := max(1, 100_000/accounts)
	for v := 1; v <= perAccount; v += step {
		if _, err := db.Pool.Exec(ctx, backlogSQL, v, min(v+step-1, perAccount), accounts); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	b.Logf("backlog of %d events over %d accounts written in %v", accounts*perAccount, accounts, time.Since(began).Round(time.Millisecond))
	return accounts, perAccount
}

// resetReadModels empties every read model and checkpoint, keeping the log.
func resetReadModels(b *testing.B) {
	b.Helper()
	if _, err := db.Pool.Exec(context.Background(), `TRUNCATE projection_checkpoints, projection_status, projection_heads,
		balance_v1, inventory_v1, history_v1, history_v2`); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCatchUp measures how fast projectors build their read models from a backlog
// (LEDGER_BENCH_EVENTS events, default 1,000,000, over up to 10,000 accounts written straight
// into the log): all projections at once ("all", each running beside the others) and, with
// LEDGER_BENCH_CATCHUP_EACH set, each one alone. It reports events/s per projection, from the
// runner's start until the projection's checkpoint reaches the last event.
func BenchmarkCatchUp(b *testing.B) {
	accounts, perAccount := buildBacklog(b)
	ctx := context.Background()
	var lastTx uint64
	var lastPos int64
	if err := db.Pool.QueryRow(ctx, `SELECT transaction_id::text::bigint, global_position FROM events
		ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&lastTx, &lastPos); err != nil {
		b.Fatal(err)
	}
	events := accounts * perAccount

	type mode struct {
		name  string
		projs []projections.Projection
	}
	modes := []mode{{"all", projections.All()}}
	if os.Getenv("LEDGER_BENCH_CATCHUP_EACH") != "" {
		modes = append(modes, mode{"balance", []projections.Projection{projections.Balance()}},
			mode{"inventory", []projections.Projection{projections.Inventory()}},
			mode{"history", []projections.Projection{projections.HistoryV2()}},
			mode{"history_v1", []projections.Projection{projections.History()}})
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			groups := make([]string, len(mode.projs))
			for i, p := range mode.projs {
				groups[i] = p.Group()
			}
			took := map[string]time.Duration{}
			for range b.N {
				b.StopTimer()
				resetReadModels(b)
				b.StartTimer()
				for g, d := range catchUp(b, mode.projs, groups, lastTx, lastPos) {
					took[g] += d
				}
			}
			var slowest time.Duration
			for _, g := range groups {
				rate := float64(events) * float64(b.N) / took[g].Seconds()
				b.ReportMetric(rate, g+"-events/s")
				b.Logf("%s: %d events in %v (%.0f events/s)", g, events, (took[g] / time.Duration(b.N)).Round(time.Millisecond), rate)
				slowest = max(slowest, took[g])
			}
			b.ReportMetric(float64(events)*float64(b.N)/slowest.Seconds(), "events/s")
			checkCaughtUp(b, groups, accounts, perAccount)
		})
	}
}

// catchUp runs the projections until each has checkpointed the last event and returns how long
// each took.
func catchUp(b *testing.B, projs []projections.Projection, groups []string, lastTx uint64, lastPos int64) map[string]time.Duration {
	b.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := projections.NewRunner(db.Pool, notify.NewSignal(), log, projections.Config{}, projs...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	began := time.Now()
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Error("runner did not stop")
		}
	}()
	took := map[string]time.Duration{}
	deadline := time.Now().Add(30 * time.Minute)
	for len(took) < len(groups) {
		rows, err := db.Pool.Query(context.Background(), `SELECT consumer_group FROM projection_checkpoints
			WHERE consumer_group = ANY($1) AND (transaction_id::text::bigint, position) >= ($2::bigint, $3::bigint)`,
			groups, int64(lastTx), lastPos)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		var g string
		if _, err := pgx.ForEachRow(rows, []any{&g}, func() error {
			if _, ok := took[g]; !ok {
				took[g] = now.Sub(began)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		for _, g := range groups {
			if c := r.Counters(g); c.Failed {
				b.Fatalf("projection %s failed: %+v", g, c)
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("projections %v did not catch up within 30 minutes (done: %v)", groups, took)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return took
}

// checkCaughtUp checks that every projection applied every event of every account.
func checkCaughtUp(b *testing.B, groups []string, accounts, perAccount int) {
	b.Helper()
	for _, g := range groups {
		var n int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM projection_heads
			WHERE consumer_group = $1 AND version = $2`, g, perAccount).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n != accounts {
			b.Errorf("%s: %d of %d accounts projected to version %d", g, n, accounts, perAccount)
		}
	}
}

// BenchmarkRebuild measures a rebuild of balance v2 from a backlog of LEDGER_BENCH_EVENTS
// events (default 1,000,000) over up to 10,000 accounts: the in-memory fold of the log and the
// COPY of the read model (events/s), and the whole rebuild through the switch.
func BenchmarkRebuild(b *testing.B) {
	buildBacklog(b)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var built, whole time.Duration
	var events int64
	for range b.N {
		b.StopTimer()
		if _, err := db.Pool.Exec(ctx, `UPDATE projection_versions SET active_version = 1 WHERE name = 'balance'`); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := projections.Rebuild(ctx, db.Pool, "balance", projections.RebuildOptions{Log: log, Grace: time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		built += rep.Build
		whole += rep.Total
		events += rep.Events
	}
	b.ReportMetric(float64(events)/built.Seconds(), "events/s")
	b.Logf("%d events: built in %v (%.0f events/s), whole rebuild %v", events/int64(b.N),
		(built / time.Duration(b.N)).Round(time.Millisecond), float64(events)/built.Seconds(), (whole / time.Duration(b.N)).Round(time.Millisecond))
}
