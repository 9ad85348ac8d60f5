package console_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/console"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/internal/seed"
	"github.com/ledger/ledger/projections"
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

type noIssuer struct{}

func (noIssuer) Issue(string, ...auth.Role) (string, error) { return "-", nil }

// BenchmarkConsolePages measures each page's server time on a large ledger: LEDGER_BENCH_ACCOUNTS
// employees (default 100,000) opened as signing up opens them, then transfers of one coin
// between random employees until the log holds LEDGER_BENCH_EVENTS events (default 1,000,000),
// one in forty of them to one hot employee (10,000 events at the defaults). The projectors run
// throughout and have caught up before the pages are asked for, each many times in a row, as an
// auditor with a session.
//
//	go test -run '^$' -bench ConsolePages -benchtime 1x -timeout 60m ./internal/console/
func BenchmarkConsolePages(b *testing.B) {
	accounts, events := envInt("LEDGER_BENCH_ACCOUNTS", 100_000), envInt("LEDGER_BENCH_EVENTS", 1_000_000)
	ctx := context.Background()
	db := pgtest.New(b, "console_bench")

	began := time.Now()
	if _, _, err := seed.Run(ctx, seed.Options{DatabaseURL: db.URL, Users: accounts, Prefix: "emp", Workers: 16, Issuer: noIssuer{}}); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d employees in %v", accounts, time.Since(began).Round(time.Second))
	ids := make([]uuid.UUID, accounts)
	names := make([]string, accounts)
	rows, err := db.Pool.Query(ctx, `SELECT username, account_id FROM users ORDER BY username`)
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	var name string
	var id uuid.UUID
	for rows.Next() {
		if err := rows.Scan(&name, &id); err != nil {
			b.Fatal(err)
		}
		names[i], ids[i] = name, id
		i++
	}
	rows.Close()

	a, wake := appOn(db, eventstore.WithGroupCommit(4, 0))
	runner := projections.NewRunner(db.Pool, wake, slog.New(slog.DiscardHandler), projections.Config{Follow: true}, projections.Versions()...)
	runCtx, stopRunner := context.WithCancel(ctx)
	var runnerDone sync.WaitGroup
	runnerDone.Add(1)
	go func() { defer runnerDone.Done(); _ = runner.Run(runCtx) }()
	b.Cleanup(func() { stopRunner(); runnerDone.Wait() })

	// Transfers until the log is full; one in forty goes to the hot employee.
	hot := names[0]
	began = time.Now()
	var written atomic.Int64
	written.Store(int64(2 * accounts))
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for written.Load() < int64(events) {
				from := rng.IntN(accounts-1) + 1
				to := names[rng.IntN(accounts)]
				if rng.IntN(40) == 0 {
					to = hot
				}
				if to == names[from] {
					continue
				}
				_, err := a.Transfer(ctx, ids[from], to, 1)
				if err != nil && !errorsIsInsufficient(err) {
					b.Error(err)
					return
				}
				if err == nil {
					written.Add(2)
				}
			}
		}()
	}
	wg.Wait()
	b.Logf("wrote %d events in %v", written.Load(), time.Since(began).Round(time.Second))
	waitCaughtUp(b, db)

	srv, token := consoleServer(b, a, db, wake)

	began = time.Now()
	if _, err := a.BankTotals(ctx, 0); err != nil {
		b.Fatal(err)
	}
	b.Logf("the overview's first fold of the log (a fresh process): %v", time.Since(began).Round(time.Millisecond))
	var mid string
	if err := db.Pool.QueryRow(ctx, `SELECT transaction_id::text || ':' || global_position FROM events
		ORDER BY global_position OFFSET $1 LIMIT 1`, events/2).Scan(&mid); err != nil {
		b.Fatal(err)
	}
	pages := []struct {
		name, path string
		n          int
	}{
		{"overview", "/console/", 200},
		{"accounts", "/console/accounts", 200},
		{"accounts-prefix", "/console/accounts?prefix=emp0500", 200},
		{"accounts-page", "/console/accounts?prefix=emp&after=emp050000", 200},
		{"account", "/console/accounts/" + names[accounts/2], 200},
		{"account-asof", "/console/accounts/" + names[accounts/2] + "?asOf=" + strconv.Itoa(events/2), 200},
		{"account-hot", "/console/accounts/" + hot, 20},
		{"log", "/console/log", 200},
		{"log-middle", "/console/log?before=" + mid, 200},
		{"projections", "/console/projections", 200},
		{"verify", "/console/verify", 200},
	}
	hc := srv.Client()
	for b.Loop() {
		for _, p := range pages {
			times := make([]time.Duration, 0, p.n)
			var size int64
			for range p.n + 2 {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+p.path, nil)
				req.AddCookie(&http.Cookie{Name: "ledger_console", Value: token})
				start := time.Now()
				res, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
				elapsed := time.Since(start)
				if res.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", p.path, res.StatusCode)
				}
				size = n
				times = append(times, elapsed)
			}
			times = times[2:] // the first two warm caches and connections
			slices.Sort(times)
			p99 := times[min(len(times)-1, len(times)*99/100)]
			b.Logf("%-16s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d requests, %d KiB) %s", p.name,
				ms(times[len(times)/2]), ms(p99), ms(times[len(times)-1]), len(times), size>>10, p.path)
			b.ReportMetric(ms(p99), p.name+"-p99-ms")
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func errorsIsInsufficient(err error) bool { return errors.Is(err, domain.ErrInsufficientFunds) }

// waitCaughtUp waits until every projection has applied every event.
func waitCaughtUp(b testing.TB, db *pgtest.Database) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Minute)
	for {
		st, err := projections.Statuses(context.Background(), db.Pool)
		if err != nil {
			b.Fatal(err)
		}
		behind := int64(0)
		for _, s := range st {
			behind += s.EventsBehind
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("projections still %d events behind", behind)
		}
		time.Sleep(time.Second)
	}
}

// appOn returns the application over db, its appends waking its reads as ledger serve wires
// them, and the signal they wake.
func appOn(db *pgtest.Database, opts ...eventstore.Option) (*app.App, *notify.Signal) {
	wake := notify.NewSignal()
	opts = append(opts, eventstore.WithAfterCommit(func(eventstore.AppendResult) { wake.Notify() }))
	return app.New(eventstore.New(db.Pool, opts...), wake, app.Config{}), wake
}

// consoleServer serves the console over a, with an auditor signed in; it returns the server
// and the auditor's session cookie.
func consoleServer(b testing.TB, a *app.App, db *pgtest.Database, wake *notify.Signal) (*httptest.Server, string) {
	b.Helper()
	ctx := context.Background()
	hash, err := auth.NewHasher(1).Hash(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := a.CreateUser(ctx, "auditor", hash, auth.RoleAuditor, app.Operator{Actor: "bench"}); err != nil {
		b.Fatal(err)
	}
	s, err := a.CreateSession(ctx, "auditor", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	con, err := console.New(console.Deps{Ledger: a, SessionTTL: time.Hour, Wake: wake,
		Projections: func(ctx context.Context) ([]projections.Status, error) { return projections.Statuses(ctx, db.Pool) }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(con.Close)
	r := chi.NewRouter()
	r.Mount(console.Prefix, con)
	srv := httptest.NewServer(r)
	b.Cleanup(srv.Close)
	return srv, s.Token
}

// BenchmarkHotAccountPage measures the page of one account of LEDGER_BENCH_ACCOUNT_EVENTS
// events (default 10,000) on the server: its whole stream read, its chain checked, its chart
// drawn and the page rendered; the time from request to the last byte, its median and 99th
// percentile over the runs.
//
//	go test -run '^$' -bench HotAccountPage -benchtime 20x ./internal/console/
func BenchmarkHotAccountPage(b *testing.B) {
	n := envInt("LEDGER_BENCH_ACCOUNT_EVENTS", 10_000)
	ctx := context.Background()
	db := pgtest.New(b, "console_hot")
	a, wake := appOn(db, eventstore.WithGroupCommit(4, 0))
	hot, _, err := a.OpenAccount(ctx, "hot", "x")
	if err != nil {
		b.Fatal(err)
	}
	peers := make([]uuid.UUID, 16)
	for i := range peers {
		if peers[i], _, err = a.OpenAccount(ctx, fmt.Sprintf("peer%02d", i), "x"); err != nil {
			b.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n-2; i += len(peers) {
				if _, err := a.Transfer(ctx, peers[w], "hot", 1); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	_ = hot
	// The projectors catch up, as they would have in a serving process.
	runner := projections.NewRunner(db.Pool, wake, slog.New(slog.DiscardHandler), projections.Config{Follow: true}, projections.Versions()...)
	runCtx, stopRunner := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(runCtx) }()
	b.Cleanup(func() { stopRunner(); <-done })
	waitCaughtUp(b, db)
	srv, token := consoleServer(b, a, db, wake)
	hc := srv.Client()
	var size int64
	var times []time.Duration
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/console/accounts/hot", nil)
		req.AddCookie(&http.Cookie{Name: "ledger_console", Value: token})
		start := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		size, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			b.Fatal(res.StatusCode, err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	b.ReportMetric(ms(times[len(times)/2]), "p50-ms")
	b.ReportMetric(ms(times[min(len(times)-1, len(times)*99/100)]), "p99-ms")
	b.ReportMetric(float64(size>>10), "KiB/page")
}
