package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// profile is a named load shape; flags override its numbers.
type profile struct {
	name     string
	about    string
	rate     float64       // requests per second (stress: the first step's)
	duration time.Duration // stress: each step's
	users    int
	hotShare float64
	// stress only: the rate is raised by step after every step that held, up to maxRate.
	step, maxRate float64
}

func (p profile) stress() bool { return p.step > 0 }

var profiles = []profile{
	{name: "smoke", about: "a short, gentle run that checks everything works", rate: 50, duration: 10 * time.Second, users: 100},
	{name: "sla", about: "the company's target: 1,000 req/s for 60 s over 10,000 employees", rate: 1000, duration: time.Minute, users: 10_000},
	{name: "stress", about: "from 500 req/s, +500 req/s (--step) every 20 s (--duration) until a step misses the SLO; reports the highest rate that held",
		rate: 500, duration: 20 * time.Second, users: 10_000, step: 500, maxRate: 20_000},
	{name: "hot", about: "the sla load with 10% of all requests made by one employee", rate: 1000, duration: time.Minute, users: 10_000, hotShare: 0.10},
}

func findProfile(name string) (profile, error) {
	var names []string
	for _, p := range profiles {
		if p.name == name {
			return p, nil
		}
		names = append(names, p.name)
	}
	return profile{}, fmt.Errorf("unknown profile %q: want one of %s", name, strings.Join(names, ", "))
}

// config is the tool's whole configuration, from flags.
type config struct {
	profile profile

	target      string // the ledger's base URL; empty: start one
	serverBin   string
	serverPID   int
	databaseURL string
	fresh       bool
	signingKey  string
	usersFile   string
	tokensFile  string
	userPrefix  string
	seedWorkers int

	items      []string
	p99        time.Duration
	maxErrRate float64
	lagEvery   int
	lagGroups  []string
	natsURL    string // empty: no JetStream lag
	conns      int
	maxFlight  int
	timeout    time.Duration
	seed       uint64
	out        string
	serverLog  string
	settleFor  time.Duration
	warmup     time.Duration
	cpuProfile string // empty: none
	wrkScript  string // empty: the tool's own generator
	wrkThreads int
}

const defaultItems = "cup,book,pen,socks,wallet"

func parseConfig(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: loadtest [flags]\n\nDrives the merch-shop workload against a ledger at a constant arrival rate and reports")
		fmt.Fprintln(stderr, "latency, errors, projection lag, server resources and the bank invariant.\n\nprofiles:")
		for _, p := range profiles {
			fmt.Fprintf(stderr, "  %-7s %s\n", p.name, p.about)
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	var c config
	profileName := fs.String("profile", "smoke", "smoke, sla, stress or hot")
	rate := fs.Float64("rate", 0, "requests per second (stress: of the first step); 0: the profile's")
	duration := fs.Duration("duration", 0, "how long to run (stress: each step); 0: the profile's")
	users := fs.Int("users", 0, "employees to spread the load over; 0: the profile's")
	step := fs.Float64("step", 0, "stress: requests per second added per step; 0: the profile's")
	maxRate := fs.Float64("max-rate", 0, "stress: stop raising the rate here; 0: the profile's")
	hot := fs.Float64("hot-share", -1, "share of all requests made by one employee; -1: the profile's")
	fs.StringVar(&c.target, "target", "", "base URL of a running ledger (e.g. http://localhost:8080); empty: start --server-bin")
	fs.StringVar(&c.serverBin, "server-bin", "bin/ledger", "the ledger binary to start when no --target is given")
	fs.IntVar(&c.serverPID, "server-pid", 0, "process id of the --target server, when it runs on this machine, for its CPU and memory")
	fs.StringVar(&c.databaseURL, "database-url", "", "the ledger's PostgreSQL database: for seeding, projection lag and the bank invariant")
	fs.BoolVar(&c.fresh, "fresh-database", false, "treat --database-url as a server: create a new database on it for this run and drop it afterwards")
	fs.StringVar(&c.signingKey, "signing-key-file", "", "with --target: the server's Ed25519 signing key (PEM), to mint the seeded employees' tokens")
	fs.StringVar(&c.usersFile, "users-file", "", "use these employees (ledger seed --out-users) instead of seeding")
	fs.StringVar(&c.tokensFile, "tokens-file", "", "their tokens (ledger seed --out-tokens)")
	fs.StringVar(&c.userPrefix, "user-prefix", "load", "seeded employees are named PREFIX00001…")
	fs.IntVar(&c.seedWorkers, "seed-workers", 16, "concurrent account openings while seeding")
	items := fs.String("items", defaultItems, "comma-separated catalog items the buy requests pick from")
	fs.DurationVar(&c.p99, "slo-p99", 50*time.Millisecond, "a phase holds when its p99 latency is at most this…")
	fs.Float64Var(&c.maxErrRate, "slo-max-errors", 0.0001, "…and at most this share of its requests failed (0.0001 = 0.01%)")
	fs.IntVar(&c.lagEvery, "lag-sample-every", 20, "measure projection lag on one in this many successful commands")
	fs.StringVar(&c.natsURL, "nats-url", "", "a NATS server with JetStream: a server this tool starts relays its events there (APP_NATS_URL), and the tool also measures, on sampled commands, the time from the 200 to the events being readable from JetStream")
	groups := fs.String("lag-groups", "", "consumer groups whose read models count for lag (default: the versions of balance, inventory and history that serve reads)")
	fs.IntVar(&c.conns, "conns", 1024, "most HTTP connections to the server")
	fs.IntVar(&c.maxFlight, "max-in-flight", 20_000, "most requests outstanding; beyond it a due request is dropped and counted as an error")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.Uint64Var(&c.seed, "seed", 0, "random seed for the request sequence; 0: a new one each run (printed)")
	fs.StringVar(&c.out, "out", "", "write the result as JSON to this file")
	fs.StringVar(&c.serverLog, "server-log", "", "where a started server's log goes; empty: a temporary file kept only if the server fails")
	fs.DurationVar(&c.warmup, "warmup", 0, "before the measured phases, run the first phase's rate this long, reported apart and not judged (a server just started checks every token and loads every account once)")
	fs.DurationVar(&c.settleFor, "settle", time.Minute, "how long to wait for read models to catch up before measuring and before the invariant")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the load generator itself, over the load phases, to this file")
	fs.StringVar(&c.wrkScript, "wrk", "", "load with wrk running this script (loadtest/wrk/mix.lua) instead of the tool's own generator, over --conns connections for --warmup and then --duration, and report requests/s, p99, errors and the server's and PostgreSQL's CPU per request")
	fs.IntVar(&c.wrkThreads, "wrk-threads", 2, "with --wrk: wrk's threads")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	p, err := findProfile(*profileName)
	if err != nil {
		return c, err
	}
	if *rate != 0 {
		p.rate = *rate
	}
	if *duration != 0 {
		p.duration = *duration
	}
	if *users != 0 {
		p.users = *users
	}
	if *hot >= 0 {
		p.hotShare = *hot
	}
	if *step != 0 {
		if !p.stress() {
			return c, fmt.Errorf("--step applies to the stress profile only")
		}
		p.step = *step
	}
	if *maxRate != 0 {
		if !p.stress() {
			return c, fmt.Errorf("--max-rate applies to the stress profile only")
		}
		p.maxRate = *maxRate
	}
	c.profile = p
	c.items = splitList(*items)
	c.lagGroups = splitList(*groups)
	return c, c.validate()
}

func (c *config) validate() error {
	var errs []error
	p := c.profile
	if p.rate <= 0 {
		errs = append(errs, fmt.Errorf("--rate must be positive, got %g", p.rate))
	}
	if p.duration <= 0 || newSchedule(p.rate, p.duration).total == 0 {
		errs = append(errs, fmt.Errorf("--duration %s at --rate %g sends no request", p.duration, p.rate))
	}
	if p.stress() && p.maxRate < p.rate {
		errs = append(errs, fmt.Errorf("--max-rate %g is below the first step's rate %g", p.maxRate, p.rate))
	}
	if err := (workload{users: p.users, hotShare: p.hotShare, items: c.items}).validate(); err != nil {
		errs = append(errs, err)
	}
	if (c.usersFile == "") != (c.tokensFile == "") {
		errs = append(errs, errors.New("--users-file and --tokens-file go together"))
	}
	if c.fresh && c.databaseURL == "" {
		errs = append(errs, errors.New("--fresh-database needs --database-url naming the PostgreSQL server"))
	}
	if c.fresh && c.target != "" {
		errs = append(errs, errors.New("--fresh-database creates the database for a server this tool starts; it cannot go with --target"))
	}
	if c.target == "" && c.databaseURL == "" {
		errs = append(errs, errors.New("starting a server needs --database-url (with --fresh-database for a throwaway database); or give --target"))
	}
	if c.target != "" && c.usersFile == "" && (c.databaseURL == "" || c.signingKey == "") {
		errs = append(errs, errors.New("with --target, employees come from --users-file/--tokens-file, or are seeded with --database-url and the server's --signing-key-file"))
	}
	if c.serverPID != 0 && c.target == "" {
		errs = append(errs, errors.New("--server-pid names the --target server; a started server is watched anyway"))
	}
	if c.warmup < 0 {
		errs = append(errs, errors.New("--warmup must not be negative"))
	}
	if c.lagEvery <= 0 {
		errs = append(errs, errors.New("--lag-sample-every must be positive"))
	}
	if c.natsURL != "" && c.databaseURL == "" {
		errs = append(errs, errors.New("--nats-url measures the JetStream lag against the stream heads: it needs --database-url"))
	}
	if c.conns <= 0 || c.maxFlight <= 0 || c.timeout <= 0 || c.seedWorkers <= 0 {
		errs = append(errs, errors.New("--conns, --max-in-flight, --timeout and --seed-workers must be positive"))
	}
	if c.wrkScript != "" && (c.target != "" || c.usersFile != "" || c.wrkThreads <= 0 || c.conns < c.wrkThreads) {
		errs = append(errs, errors.New("--wrk starts its own server and seeds it (no --target, no --users-file), with --wrk-threads > 0 and at least as many --conns"))
	}
	if c.p99 <= 0 || c.maxErrRate < 0 || c.maxErrRate >= 1 {
		errs = append(errs, errors.New("--slo-p99 must be positive and --slo-max-errors in [0, 1)"))
	}
	return errors.Join(errs...)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
