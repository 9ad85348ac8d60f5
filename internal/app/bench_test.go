package app_test

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
)

// benchClients is how many clients the command benchmarks run at once.
const benchClients = 32

// benchAccounts survive between the runs of one benchmark (the framework calls it again with a
// larger b.N), so that 10,000 accounts are opened once per benchmark, not once per run.
var benchAccounts struct {
	owner string
	names []string
	ids   []uuid.UUID
}

// benchLedger returns a ledger with projectors running over n accounts, all projected.
func benchLedger(b *testing.B, n int) (*ledger, []string, []uuid.UUID) {
	b.Helper()
	reuse := benchAccounts.owner == b.Name() && len(benchAccounts.ids) == n
	if !reuse {
		benchAccounts.owner = ""
	}
	l := newLedgerTB(b, !reuse, true, app.Config{})
	if !reuse {
		began := time.Now()
		names, ids := openAccounts(b, l.app, "bench", n, benchClients)
		b.Logf("opened %d accounts in %v", n, time.Since(began).Round(time.Millisecond))
		benchAccounts.owner, benchAccounts.names, benchAccounts.ids = b.Name(), names, ids
	}
	waitProjected(b, 5*time.Minute)
	return l, benchAccounts.names, benchAccounts.ids
}

// benchCounts are the outcomes of a benchmark's commands besides success.
type benchCounts struct {
	noFunds, busy, topUps atomic.Int64
}

// outcome counts err; it reports whether the account needs a top-up, and fails the benchmark
// on anything but a success, a refusal for funds or a busy account.
func (c *benchCounts) outcome(b *testing.B, err error) (topUp bool) {
	switch {
	case err == nil:
	case errors.Is(err, domain.ErrInsufficientFunds):
		c.noFunds.Add(1)
		return true
	case errors.Is(err, app.ErrBusy):
		c.busy.Add(1)
	default:
		b.Error(err)
	}
	return false
}

func (c *benchCounts) report(b *testing.B, l *ledger) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmds/s")
	b.ReportMetric(float64(c.noFunds.Load()), "nofunds")
	b.ReportMetric(float64(c.busy.Load()), "busy")
	s := l.app.Stats()
	b.ReportMetric(float64(s.Conflicts), "conflicts")
	b.Logf("b.N=%d: %d refused for funds (each followed by a top-up grant: %d), %d busy; app %+v; store %+v",
		b.N, c.noFunds.Load(), c.topUps.Load(), c.busy.Load(), s, l.store.Stats())
}

// setClients makes RunParallel run about benchClients goroutines.
func setClients(b *testing.B) {
	b.SetParallelism(max(1, (benchClients+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
}

// runClients runs b.N commands from about benchClients clients at once and reports their
// outcomes. command runs one and returns which account paid for it: an account refused for
// funds gets a top-up grant, so that refusals stay rare however long the run.
func runClients(b *testing.B, l *ledger, names []string, command func(ctx context.Context) (payer int, err error)) {
	ctx := context.Background()
	var c benchCounts
	setClients(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			payer, err := command(ctx)
			if c.outcome(b, err) {
				if _, err := l.app.Grant(ctx, "admin", names[payer], 1000, "top-up"); err == nil {
					c.topUps.Add(1)
				}
			}
		}
	})
	b.StopTimer()
	c.report(b, l)
}

// BenchmarkBuy measures purchases per second by 32 concurrent clients over 10,000 accounts,
// with the projectors following.
func BenchmarkBuy(b *testing.B) {
	l, names, ids := benchLedger(b, 10_000)
	runClients(b, l, names, func(ctx context.Context) (int, error) {
		i := rand.IntN(len(ids))
		_, err := l.app.Buy(ctx, ids[i], knownItems[rand.IntN(len(knownItems))])
		return i, err
	})
}

// BenchmarkTransfer measures transfers per second by 32 concurrent clients between random
// accounts of 10,000, with the projectors following.
func BenchmarkTransfer(b *testing.B) {
	l, names, ids := benchLedger(b, 10_000)
	runClients(b, l, names, func(ctx context.Context) (int, error) {
		from := rand.IntN(len(ids))
		to := (from + 1 + rand.IntN(len(ids)-1)) % len(ids)
		_, err := l.app.Transfer(ctx, ids[from], names[to], domain.Coins(1+rand.IntN(20)))
		return from, err
	})
}

// visibleLatencyRate is the command rate BenchmarkVisibleLatency offers; LEDGER_BENCH_RATE
// overrides it.
func visibleLatencyRate() int {
	if n, err := strconv.Atoi(os.Getenv("LEDGER_BENCH_RATE")); err == nil && n > 0 {
		return n
	}
	return 500
}

// BenchmarkVisibleLatency offers commands (transfers and purchases) at about 500/s (see
// visibleLatencyRate) and measures,
// for each, the time from the command's return until every read model shows it for every
// account it wrote (projection_heads of each projection at or above the command's version). It
// runs at least 5 s worth of commands whatever b.N.
func BenchmarkVisibleLatency(b *testing.B) {
	l, names, ids := benchLedger(b, 1_000)
	ctx := context.Background()
	groups := projectionGroups()
	rate := visibleLatencyRate()
	commands := max(b.N, 5*rate)

	type pending struct {
		versions map[uuid.UUID]int64
		returned time.Time
	}
	var (
		mu        sync.Mutex
		waiting   = map[int]pending{}
		latencies []time.Duration
		issued    atomic.Int64
		c         benchCounts
	)
	// The watcher re-reads the projection heads of the accounts with commands in flight each
	// time the projectors (or an append) signal, and records when each command became visible.
	stop := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		for {
			ch := l.wake.C()
			mu.Lock()
			accounts := map[uuid.UUID]bool{}
			for _, p := range waiting {
				for id := range p.versions {
					accounts[id] = true
				}
			}
			mu.Unlock()
			if len(accounts) > 0 {
				heads := map[uuid.UUID]int64{}
				rows, err := db.Pool.Query(ctx, `SELECT account_id, min(version) FROM projection_heads
					WHERE consumer_group = ANY($1) AND account_id = ANY($2)
					GROUP BY account_id HAVING count(*) = cardinality($1::text[])`, groups, slices.Collect(maps.Keys(accounts)))
				var id uuid.UUID
				var v int64
				if err == nil {
					_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error { heads[id] = v; return nil })
				}
				seen := time.Now()
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				for k, p := range waiting {
					visible := true
					for id, want := range p.versions {
						if heads[id] < want {
							visible = false
							break
						}
					}
					if visible {
						latencies = append(latencies, seen.Sub(p.returned))
						delete(waiting, k)
					}
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				mu.Lock()
				left := len(waiting)
				mu.Unlock()
				if left == 0 {
					return
				}
			default:
			}
			select {
			case <-ch:
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	jobs := make(chan int, commands)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				from := rand.IntN(len(ids))
				var res app.Result
				var err error
				if k%2 == 0 {
					to := (from + 1 + rand.IntN(len(ids)-1)) % len(ids)
					res, err = l.app.Transfer(ctx, ids[from], names[to], domain.Coins(1+rand.IntN(20)))
				} else {
					res, err = l.app.Buy(ctx, ids[from], knownItems[rand.IntN(len(knownItems))])
				}
				returned := time.Now()
				if c.outcome(b, err) {
					_, _ = l.app.Grant(ctx, "admin", names[from], 1000, "top-up")
				}
				if err != nil {
					continue
				}
				mu.Lock()
				waiting[k] = pending{versions: res.Versions, returned: returned}
				mu.Unlock()
			}
		}()
	}

	b.ResetTimer()
	began := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for k := range commands {
		<-tick.C
		jobs <- k
		issued.Add(1)
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	offered := time.Since(began)
	close(stop)
	select {
	case <-watcherDone:
	case <-time.After(60 * time.Second):
		b.Fatal("commands still not visible in the read models 60s after the last one")
	}
	b.StopTimer()

	slices.Sort(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
	b.ReportMetric(float64(issued.Load())/offered.Seconds(), "cmds/s")
	b.ReportMetric(float64(offered.Nanoseconds())/float64(commands), "ns/op")
	b.Logf("%d commands offered in %v, %d visible measured (%d refused for funds, %d busy); p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms; app %+v",
		commands, offered.Round(time.Millisecond), len(latencies), c.noFunds.Load(), c.busy.Load(),
		pct(0.5), pct(0.9), pct(0.99), pct(1), l.app.Stats())
}
