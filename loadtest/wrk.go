package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ledger/ledger/internal/seed"
)

// WrkResult is the JSON result of a --wrk run: the measured run's throughput, latency and
// errors as the script counted them, and the CPU it cost.
type WrkResult struct {
	Script      string    `json:"script"`
	ServerBin   string    `json:"server_bin"`
	StartedAt   time.Time `json:"started_at"`
	Users       int       `json:"users"`
	Connections int       `json:"connections"`
	Threads     int       `json:"threads"`
	WarmupS     float64   `json:"warmup_s"`
	DurationS   float64   `json:"duration_s"`
	// LoadAverage is the machine's 1-minute load average when the measured run started: other
	// work on the machine is in the CPU numbers.
	LoadAverage float64 `json:"load_average"`
	CPUs        int     `json:"cpus"`

	Requests      int64            `json:"requests"`
	RPS           float64          `json:"rps"`
	P50Ms         float64          `json:"p50_ms"`
	P99Ms         float64          `json:"p99_ms"`
	Statuses      map[string]int64 `json:"statuses"`
	NotEnoughCoin int64            `json:"not_enough_coin"`
	Errors        int64            `json:"errors"`

	// MachineBusyS is the CPU time the whole machine spent busy during the measured run (wrk's
	// whole life, WindowS of wall time: its start and its end are in it too), WrkS wrk's own
	// and ServerS the ledger process's part of it, all in CPU seconds.
	WindowS      float64 `json:"window_s"`
	MachineBusyS float64 `json:"machine_busy_s"`
	WrkS         float64 `json:"wrk_s"`
	ServerS      float64 `json:"server_s"`
	// ServerPostgresUsPerRequest is (MachineBusyS - WrkS) / Requests: what the server and
	// PostgreSQL (and anything else running) spent per request, in microseconds.
	ServerPostgresUsPerRequest float64 `json:"server_postgres_us_per_request"`
	ServerUsPerRequest         float64 `json:"server_us_per_request"`
}

// mixResult is what the mix script's done() writes to MIX_RESULT.
type mixResult struct {
	Requests      int64            `json:"requests"`
	DurationUs    int64            `json:"duration_us"`
	Errors        int64            `json:"errors"`
	NotEnoughCoin int64            `json:"not_enough_coin"`
	P50Us         int64            `json:"p50_us"`
	P99Us         int64            `json:"p99_us"`
	Statuses      map[string]int64 `json:"statuses"`
}

// errWrkErrors fails a --wrk run in which requests failed.
var errWrkErrors = errors.New("requests failed under wrk")

// runWrk loads a ledger with wrk, an independent generator, running cfg.wrkScript (the mix
// script's interface: MIX_USERS, MIX_TOKENS, MIX_SEED, MIX_RESULT). It starts cfg.serverBin on
// a fresh database, has that binary seed the employees into files, runs wrk for the warm-up and
// then for the measured run, and reports requests/s, p99, the status codes, and the server's
// and PostgreSQL's CPU per request: the machine's busy CPU time from /proc/stat over the
// measured run, less wrk's own, over the requests.
func runWrk(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	wrkBin, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("--wrk needs wrk (Debian: apt-get install wrk): %w", err)
	}
	if _, err := os.Stat(cfg.wrkScript); err != nil {
		return fmt.Errorf("wrk script: %w", err)
	}
	res := &WrkResult{Script: cfg.wrkScript, ServerBin: cfg.serverBin, StartedAt: time.Now().UTC(),
		Users: cfg.profile.users, Connections: cfg.conns, Threads: cfg.wrkThreads,
		WarmupS: cfg.warmup.Seconds(), DurationS: cfg.profile.duration.Seconds()}

	dbURL, drop, err := runDatabase(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, drop()) }()
	srv, keys, stop, err := startOwnServer(ctx, cfg, dbURL, stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stop()) }()

	dir, err := os.MkdirTemp("", "ledger-wrk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	usersFile, tokensFile, resultFile := filepath.Join(dir, "users.json"), filepath.Join(dir, "tokens.json"), filepath.Join(dir, "result.json")
	// The binary under test seeds its own database: an older build may store events otherwise.
	fmt.Fprintf(stderr, "seeding %d employees with %s seed\n", cfg.profile.users, cfg.serverBin)
	seeder := exec.CommandContext(ctx, cfg.serverBin, "seed", "--database-url", dbURL,
		"--signing-key-file", keys.signing, "--verification-key-file", keys.verification,
		"--users", strconv.Itoa(cfg.profile.users), "--prefix", cfg.userPrefix, "--workers", strconv.Itoa(cfg.seedWorkers),
		"--out-users", usersFile, "--out-tokens", tokensFile)
	seeder.Stdout, seeder.Stderr = stderr, stderr
	if err := seeder.Run(); err != nil {
		return fmt.Errorf("%s seed: %w", cfg.serverBin, err)
	}

	wrk := func(d time.Duration, env ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, wrkBin, "--latency", "-t", strconv.Itoa(cfg.wrkThreads), "-c", strconv.Itoa(cfg.conns),
			"-d", wrkSeconds(d), "--timeout", wrkSeconds(cfg.timeout), "-s", cfg.wrkScript, srv.base)
		cmd.Env = append(os.Environ(), append([]string{"MIX_USERS=" + usersFile, "MIX_TOKENS=" + tokensFile}, env...)...)
		return cmd
	}
	if cfg.warmup > 0 {
		fmt.Fprintf(stderr, "warm-up, not measured: wrk for %s\n", cfg.warmup)
		cmd := wrk(cfg.warmup, "MIX_SEED=2")
		cmd.Stdout, cmd.Stderr = io.Discard, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("wrk warm-up: %w", err)
		}
	}

	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return err
	}
	if load, err := fs.LoadAvg(); err == nil {
		res.LoadAverage = load.Load1
	}
	fmt.Fprintf(stderr, "measured run: wrk for %s\n", cfg.profile.duration)
	cmd := wrk(cfg.profile.duration, "MIX_SEED=1", "MIX_RESULT="+resultFile)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	server := watchProc(srv.pid())
	before, err := readMachine()
	if err != nil {
		return err
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("wrk: %w", err)
	}
	after, err := readMachine()
	if err != nil {
		return err
	}
	serverUse := server.stop()
	// wrk's CPU time as the kernel accounted it when wrk exited: the same user and system
	// times /proc/<pid>/stat shows while a process runs, which is gone once it has been
	// waited for.
	wrkCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()

	b, err := os.ReadFile(resultFile)
	if err != nil {
		return fmt.Errorf("the script wrote no result (is %s the mix script?): %w", cfg.wrkScript, err)
	}
	var mix mixResult
	if err := json.Unmarshal(b, &mix); err != nil {
		return fmt.Errorf("the script's result: %w", err)
	}
	res.wrkMeasured(mix, before, after, wrkCPU, serverUse)
	printWrk(stdout, res)
	if cfg.out != "" {
		if err := seed.WriteJSONFile(cfg.out, res); err != nil {
			return fmt.Errorf("write the result: %w", err)
		}
		fmt.Fprintf(stderr, "result written to %s\n", cfg.out)
	}
	if res.Errors > 0 {
		return fmt.Errorf("%w: %d of %d", errWrkErrors, res.Errors, res.Requests)
	}
	return nil
}

// wrkMeasured fills in the measured run's numbers.
func (r *WrkResult) wrkMeasured(mix mixResult, before, after machineSample, wrkCPU time.Duration, server *ProcReport) {
	r.CPUs = after.cpus
	r.Requests, r.Errors, r.NotEnoughCoin, r.Statuses = mix.Requests, mix.Errors, mix.NotEnoughCoin, mix.Statuses
	if mix.DurationUs > 0 {
		r.RPS = round2(float64(mix.Requests) / (float64(mix.DurationUs) / 1e6))
	}
	r.P50Ms, r.P99Ms = round2(float64(mix.P50Us)/1e3), round2(float64(mix.P99Us)/1e3)
	if after.cpus > 0 {
		r.WindowS = round2((after.total - before.total) / float64(after.cpus))
	}
	r.MachineBusyS = round2(after.busy - before.busy)
	r.WrkS = round2(wrkCPU.Seconds())
	if server.Error == "" {
		r.ServerS = server.CPUSeconds
	}
	if mix.Requests > 0 {
		r.ServerPostgresUsPerRequest = round1(((after.busy - before.busy) - wrkCPU.Seconds()) / float64(mix.Requests) * 1e6)
		r.ServerUsPerRequest = round1(r.ServerS / float64(mix.Requests) * 1e6)
	}
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// wrkSeconds is d as wrk takes a duration: whole seconds, at least one.
func wrkSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))) + "s"
}

func printWrk(w io.Writer, r *WrkResult) {
	fmt.Fprintf(w, "\n== wrk %s against %s: %d employees, %d connections, %d threads, %gs after a %gs warm-up\n",
		filepath.Base(r.Script), r.ServerBin, r.Users, r.Connections, r.Threads, r.DurationS, r.WarmupS)
	fmt.Fprintf(w, "requests/s:  %.1f (%d requests)\n", r.RPS, r.Requests)
	fmt.Fprintf(w, "p99 latency: %.2f ms (p50 %.2f ms)\n", r.P99Ms, r.P50Ms)
	fmt.Fprintf(w, "errors:      %d (400 not enough coin, not an error: %d)\n", r.Errors, r.NotEnoughCoin)
	fmt.Fprintf(w, "server + PostgreSQL CPU per request: %.1f µs (machine busy %.2f CPU-s over %.2f s − wrk %.2f CPU-s, over the requests; the ledger process alone %.1f µs)\n",
		r.ServerPostgresUsPerRequest, r.MachineBusyS, r.WindowS, r.WrkS, r.ServerUsPerRequest)
	fmt.Fprintf(w, "load average at the start: %.2f on %d CPUs: other work on the machine counts in the CPU figure\n", r.LoadAverage, r.CPUs)
}
