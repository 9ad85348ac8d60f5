package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/net/netutil"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/console"
	"github.com/ledger/ledger/internal/metrics"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/internal/relay"
	"github.com/ledger/ledger/internal/standby"
	"github.com/ledger/ledger/migrations"
	"github.com/ledger/ledger/projections"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	fs := newFlagSet("serve", stderr)
	cfg.bind(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "ledger serve: invalid configuration:\n%v\n", err)
		return errUsage
	}
	level, _ := cfg.level()
	log := newLogger(stderr, level)
	svc, err := startService(ctx, cfg, log)
	if err != nil {
		return err
	}
	if svc.addr != "" {
		fmt.Fprintf(stdout, "ledger listening on http://%s\n", svc.addr)
	}
	if svc.adminAddr != "" {
		fmt.Fprintf(stdout, "ledger admin (pprof, metrics) on http://%s\n", svc.adminAddr)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-svc.failed:
		log.Error("server failed", "err", err)
		_ = svc.Close()
		return err
	}
	return svc.Close()
}

// service is a running ledger: HTTP API and projectors over one pool.
type service struct {
	cfg    serveConfig
	log    *slog.Logger
	pool   *pgxpool.Pool
	http   *http.Server
	addr   string
	failed chan error

	// admin serves pprof and /metrics apart from the API, when configured.
	admin     *http.Server
	adminAddr string

	// reads routes read queries to standbys; nil without standbys.
	reads *standby.Router
	// console is the web console, when served; closing it stops its rebuilds and verifications.
	console *console.Console

	stopBackground context.CancelFunc
	background     sync.WaitGroup
}

func startService(ctx context.Context, cfg serveConfig, log *slog.Logger) (_ *service, err error) {
	if cfg.CreateDatabase {
		if err := ensureDatabase(ctx, cfg.DatabaseURL, log); err != nil {
			return nil, err
		}
	}
	v, err := migrations.Apply(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	log.Info("database migrated", "version", v)

	pcfg, err := poolConfig(cfg.DatabaseURL, cfg)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	svc := &service{cfg: cfg, log: log, pool: pool, failed: make(chan error, 2)}
	defer func() {
		if err != nil {
			_ = svc.Close()
		}
	}()

	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	svc.stopBackground = stop
	wake := notify.NewSignal()
	notifier := notify.NewNotifier(pool, wake, log)
	svc.goBackground(func() { notifier.Run(bg) })
	// The metrics need the store as a source, and the store reports its writes to them.
	var observeWrite atomic.Pointer[func(eventstore.Write)]
	store := eventstore.New(pool, eventstore.WithAfterCommit(func(eventstore.AppendResult) {
		wake.Notify()
		notifier.Publish()
	}), eventstore.WithWriteObserver(func(w eventstore.Write) {
		if fn := observeWrite.Load(); fn != nil {
			(*fn)(w)
		}
	}), eventstore.WithGroupCommit(cfg.AppendWriters, 0))
	spacing := cfg.PollSpacing
	if spacing == 0 {
		spacing = -1 // the runner's "none"
	}
	runner := projections.NewRunner(pool, wake, log, projections.Config{Follow: true, PollSpacing: spacing}, projections.Versions()...)
	// The relay runs in the runner, under a lease, as the projectors do. NATS being away never
	// ends its Run (it retries and reports), so /api/ready never waits for NATS (ADR 12).
	var rl *relay.Relay
	switch {
	case cfg.NATSURL == "":
		log.Info("no NATS server configured (APP_NATS_URL): the events are not published")
	case !cfg.RunProjectors:
		log.Info("the relay runs with the projectors; this process runs none")
	default:
		rl = relay.New(store, pool, wake, log, cfg.relayConfig())
		runner.AddWorker(relay.Group, rl.Run)
	}
	if cfg.RunProjectors {
		svc.goBackground(func() { _ = runner.Run(bg) })
	}

	var ledger *app.App
	msrc := metrics.Sources{Store: store, Pool: pool, Versions: projections.Versions(), Log: log,
		Statuses: func(ctx context.Context) ([]projections.Status, error) { return projections.Statuses(ctx, pool) }}
	if cfg.RunProjectors {
		msrc.Projectors = runner
	}
	// The metrics observe the read router's waits, and the router is one of their sources.
	var observeWait atomic.Pointer[func(standby.Target, time.Duration)]
	if cfg.RunAPI && len(cfg.ReadReplicas) > 0 {
		var standbys []*pgxpool.Config
		for i, u := range cfg.ReadReplicas {
			sc, err := poolConfig(u, cfg)
			if err != nil {
				return nil, fmt.Errorf("read replica %d: %w", i+1, err)
			}
			standbys = append(standbys, sc)
		}
		wait := cfg.ReadReplicaWait
		if wait == 0 {
			wait = -1 // the router's "never wait"
		}
		svc.reads, err = standby.New(pool, standbys, standby.Config{Wait: wait, Log: log,
			ObserveWait: func(t standby.Target, d time.Duration) {
				if fn := observeWait.Load(); fn != nil {
					(*fn)(t, d)
				}
			}})
		if err != nil {
			return nil, err
		}
		svc.goBackground(func() { svc.reads.Run(bg) })
		msrc.Reads = svc.reads
		log.Info("reads on standbys", "standbys", len(standbys), "wait", cfg.ReadReplicaWait)
	}
	if rl != nil {
		msrc.Relay = rl
	}
	if cfg.RunAPI {
		acfg := app.Config{ReadSlots: cfg.ReadSlots, RoleCacheTTL: cfg.RoleCacheTTL}
		if svc.reads != nil {
			acfg.Reads = svc.reads
		}
		ledger = app.New(store, wake, acfg)
		msrc.App = ledger
	}
	mx := metrics.New(msrc)
	observe := mx.ObserveWrite
	observeWrite.Store(&observe)
	waits := mx.ObservePositionWait
	observeWait.Store(&waits)
	if cfg.adminListener() != "" {
		if err := svc.serveAdmin(mx); err != nil {
			return nil, err
		}
	}
	if !cfg.RunAPI {
		return svc, nil
	}
	var publicMetrics http.Handler
	if cfg.PublicMetrics {
		publicMetrics = mx.Handler()
	}

	priv, pub, err := auth.LoadOrCreateKeys(cfg.SigningKeyFile, cfg.VerificationKeyFile)
	if err != nil {
		return nil, err
	}
	authLimits, err := cfg.authLimits()
	if err != nil {
		return nil, err
	}
	svc.goBackground(func() { ledger.RunIdempotencyCleanup(bg, log) })
	api := httpapi.New(httpapi.Deps{
		Ledger:      mx.Ledger(ledger),
		Passwords:   auth.NewHasher(max(1, runtime.NumCPU()-1)),
		Issuer:      auth.NewIssuer(priv, tokenIssuer, tokenAudience, cfg.TokenTTL),
		Verifier:    auth.NewVerifier(pub, tokenIssuer, tokenAudience, 100_000),
		Roles:       ledger,
		Projections: func(ctx context.Context) ([]projections.Status, error) { return projections.Statuses(ctx, pool) },
		Ready: func(ctx context.Context) error {
			if err := pool.Ping(ctx); err != nil {
				return errors.New("database unreachable")
			}
			if cfg.RunProjectors && !runner.Running() {
				return errors.New("projectors not running")
			}
			return nil
		},
		Requests:    mx,
		Metrics:     publicMetrics,
		AuthLimiter: httpapi.NewAuthLimiter(authLimits),
		Log:         log,

		RequestTimeout: cfg.RequestTimeout,
	})
	if cfg.RunConsole {
		con, err := console.New(console.Deps{
			Ledger:      ledger,
			SignIn:      api.SignIn,
			SessionTTL:  cfg.TokenTTL,
			Projections: func(ctx context.Context) ([]projections.Status, error) { return projections.Statuses(ctx, pool) },
			Rebuild: func(ctx context.Context, name string, progress func(projections.RebuildProgress)) (projections.RebuildReport, error) {
				return projections.Rebuild(ctx, pool, name, projections.RebuildOptions{Log: log, Progress: progress})
			},
			Verify: func(ctx context.Context, progress func(done, total int64)) (*audit.Report, error) {
				return audit.Verify(ctx, store, audit.VerifyOptions{Progress: progress})
			},
			Metrics: mx.Registry(),
			Wake:    wake,
			Log:     log,
		})
		if err != nil {
			return nil, err
		}
		svc.console = con
		api.Mount(console.Prefix, con)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	svc.addr = ln.Addr().String()
	// Past the cap, connections wait in the listen queue instead of taking file descriptors
	// the database pool and the projectors need.
	ln = netutil.LimitListener(ln, cfg.MaxConnections)
	svc.http = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if svc.console != nil {
		svc.http.RegisterOnShutdown(svc.console.EndStreams)
	}
	go func() {
		if err := svc.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			svc.failed <- err
		}
	}()
	return svc, nil
}

// serveAdmin starts the admin listener: pprof and /metrics, for operators. It is a listener
// of its own so that the profiler is never reachable on the API's port.
func (s *service) serveAdmin(m *metrics.Metrics) error {
	ln, err := net.Listen("tcp", s.cfg.adminListener())
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	s.adminAddr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/metrics", m.Handler())
	s.admin = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// No write timeout: a CPU profile or an execution trace takes as long as it was asked to.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 32 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := s.admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.failed <- err
		}
	}()
	return nil
}

func (s *service) goBackground(fn func()) {
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		fn()
	}()
}

// Close stops accepting requests, finishes those in flight, closes the admin listener, stops
// the projectors after their current batch, and closes the pool.
func (s *service) Close() error {
	var errs []error
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		cancel()
	}
	if s.admin != nil {
		// Operators' requests, a profile in progress among them, need no graceful end.
		if err := s.admin.Close(); err != nil {
			errs = append(errs, fmt.Errorf("admin listener close: %w", err))
		}
	}
	if s.console != nil {
		s.console.Close()
	}
	if s.stopBackground != nil {
		s.stopBackground()
	}
	s.background.Wait()
	if s.reads != nil {
		s.reads.Close()
	}
	s.pool.Close()
	return errors.Join(errs...)
}

// poolConfig is the connection pool configuration for url, the primary or a standby.
func poolConfig(url string, cfg serveConfig) (*pgxpool.Config, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = int32(cfg.DBMaxConns)
	// The pool opens connections apart from the requests that wait for them; a server that
	// accepts the connection and then stalls must not hold a pool slot for ever.
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	// A transaction left open stalls every xid-fenced reader; never let one linger.
	pcfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "60000"
	// The process id tells operators (and the fault drills) which process holds which session;
	// the random tag tells processes apart where pids repeat (every container's may be 1), which
	// the Notifier relies on to recognise its own sessions. Short: PostgreSQL keeps 63 bytes.
	pcfg.ConnConfig.RuntimeParams["application_name"] = fmt.Sprintf("ledger serve %d %s", os.Getpid(), rand.Text()[:8])
	// Every statement of the hot path is prepared once per connection and should be planned
	// once. Left to itself, the server re-plans a statement whose array arguments make each
	// custom plan look cheaper than the generic one (a grouped info read: ~1 ms of planning
	// for ~0.15 ms of execution, every time). The projectors ask for custom plans where they
	// pay (large catch-up batches).
	pcfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	return pcfg, nil
}

// ensureDatabase creates the URL's database when it does not exist, connecting to the same
// server's postgres database to do it.
func ensureDatabase(ctx context.Context, url string, log *slog.Logger) error {
	conn, err := pgx.Connect(ctx, url)
	if err == nil {
		return conn.Close(ctx)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("connect to database: %w", err)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	name := cfg.Database
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to create database %q: %w", name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		if errors.As(err, &pe) && pe.Code == "42P04" { // created meanwhile
			return nil
		}
		return fmt.Errorf("create database %q: %w", name, err)
	}
	log.Info("database created", "database", name)
	return nil
}
