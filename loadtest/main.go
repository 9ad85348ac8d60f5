// Command loadtest drives the merch-shop workload (75% info, 15% buy of a cheap item, 10%
// sendCoin of 1..25 coins to another employee) against a ledger at a constant arrival rate:
// requests leave on a fixed timetable whether or not earlier ones have been answered, and each
// latency is measured from the time its request was due, so a slow server shows as latency
// rather than slowing the load down. It seeds the employees it needs (the same code as `ledger
// seed`), starts a ledger on a fresh database unless given a running one, and reports per
// operation the rate achieved, latency percentiles and errors, the projection lag, the
// server's, its own and the whole machine's CPU, the server's memory, and the bank invariant
// checked over the database at the end: as a table for people and as JSON for machines.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/seed"
)

// The claims the ledger's tokens carry (cmd/ledger); seeded tokens must match them, which the
// tool checks with one request before the load starts.
const (
	tokenIssuer   = "ledger"
	tokenAudience = "merch-api"
	tokenTTL      = 24 * time.Hour
)

// errInvariant fails a run whose report shows the bank invariant broken.
var errInvariant = errors.New("the bank invariant does not hold")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
		os.Exit(0)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// Result is the JSON result of a run.
type Result struct {
	Profile   string    `json:"profile"`
	Target    string    `json:"target"`
	StartedAt time.Time `json:"started_at"`
	Users     int       `json:"users"`
	HotShare  float64   `json:"hot_share,omitempty"`
	Items     []string  `json:"items"`
	Seed      uint64    `json:"seed"`
	SLO       SLO       `json:"slo"`
	SeedingS  float64   `json:"seeding_s"`
	// Warmup is the phase run before the measured ones (--warmup), not judged.
	Warmup      *Phase     `json:"warmup,omitempty"`
	Phases      []Phase    `json:"phases"`
	MaxHeldRate *float64   `json:"max_held_rate,omitempty"`
	Invariant   *Invariant `json:"invariant,omitempty"`
	Notes       []string   `json:"notes,omitempty"`
	Interrupted bool       `json:"interrupted,omitempty"`
	// Passed: every phase held (stress: the first did) and the invariant holds.
	Passed bool `json:"passed"`
}

// SLO is what a phase must meet to hold.
type SLO struct {
	P99Ms     float64 `json:"p99_ms"`
	MaxErrors float64 `json:"max_error_rate"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	if cfg.wrkScript != "" {
		return runWrk(ctx, cfg, stdout, stderr)
	}
	p := cfg.profile
	res := &Result{Profile: p.name, StartedAt: time.Now().UTC(), Users: p.users, HotShare: p.hotShare, Items: cfg.items,
		Seed: cfg.seed, SLO: SLO{P99Ms: ms(cfg.p99), MaxErrors: cfg.maxErrRate}}
	if res.Seed == 0 {
		res.Seed = rand.Uint64()
	}

	dbURL, drop, err := runDatabase(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, drop()) }()

	target, serverPID, signingKey := cfg.target, cfg.serverPID, cfg.signingKey
	if target == "" {
		srv, keys, stop, serr := startOwnServer(ctx, cfg, dbURL, stderr)
		if serr != nil {
			return serr
		}
		defer func() { err = errors.Join(err, stop()) }()
		target, serverPID, signingKey = srv.base, srv.pid(), keys.signing
	}
	res.Target = target

	var pool *pgxpool.Pool
	if dbURL != "" {
		pcfg, err := pgxpool.ParseConfig(dbURL)
		if err != nil {
			return fmt.Errorf("database URL: %w", err)
		}
		pcfg.MaxConns = lagPoolConns
		pcfg.ConnConfig.RuntimeParams["application_name"] = "ledger-loadtest"
		// The lag probe's array arguments would otherwise have it planned on every look.
		pcfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
		if pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
			return fmt.Errorf("database pool: %w", err)
		}
		defer pool.Close()
	} else {
		res.Notes = append(res.Notes, "no --database-url: projection lag and the bank invariant were not measured")
	}
	if serverPID == 0 {
		res.Notes = append(res.Notes, "the server is not local (no --server-pid): its CPU and memory were not measured")
	}

	names, tokens, err := employees(ctx, cfg, dbURL, signingKey, res, stderr)
	if err != nil {
		return err
	}

	var accounts []uuid.UUID
	var serving readModels
	if pool != nil {
		if accounts, err = accountIDs(ctx, pool, names); err != nil {
			return err
		}
		if serving, err = servingReadModels(ctx, pool); err != nil {
			return err
		}
		if len(cfg.lagGroups) == 0 {
			cfg.lagGroups = serving.groups
		}
		behind, err := settle(ctx, pool, cfg.lagGroups, cfg.settleFor)
		if err != nil {
			return err
		}
		if behind > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("the read models were still %d (account, projection) pairs behind when the load started", behind))
		}
	}

	a, err := newAPI(target, cfg.conns, names, tokens, cfg.items)
	if err != nil {
		return err
	}
	defer a.close()
	if err := checkToken(a, target, cfg.timeout); err != nil {
		return err
	}
	r := &runner{
		api:       a,
		workload:  workload{users: len(names), hotShare: p.hotShare, items: cfg.items},
		rng:       rand.New(rand.NewPCG(res.Seed, res.Seed^0x9e3779b97f4a7c15)),
		serverPID: serverPID,
		maxFlight: cfg.maxFlight,
		timeout:   cfg.timeout,
		p99:       cfg.p99,
		maxErr:    cfg.maxErrRate,
		progress:  stderr,
	}
	if pool != nil {
		r.lag = newLagProber(&pgLagSource{pool: pool, groups: cfg.lagGroups}, cfg.lagGroups, cfg.lagEvery, accounts)
		if cfg.natsURL != "" {
			js, err := followJetStream(ctx, cfg.natsURL, pool, 30*time.Second)
			if err != nil {
				return err
			}
			r.relayLag = newLagProber(js, []string{"JetStream"}, cfg.lagEvery, accounts)
		}
	}
	fmt.Fprintf(stderr, "profile %s against %s, %d employees, seed %d\n", p.name, target, len(names), res.Seed)
	stopProfile, err := startCPUProfile(cfg.cpuProfile)
	if err != nil {
		return err
	}
	if cfg.warmup > 0 {
		fmt.Fprintln(stderr, "warm-up, not judged:")
		w := r.runPhase(ctx, 0, p.rate, cfg.warmup)
		res.Warmup = &w
		res.Interrupted = ctx.Err() != nil
	}
	for n, rate := 1, p.rate; ctx.Err() == nil; n, rate = n+1, rate+p.step {
		ph := r.runPhase(ctx, n, rate, p.duration)
		res.Phases = append(res.Phases, ph)
		if ctx.Err() != nil {
			res.Interrupted = true
			break
		}
		if !p.stress() || !ph.Held || rate+p.step > p.maxRate {
			break
		}
	}
	if err := stopProfile(); err != nil {
		return err
	}
	if cfg.cpuProfile != "" {
		fmt.Fprintf(stderr, "CPU profile of the generator written to %s\n", cfg.cpuProfile)
	}
	res.Passed = !res.Interrupted && len(res.Phases) > 0
	if p.stress() {
		held := 0.0
		for _, ph := range res.Phases {
			if !ph.Held {
				break
			}
			held = ph.TargetRate
		}
		res.MaxHeldRate = &held
		res.Passed = res.Passed && res.Phases[0].Held
	} else {
		for _, ph := range res.Phases {
			res.Passed = res.Passed && ph.Held
		}
	}

	if pool != nil && !res.Interrupted {
		fmt.Fprintln(stderr, "checking the bank invariant")
		inv, err := checkInvariant(ctx, pool, serving, cfg.lagGroups, cfg.settleFor)
		if err != nil {
			return err
		}
		res.Invariant = inv
		res.Passed = res.Passed && inv.Holds
	}

	printReport(stdout, res)
	if cfg.out != "" {
		if err := seed.WriteJSONFile(cfg.out, res); err != nil {
			return fmt.Errorf("write the result: %w", err)
		}
		fmt.Fprintf(stderr, "result written to %s\n", cfg.out)
	}
	switch {
	case res.Interrupted:
		return ctx.Err()
	case res.Invariant != nil && !res.Invariant.Holds:
		return errInvariant
	}
	return nil
}

// startCPUProfile starts a CPU profile of this process into path and returns the function
// that ends it and closes the file; with an empty path it does nothing. Only the load phases
// are profiled: seeding and the invariant check would drown what the generator costs while it
// loads the server.
func startCPUProfile(path string) (func() error, error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("CPU profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("CPU profile: %w", err)
		}
		return nil
	}, nil
}

// startOwnServer starts cfg.serverBin on dbURL with a key pair of its own in a temporary
// directory. It returns the server, its key files, and a function that stops the server and
// removes the directory (and the log, unless the server failed or cfg names it).
func startOwnServer(ctx context.Context, cfg config, dbURL string, log io.Writer) (*server, serverKeys, func() error, error) {
	dir, err := os.MkdirTemp("", "ledger-loadtest-")
	if err != nil {
		return nil, serverKeys{}, nil, err
	}
	keys := keyPaths(dir)
	if _, _, err := auth.LoadOrCreateKeys(keys.signing, keys.verification); err != nil {
		os.RemoveAll(dir)
		return nil, serverKeys{}, nil, err
	}
	logFile, keepLog := cfg.serverLog, cfg.serverLog != ""
	if logFile == "" {
		f, err := os.CreateTemp("", "ledger-loadtest-server-*.log")
		if err != nil {
			os.RemoveAll(dir)
			return nil, serverKeys{}, nil, err
		}
		logFile = f.Name()
		f.Close()
	}
	srv, err := startServer(ctx, cfg.serverBin, dbURL, cfg.natsURL, keys, logFile)
	if err != nil {
		os.RemoveAll(dir)
		return nil, serverKeys{}, nil, err
	}
	fmt.Fprintf(log, "started %s serve at %s (pid %d)\n", cfg.serverBin, srv.base, srv.pid())
	stop := func() error {
		err := srv.stop()
		if err == nil && !keepLog {
			_ = os.Remove(logFile)
		}
		os.RemoveAll(dir)
		return err
	}
	return srv, keys, stop, nil
}

// employees returns the names and tokens of the employees to load with: read from the given
// files, or seeded (those that exist already are kept) with tokens minted by the signing key.
func employees(ctx context.Context, cfg config, dbURL, signingKey string, res *Result, log io.Writer) ([]string, []string, error) {
	n := cfg.profile.users
	var users []seed.User
	var tokens []string
	if cfg.usersFile != "" {
		var err error
		if users, tokens, err = seed.ReadFiles(cfg.usersFile, cfg.tokensFile); err != nil {
			return nil, nil, err
		}
		if len(users) < n {
			return nil, nil, fmt.Errorf("%s holds %d employees and the run wants %d; pass --users %d or seed more", cfg.usersFile, len(users), n, len(users))
		}
		users, tokens = users[:n], tokens[:n]
	} else {
		priv, err := readSigningKey(signingKey)
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(log, "seeding %d employees\n", n)
		start := time.Now()
		users, tokens, err = seed.Run(ctx, seed.Options{
			DatabaseURL: dbURL, Users: n, Prefix: cfg.userPrefix, Workers: cfg.seedWorkers,
			Issuer: auth.NewIssuer(priv, tokenIssuer, tokenAudience, tokenTTL),
		})
		if err != nil {
			return nil, nil, err
		}
		res.SeedingS = round2(time.Since(start).Seconds())
		fmt.Fprintf(log, "seeded in %s\n", time.Since(start).Round(time.Millisecond))
	}
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.Username
	}
	return names, tokens, nil
}

// readSigningKey reads an Ed25519 private key from a PKCS#8 PEM file, as the ledger writes it.
func readSigningKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: want an Ed25519 key, got %T", path, k)
	}
	return priv, nil
}

// accountIDs maps the employees to their account ids (uuid.Nil for any the database does not
// know, which lag probes then skip).
func accountIDs(ctx context.Context, pool *pgxpool.Pool, names []string) ([]uuid.UUID, error) {
	rows, err := pool.Query(ctx, `SELECT username, account_id FROM users WHERE username = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("read account ids: %w", err)
	}
	defer rows.Close()
	byName := make(map[string]uuid.UUID, len(names))
	for rows.Next() {
		var n string
		var id uuid.UUID
		if err := rows.Scan(&n, &id); err != nil {
			return nil, fmt.Errorf("read account ids: %w", err)
		}
		byName[n] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read account ids: %w", err)
	}
	ids := make([]uuid.UUID, len(names))
	for i, n := range names {
		ids[i] = byName[n]
	}
	return ids, nil
}

// checkToken makes one /api/info call as the first employee, so that tokens the server does
// not accept (another signing key, other claims) stop the run before it starts.
func checkToken(a *api, base string, timeout time.Duration) error {
	status, message, err := a.do(time.Now().Add(timeout), request{op: opInfo})
	switch {
	case err != nil:
		return fmt.Errorf("first request to %s: %w", base, err)
	case status == http.StatusOK:
		return nil
	case status == http.StatusUnauthorized:
		return fmt.Errorf("the server refused a seeded employee's token (%s): the tokens must be signed with the server's key (--signing-key-file) or come from its ledger seed (--tokens-file)", message)
	default:
		return fmt.Errorf("first request to %s/api/info answered %d: %s", base, status, message)
	}
}
